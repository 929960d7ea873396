"""How fast the console decides nginx-rtmp's on_publish, served the production way.

Starts a throwaway PostgreSQL holding 10,000 publish keys and the console under uWSGI (production
settings and server options, no Redis), then sends on_publish callbacks exactly like nginx-rtmp does
(HTTP/1.0 form POST, Connection: Close, one connection per request):
- max throughput: as many decisions as CONCURRENCY clients can get through in MAX_SECONDS;
- latency at a fixed rate of 300 decisions/s for RATE_SECONDS, measured from each request's scheduled
  send time (so a stall counts against every request it delays, the client's own lateness included).
Every decision is a full one: server and key lookup by hash, open sessions, session insert.
Prints one JSON object last: {"max_decisions_per_s", "p50_ms_at_300", "p99_ms_at_300", ...}.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import selectors
import socket
import statistics
import time
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from _services import WEB_PROCESSES, console, console_env, manage, postgres

N_KEYS = 10_000
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
MAX_SECONDS = float(os.environ.get("BENCH_MAX_SECONDS", "10"))
RATE = 300
RATE_SECONDS = float(os.environ.get("BENCH_RATE_SECONDS", "10"))
WORKERS = int(os.environ.get("BENCH_WORKERS", str(WEB_PROCESSES)))
# The fields nginx-rtmp sends with on_publish besides clientid and name (see
# tests/fixtures/nginx_rtmp/callbacks.txt), in its order.
FIELDS_BEFORE = {"app": "live", "flashver": "FMLE/3.0 (compatible; Lavf59.27", "swfurl": "",
                 "tcurl": "rtmp://127.0.0.1:1935/live", "pageurl": "", "addr": "127.0.0.1"}  # fmt: skip


def seed(env: dict[str, str]) -> tuple[int, str, list[str]]:
    """Create a server, an application and N_KEYS keys; return (server id, hook secret, secrets)."""
    script = f"""
import hashlib, json, secrets
from streams.models import Application, Server, StreamKey
server = Server.objects.create(name="bench", host="127.0.0.1", stat_url="http://127.0.0.1:9/stat")
app = Application.objects.create(server=server, name="live")
keys = [secrets.token_urlsafe(24) for _ in range({N_KEYS})]
StreamKey.objects.bulk_create(
    [StreamKey(application=app, label=f"k{{i}}", public_name=f"stream-{{i}}", prefix=k[:6],
               secret_hash=hashlib.sha256(k.encode()).hexdigest(), max_publishers=1000)
     for i, k in enumerate(keys)], batch_size=2000)
