// A stream's page: history charts (Plotly) with one live point per poll from its server's server.status,
// and server-rendered regions (figures, sessions) refreshed when this stream changes.
import { HistoryChart, rangePicker } from "../charts.js";
import { refreshOn } from "../live.js";

const page = document.getElementById("stream-page");
const streamId = Number(page.dataset.stream);
const serverId = Number(page.dataset.server);
const url = page.dataset.historyUrl;
const charts = [
  new HistoryChart(document.getElementById("chart-bitrate"), {
    url,
    traces: [
      { field: "bitrate_in_kbps", name: "in" },
      { field: "bitrate_out_kbps", name: "out" },
    ],
    unit: "kbps",
  }),
  new HistoryChart(document.getElementById("chart-fps"), { url, traces: [{ field: "fps", name: "fps" }], unit: "fps" }),
  new HistoryChart(document.getElementById("chart-viewers"), {
    url,
    traces: [{ field: "viewers", name: "viewers" }],
    unit: "viewers",
  }),
];
for (const chart of charts) chart.load();
rangePicker(page.querySelector(".ranges"), charts);

const isThisStream = (message) =>
  message.stream === streamId ||
  (message.server === serverId && message.app === page.dataset.app && message.name === page.dataset.name);

refreshOn(new Set(["server.status", "publish.started", "publish.stopped", "play.changed", "stream.started", "stream.stopped", "stream.update"]), {
  groups: [`server.${serverId}`, `stream.${streamId}`],
  accept: (message) => {
    if (message.type === "server.status") return message.server === serverId;
    if (message.type === "play.changed") return message.server === serverId && message.name === page.dataset.name;
    return isThisStream(message);
  },
  onMessage: (message) => {
    if (message.type !== "server.status") return;
    const figures = (message.streams || []).find((entry) => entry.stream === streamId);
    if (figures) for (const chart of charts) chart.append(message.at, figures);
  },
  onReconnect: () => {
    for (const chart of charts) chart.load();
  },
});
