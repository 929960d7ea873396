// Live streams table: a server-rendered region, refreshed when a stream starts or stops anywhere, when a
// poll changes the figures of a stream shown on this page, and after each poll cycle while the page shows
// publishes that no poll has confirmed yet (their figures arrive with it).
import { refreshOn } from "../live.js";

const shown = () => new Set([...document.querySelectorAll("tr[data-stream]")].map((row) => Number(row.dataset.stream)));

refreshOn(new Set(["publish.started", "publish.stopped", "stream.started", "stream.stopped", "streams.update", "server.health", "fleet.summary"]), {
  accept: (message) => {
    if (message.type === "fleet.summary") return document.querySelector("tr[data-session]") !== null;
    if (message.type !== "streams.update") return true;
    const visible = shown();
    return (message.streams || []).some((change) => visible.has(change.stream));
  },
});
