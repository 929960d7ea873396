// History charts with Plotly (window.Plotly, from the plotly.min.js the plotly Python package ships and
// Tally serves itself; no CDN). A chart loads a range from a history endpoint of the REST API and then
// takes live points from the page's websocket.

export const RANGES = { "15m": 900, "1h": 3600, "24h": 86400, "7d": 604800 };

function themeColors() {
  const style = getComputedStyle(document.documentElement);
  const read = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
  return { fg: read("--fg", "#1b1f24"), muted: read("--muted", "#5b6470"), line: read("--line", "#d8dde3") };
}

/**
 * One Plotly chart of some figures of a history endpoint.
 * `traces`: [{ field: "bitrate_in_kbps", name: "in" }, …] (a field of the endpoint's points);
 * `unit`: the y axis title. `element.dataset.points` always holds the number of points shown (tests read it).
 */
export class HistoryChart {
  constructor(element, { url, traces, unit }) {
    this.element = element;
    this.url = url;
    this.traces = traces;
    this.unit = unit;
    this.range = "15m";
    this.ready = false;
  }

  async load(range = this.range) {
    this.range = range;
    const to = new Date();
    const from = new Date(to.getTime() - RANGES[range] * 1000);
    const query = new URLSearchParams({ from: from.toISOString(), to: to.toISOString() });
    const response = await fetch(`${this.url}?${query}`, { credentials: "same-origin" });
    if (!response.ok) {
      this.element.textContent = `Could not load the history (HTTP ${response.status}).`;
      return;
    }
    const { points } = await response.json();
    const colors = themeColors();
    const data = this.traces.map((trace) => ({
      x: points.map((point) => point.at),
      y: points.map((point) => point[trace.field] ?? null),
      name: trace.name,
      type: "scatter",
      mode: "lines",
      connectgaps: false,
      hovertemplate: `%{y:.1f} ${this.unit}<extra>${trace.name}</extra>`,
    }));
    const layout = {
      height: 220,
      margin: { l: 56, r: 12, t: 8, b: 32 },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: { color: colors.fg, size: 12 },
      xaxis: { type: "date", range: [from, to], gridcolor: colors.line },
      yaxis: { title: { text: this.unit }, rangemode: "tozero", gridcolor: colors.line, fixedrange: true },
      showlegend: this.traces.length > 1,
      legend: { orientation: "h", y: 1.12 },
    };
    await window.Plotly.react(this.element, data, layout, { displaylogo: false, responsive: true });
    this.ready = true;
    this.count();
  }

  /** Append one live point (`values` holds the figures by field name) and slide the window to now. */
  append(at, values) {
    if (!this.ready) return;
    const x = this.traces.map(() => [at]);
    const y = this.traces.map((trace) => [values[trace.field] ?? null]);
    window.Plotly.extendTraces(this.element, { x, y }, this.traces.map((_, index) => index));
    const to = new Date(Math.max(Date.now(), Date.parse(at)));
    window.Plotly.relayout(this.element, { "xaxis.range": [new Date(to.getTime() - RANGES[this.range] * 1000), to] });
    this.count();
  }

  count() {
    this.element.dataset.points = String(this.element.data?.[0]?.x?.length ?? 0);
  }
}

/** Wire range buttons (`button[data-range]` inside `picker`) to reload every chart in `charts`. */
export function rangePicker(picker, charts) {
  for (const button of picker.querySelectorAll("button[data-range]")) {
    button.addEventListener("click", () => {
      for (const other of picker.querySelectorAll("button[data-range]")) {
        other.setAttribute("aria-pressed", String(other === button));
      }
      for (const chart of charts) chart.load(button.dataset.range);
    });
  }
}
