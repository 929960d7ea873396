// A server's page: status, live streams, applications and polls are server-rendered regions, refreshed on
// this server's messages. The bandwidth and connection charts load a range from the history endpoint and
// take one point from each poll's `server.status` (a failed poll leaves a gap).
import { HistoryChart, rangePicker } from "../charts.js";
import { refreshOn } from "../live.js";

const page = document.getElementById("server-page");
const serverId = Number(page.dataset.server);
const url = page.dataset.historyUrl;

const charts = [
  new HistoryChart(document.getElementById("chart-bandwidth"), {
    url,
    unit: "kbps",
    traces: [
      { field: "bandwidth_in_kbps", name: "in" },
      { field: "bandwidth_out_kbps", name: "out" },
    ],
  }),
  new HistoryChart(document.getElementById("chart-connections"), {
    url,
    unit: "count",
    traces: [
      { field: "connections", name: "connections" },
      { field: "streams", name: "live streams" },
    ],
  }),
];
rangePicker(document.getElementById("chart-ranges"), charts);
for (const chart of charts) chart.load();

refreshOn(
  new Set(["server.status", "server.health", "publish.started", "publish.stopped", "stream.started", "stream.stopped", "streams.update"]),
  {
    groups: [`server.${serverId}`],
    accept: (message) => message.server === serverId,
    onMessage: (message) => {
      if (message.type !== "server.status" || message.server !== serverId) return;
      // A poll that answered lists its live streams' figures: their number is the chart's stream count.
      const streams = Array.isArray(message.streams) ? message.streams.length : null;
      for (const chart of charts) chart.append(message.at, { ...message, streams });
    },
    onReconnect: () => {
      for (const chart of charts) chart.load();
    },
  },
);
