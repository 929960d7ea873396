// Fleet overview: tiles, sparklines, problems and "live now" are server-rendered regions, refreshed when
// the fleet changes (each poll cycle's fleet.summary, callbacks, health transitions).
import { refreshOn } from "../live.js";

refreshOn(
  new Set(["fleet.summary", "server.health", "publish.started", "publish.stopped", "stream.started", "stream.stopped"]),
);
