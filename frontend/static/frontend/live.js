// Live pages: one websocket per page, reconnect with backoff, a visible "live / reconnecting" indicator,
// and in-place refresh of server-rendered regions at most twice a second. Every page module imports this.
//
// A page marks what can change with `data-live-region` and an id; `refresher()` fetches the page's own
// URL again and swaps those elements, so the server stays the one place that renders (no second copy of
// the templates in JavaScript). Numbers that tick on their own (uptimes) and times in the user's time
// zone are handled here too.

export const MIN_INTERVAL_MS = 500; // each element updates at most twice a second

const MAX_BACKOFF_MS = 30_000;

/** Wrap `fn` so that it runs at most once per `ms`: at once when idle, else once at the end of the window. */
export function throttle(fn, ms = MIN_INTERVAL_MS) {
  let last = 0;
  let timer = null;
  return function throttled(...args) {
    const wait = last + ms - Date.now();
    if (wait <= 0 && timer === null) {
      last = Date.now();
      fn(...args);
    } else if (timer === null) {
      timer = setTimeout(() => {
        timer = null;
        last = Date.now();
        fn(...args);
      }, Math.max(wait, 0));
    }
  };
}

function indicate(state, text) {
  const indicator = document.getElementById("live-status");
  if (indicator) {
    indicator.dataset.state = state;
    indicator.textContent = text;
  }
}

/**
 * Open the page's websocket (`/ws/live/`, same origin, session cookie) and keep it open.
 * `groups`: extra groups to subscribe to (`server.<id>`, `stream.<id>`); every socket gets `fleet`.
 * `onMessage(message)`: each message from the server. `onOpen({reconnected})`: after each (re)connect,
 * when the page should catch up on what it missed.
 */
export function connectLive({ groups = [], onMessage = () => {}, onOpen = () => {} } = {}) {
  let attempt = 0;
  let connectedBefore = false;
  const open = () => {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/live/`);
    socket.addEventListener("open", () => {
      attempt = 0;
      indicate("live", "Live");
      for (const group of groups) socket.send(JSON.stringify({ type: "subscribe", group }));
      onOpen({ reconnected: connectedBefore });
      connectedBefore = true;
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message && typeof message.type === "string") onMessage(message);
    });
    socket.addEventListener("close", (event) => {
      if (event.code === 4403) {
        indicate("offline", "Signed out — reload to sign in");
        return;
      }
      const delay = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** attempt) * (0.75 + Math.random() / 4);
      attempt = Math.min(attempt + 1, 10);
      indicate("reconnecting", `Reconnecting in ${Math.ceil(delay / 1000)} s…`);
      setTimeout(open, delay);
    });
  };
  indicate("connecting", "Connecting…");
  open();
}

/**
 * A throttled function that re-renders the page's `[data-live-region]` elements from the server: it
 * fetches the current URL and swaps each region by id, keeping keyboard focus where it was.
 */
export function refresher() {
  let inFlight = false;
  let again = false;
  const refresh = async () => {
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = true;
    try {
      const response = await fetch(location.href, { headers: { "X-Tally-Live": "1" }, credentials: "same-origin" });
      if (response.redirected && new URL(response.url).pathname.startsWith("/login")) {
        indicate("offline", "Signed out — reload to sign in");
        return;
      }
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      const focused = document.activeElement?.id;
      for (const region of document.querySelectorAll("[data-live-region]")) {
        const replacement = fresh.getElementById(region.id);
        if (replacement && replacement.innerHTML !== region.innerHTML) {
          region.replaceWith(replacement);
          decorate(replacement);
        }
      }
      if (focused && document.activeElement?.id !== focused) document.getElementById(focused)?.focus();
    } catch {
      // offline: the socket's indicator says so, and the next event or reconnect refreshes again
    } finally {
      inFlight = false;
      if (again) {
        again = false;
        throttledRefresh();
      }
    }
  };
  const throttledRefresh = throttle(refresh);
  return throttledRefresh;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

/** h:mm:ss (hours may exceed 24), exactly as the server's `duration` template filter writes it. */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds) || seconds < 0) return "—";
  const s = Math.floor(seconds);
  const pad = (n) => String(n).padStart(2, "0");
  return `${Math.floor(s / 3600)}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
}

/** "850 kbps", "2.10 Mbps", exactly as the server's `bitrate` template filter writes it. */
export function formatBitrate(kbps) {
  if (kbps === null || kbps === undefined || !Number.isFinite(kbps)) return "—";
  return kbps >= 1000 ? `${(kbps / 1000).toFixed(2)} Mbps` : `${kbps.toFixed(0)} kbps`;
}

/** Show `<time datetime>` in the user's time zone, and start the uptime counters (`[data-since]`). */
export function decorate(root = document) {
  for (const time of root.querySelectorAll("time[datetime]")) {
    const at = new Date(time.getAttribute("datetime"));
    if (!Number.isNaN(at.getTime())) {
      time.textContent = timeFormat.format(at);
      time.title = at.toISOString();
    }
  }
  tickUptimes(root);
}

function tickUptimes(root = document) {
  const now = Date.now();
  for (const element of root.querySelectorAll("[data-since]")) {
    const since = Date.parse(element.dataset.since);
    if (!Number.isNaN(since)) element.textContent = formatDuration((now - since) / 1000);
  }
}

let started = false;

/** Page start-up shared by every page (base.html loads pages/base.js); runs once per page. */
export function start() {
  if (started) return;
  started = true;
  decorate();
  setInterval(() => tickUptimes(), 1000);
}

/**
 * The whole live wiring of a page whose live parts are server-rendered regions: start, open the socket
 * and refresh the regions when a message of one of `types` arrives (and `accept(message)` agrees), or
 * after a reconnect (then `onReconnect()` lets the page catch up on the rest). `onMessage` sees every
 * message first. `catchUp`: refresh on the first connect too, for a page that gets no periodic message
 * (what changed between rendering and the socket opening would otherwise stay unseen). Returns the
 * throttled refresh.
 */
export function refreshOn(types, { groups = [], accept = () => true, onMessage = () => {}, onReconnect = () => {}, catchUp = false } = {}) {
  start();
  const refresh = refresher();
  connectLive({
    groups,
    onMessage: (message) => {
      onMessage(message);
      if (types.has(message.type) && accept(message)) refresh();
    },
    onOpen: ({ reconnected }) => {
      if (reconnected) {
        refresh();
        onReconnect();
      } else if (catchUp) {
        refresh();
      }
    },
  });
  return refresh;
}
