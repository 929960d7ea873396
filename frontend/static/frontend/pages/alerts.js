// Alerts: "events now" is a server-rendered region, refreshed when an event of a kind it lists arrives
// (matching the page's kind and server filters). Older pages stay still while they are read: new events
// land on the first page.
import { connectLive, refresher, start } from "../live.js";

const KIND_EVENTS = {
  health: ["server.health"],
  started: ["publish.started"],
  stopped: ["publish.stopped"],
  rejected: ["publish.rejected"],
};
const ALL_EVENTS = ["server.health", "publish.started", "publish.stopped", "publish.rejected", "stream.started", "stream.stopped"];

// The filters as the server understood them (it ignores unknown values and clamps the page number).
const kind = document.getElementById("event-kind")?.value ?? "";
const relevant = new Set(KIND_EVENTS[kind] ?? ALL_EVENTS);
const server = Number(document.getElementById("event-server")?.value) || null;
const onFirstPage = document.getElementById("alert-events")?.dataset.page === "1";

function accept(message) {
  if (!relevant.has(message.type) || !onFirstPage) return false;
  return server === null || message.server === undefined || message.server === server;
}

start();
const refresh = refresher();
connectLive({
  onMessage: (message) => {
    if (accept(message)) refresh();
  },
  onOpen: ({ reconnected }) => {
    if (reconnected && onFirstPage) refresh();
  },
});
