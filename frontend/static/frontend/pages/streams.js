// Live streams table: a server-rendered region, refreshed when a stream starts or stops anywhere, and when
// a poll changes the figures of a stream shown on this page.
import { refreshOn } from "../live.js";

const shown = () => new Set([...document.querySelectorAll("tr[data-stream]")].map((row) => Number(row.dataset.stream)));

refreshOn(new Set(["publish.started", "publish.stopped", "stream.started", "stream.stopped", "streams.update", "server.health"]), {
  accept: (message) => {
    if (message.type !== "streams.update") return true;
    const visible = shown();
    return (message.streams || []).some((change) => visible.has(change.stream));
  },
});
