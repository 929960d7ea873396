"""How fast the console decides nginx-rtmp's on_publish, served the production way.

Starts a throwaway PostgreSQL holding 10,000 publish keys and the console under uvicorn (production
settings, no Redis), then sends on_publish callbacks exactly like nginx-rtmp does (HTTP/1.0 form POST,
one connection per request):
- max throughput: as many decisions as CONCURRENCY clients can get through in MAX_SECONDS;
- latency at a fixed rate of 300 decisions/s for RATE_SECONDS, measured from each request's scheduled
  send time (so a stall counts against every request it delays).
Every decision is a full one: key lookup by hash, row lock, concurrency count, session insert.
Prints one JSON object last: {"max_decisions_per_s", "p50_ms_at_300", "p99_ms_at_300", ...}.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import time
from urllib.parse import urlencode

from services import console, console_env, manage, postgres

N_KEYS = 10_000
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
MAX_SECONDS = float(os.environ.get("BENCH_MAX_SECONDS", "10"))
RATE = 300
RATE_SECONDS = float(os.environ.get("BENCH_RATE_SECONDS", "10"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))


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


class Client:
    """Sends on_publish the way nginx-rtmp does and records latencies."""

    def __init__(self, port: int, server_id: int, hook_secret: str, keys: list[str]) -> None:
        self.port, self.keys = port, keys
        self.path = f"/hooks/nginx-rtmp/{server_id}/publish?secret={hook_secret}"
        self.counter = 0
        self.statuses: dict[int, int] = {}

    def body(self) -> bytes:
        self.counter += 1
        key = self.keys[self.counter % len(self.keys)]
        return urlencode({
            "app": "live", "flashver": "FMLE/3.0 (compatible; Lavf59.27", "swfurl": "",
            "tcurl": "rtmp://127.0.0.1:1935/live", "pageurl": "", "addr": "127.0.0.1",
            "clientid": str(self.counter), "call": "publish", "name": key, "type": "live",
        }).encode()  # fmt: skip

    async def decide(self) -> None:
        body = self.body()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(
            f"POST {self.path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Connection: Close\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        status_line = await reader.readline()
        await reader.read()
        writer.close()
        status = int(status_line.split()[1])
        self.statuses[status] = self.statuses.get(status, 0) + 1


async def max_throughput(client: Client) -> float:
    done = 0
    deadline = time.monotonic() + MAX_SECONDS

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await client.decide()
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return done / (time.monotonic() - started)


async def fixed_rate(client: Client) -> list[float]:
    latencies: list[float] = []
    start = time.monotonic() + 0.2
    total = int(RATE * RATE_SECONDS)

    async def one(scheduled: float) -> None:
        await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
        await client.decide()
        latencies.append((time.monotonic() - scheduled) * 1000)

    await asyncio.gather(*(one(start + i / RATE) for i in range(total)))
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    with postgres() as database_url:
        env = console_env(database_url)
        manage(env, "migrate", "--noinput")
        server_id, hook_secret, keys = seed(env)
        with console(env, workers=WORKERS) as port:
            client = Client(port, server_id, hook_secret, keys)
            asyncio.run(fixed_rate(Client(port, server_id, hook_secret, keys[:100])))  # warm-up
            max_rate = asyncio.run(max_throughput(client))
            latencies = asyncio.run(fixed_rate(client))
    assert set(client.statuses) == {302}, f"unexpected answers: {client.statuses}"
    print(f"keys in database: {N_KEYS}; web workers: {WORKERS}; clients: {CONCURRENCY}")
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
