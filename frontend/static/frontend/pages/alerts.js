// Alerts pages (the list, one alert, mutes). Their live parts are server-rendered regions, refreshed
// when an alert opens, closes or is acknowledged (on one alert's page: that alert only), and — for
// "events now" on its first page — when an event of a kind it lists arrives (matching the page's kind
// and server filters). Pending alerts and the notice backlog change without a message: a slow timer
// refreshes those. Older pages of a list stay still while they are read (their regions are not live).
//
// A region is never swapped while someone works in it (an open "Mute…", or keyboard focus inside it):
// the refresh waits until they leave it. Date-times typed into the mute forms are read in the browser's
// time zone: its name goes along in the hidden `tz` field.
import { connectLive, refresher, start } from "../live.js";

const KIND_EVENTS = {
  health: ["server.health"],
  started: ["publish.started"],
  stopped: ["publish.stopped"],
  rejected: ["publish.rejected"],
};
const ALL_EVENTS = ["server.health", "publish.started", "publish.stopped", "publish.rejected", "stream.started", "stream.stopped"];
const ALERT_EVENTS = new Set(["alert.opened", "alert.closed", "alert.acknowledged"]);
const SLOW_REFRESH_MS = 30_000;

// The filters as the server understood them (it ignores unknown values and clamps the page number).
const kind = document.getElementById("event-kind")?.value ?? "";
const relevant = new Set(KIND_EVENTS[kind] ?? ALL_EVENTS);
const server = Number(document.getElementById("event-server")?.value) || null;
const eventsLive = document.getElementById("alert-events")?.hasAttribute("data-live-region") ?? false;
const listsAlerts = document.getElementById("alert-open") !== null;
const alertId = Number(document.querySelector("[data-alert]")?.dataset.alert) || null;
const zone = Intl.DateTimeFormat().resolvedOptions().timeZone ?? "";

function accept(message) {
  if (ALERT_EVENTS.has(message.type)) {
    return alertId !== null ? message.alert === alertId : listsAlerts;
  }
  if (!eventsLive || !relevant.has(message.type)) return false;
  return server === null || message.server === undefined || message.server === server;
}

/** Is someone working inside a live region: an open "Mute…", or keyboard focus on one of its links,
 * buttons or fields (a refresh would wipe what they typed or lose their place)? */
function busy() {
  if (document.querySelector("[data-live-region] details[open]")) return true;
  const active = document.activeElement;
  return Boolean(active && active !== document.body && active.closest?.("[data-live-region]"));
}

start();

for (const name of document.querySelectorAll("[data-tz-name]")) name.textContent = zone ? ` (${zone})` : "";
document.addEventListener(
  "submit",
  (event) => {
    for (const input of event.target.querySelectorAll('input[name="tz"]')) input.value = zone;
  },
  true,
);

if (document.querySelector("[data-live-region]")) {
  const refresh = refresher();
  let waiting = false;
  const refreshSoon = () => {
    if (busy()) waiting = true;
    else refresh();
  };
  const resume = () => {
    if (waiting && !busy()) {
      waiting = false;
      refresh();
    }
  };
  // "toggle" does not bubble, but a capturing listener on the document still hears it.
  document.addEventListener("toggle", resume, true);
  document.addEventListener("focusout", () => setTimeout(resume, 0));
  setInterval(() => {
    if (!document.hidden) refreshSoon();
  }, SLOW_REFRESH_MS);
  connectLive({
    onMessage: (message) => {
      if (accept(message)) refreshSoon();
    },
    onOpen: ({ reconnected }) => {
      if (reconnected) refreshSoon();
    },
  });
}
