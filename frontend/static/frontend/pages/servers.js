// Servers list: a server-rendered region, refreshed after each poll cycle (fleet.summary), on health
// transitions and when a stream starts or stops anywhere (the live stream counts).
import { refreshOn } from "../live.js";

refreshOn(
  new Set(["fleet.summary", "server.health", "publish.started", "publish.stopped", "stream.started", "stream.stopped"]),
);