print(json.dumps([server.pk, server.hook_secret, keys]))
"""
    server_id, hook_secret, keys = json.loads(manage(env, "shell", "-c", script).strip().splitlines()[-1])
    return server_id, hook_secret, keys


@dataclass
class Exchange:
    """One callback in flight: when it was due, the bytes still to send, the bytes received."""

    scheduled: float
    unsent: bytes
    received: bytearray = field(default_factory=bytearray)


class Client:
    """Sends on_publish the way nginx-rtmp does and records the answers.

    One thread drives every connection with non-blocking sockets and ``selectors``: the client shares
    the machine's two cores with the console it measures, and asyncio's per-connection streams and
    tasks cost about twice the CPU per request.
    """

    def __init__(self, port: int, server_id: int, hook_secret: str, keys: list[str]) -> None:
        self.address = ("127.0.0.1", port)
        self.head = (
            f"POST /hooks/nginx-rtmp/{server_id}/publish?secret={quote(hook_secret)} HTTP/1.0\r\n"
            "Host: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nConnection: Close\r\n"
        )
        self.names = [quote(key, safe="") for key in keys]
        self.fields_before = urlencode(FIELDS_BEFORE)
        self.counter = 0
        self.statuses: dict[int, int] = {}
        self.selector = selectors.DefaultSelector()

    def request(self) -> bytes:
        self.counter += 1
        name = self.names[self.counter % len(self.names)]
        body = f"{self.fields_before}&clientid={self.counter}&call=publish&name={name}&type=live"
        return f"{self.head}Content-Length: {len(body)}\r\n\r\n{body}".encode()

    @property
    def in_flight(self) -> int:
        return len(self.selector.get_map())

    def send(self, scheduled: float) -> None:
        """Open a connection for one callback; the request goes out once it is connected."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        result = sock.connect_ex(self.address)
        if result not in (0, errno.EINPROGRESS):
            sock.close()
            raise ConnectionError(f"cannot reach the console: {errno.errorcode.get(result, result)}")
        self.selector.register(sock, selectors.EVENT_WRITE, Exchange(scheduled, self.request()))

    def wait(self, timeout: float | None) -> list[float]:
        """Progress every connection for up to ``timeout`` s; the scheduled times of the callbacks answered."""
        answered = []
        for key, events in self.selector.select(timeout):
            sock, exchange = key.fileobj, key.data
            assert isinstance(sock, socket.socket)
            try:
                if events & selectors.EVENT_WRITE:
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        raise ConnectionRefusedError
                    exchange.unsent = exchange.unsent[sock.send(exchange.unsent) :]
                    if not exchange.unsent:
                        self.selector.modify(sock, selectors.EVENT_READ, exchange)
                    continue
                chunk = sock.recv(65536)
                if chunk:
                    exchange.received += chunk
                    continue
                status = int(exchange.received.split(b" ", 2)[1]) if exchange.received else 0
            except (OSError, ValueError, IndexError):
                status = 0
            self.selector.unregister(sock)
            sock.close()
            self._record(status)
            answered.append(exchange.scheduled)
        return answered

    def _record(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1


def max_throughput(client: Client) -> float:
    """Decisions per second with CONCURRENCY callbacks always in flight."""
    started = time.monotonic()
    deadline = started + MAX_SECONDS
    done = 0
    while time.monotonic() < deadline:
        while client.in_flight < CONCURRENCY:
            client.send(time.monotonic())
        done += len(client.wait(None))
    while client.in_flight:
        done += len(client.wait(None))
    return done / (time.monotonic() - started)


def fixed_rate(client: Client) -> list[float]:
    """Latency (ms) of each of RATE × RATE_SECONDS callbacks, from its scheduled send time."""
    latencies: list[float] = []
    start = time.monotonic() + 0.2
    total = int(RATE * RATE_SECONDS)
    sent = 0
    while sent < total or client.in_flight:
        now = time.monotonic()
        while sent < total and start + sent / RATE <= now:
            client.send(start + sent / RATE)
            sent += 1
        timeout = max(0.0, start + sent / RATE - time.monotonic()) if sent < total else None
        for scheduled in client.wait(timeout):
            latencies.append((time.monotonic() - scheduled) * 1000)
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    with postgres() as database_url, console_env(database_url) as env:
        manage(env, "migrate", "--noinput")
        server_id, hook_secret, keys = seed(env)
        with console(env, workers=WORKERS) as port:
            warm_up = Client(port, server_id, hook_secret, keys[:100])
            fixed_rate(warm_up)
            client = Client(port, server_id, hook_secret, keys)
            client.counter = warm_up.counter  # nginx never reuses a client id while it runs
            max_rate = max_throughput(client)
            latencies = fixed_rate(client)
    assert set(client.statuses) == {302}, f"unexpected answers: {client.statuses}"
    print(f"keys in database: {N_KEYS}; web processes: {WORKERS}; clients: {CONCURRENCY}")
    print(f"max: {max_rate:.0f} decisions/s over {MAX_SECONDS:g} s")
    print(f"at {RATE}/s for {RATE_SECONDS:g} s: p50 {percentile(latencies, 0.5):.1f} ms, "
          f"p99 {percentile(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms")  # fmt: skip
    print(json.dumps({
        "max_decisions_per_s": round(max_rate),
        "p50_ms_at_300": round(percentile(latencies, 0.5), 2),
        "p99_ms_at_300": round(percentile(latencies, 0.99), 2),
        "mean_ms_at_300": round(statistics.fmean(latencies), 2),
        "keys": N_KEYS, "web_workers": WORKERS, "cpus": os.cpu_count(), "machine": platform.machine(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
