// Fleet overview: tiles, sparklines, problems and "live now" are server-rendered regions, refreshed when
// the fleet changes (each poll cycle's fleet.summary, callbacks, health transitions, alerts).
import { refreshOn } from "../live.js";

refreshOn(
  new Set([
    "fleet.summary", "server.health", "publish.started", "publish.stopped", "stream.started", "stream.stopped",
    "alert.opened", "alert.closed", "alert.acknowledged",
  ]),
);
