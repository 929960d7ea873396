"""Benchmark: one poll cycle over 500 nginx-rtmp servers with ``monitoring.fanout.poll_many``.

A throwaway loopback HTTP server (one asyncio process, one port, a path per server) answers every stat
request with the same document: 10 streams cloned from the real capture the way bench/parse_stat.py
builds its 1,000-stream one (each stream a publisher and 1–2 players, 720p meta, ~10 KB). This process
then polls 500 unsaved ``Server`` instances (no database: the embedded default settings, never touched)
with the default ``settings.POLL_CONCURRENCY``: one warm-up cycle, then CYCLES measured ones.

Run from the repo root: ``.venv/bin/python bench/poll_fanout.py``. Last line: one JSON object,
``{"servers", "cycle_s", "cpu_s", ...}``: medians over the measured cycles; ``cpu_s`` is this process's
CPU time (all threads) for one cycle, the stand-in server's excluded. Target: cycle_s ≤ 2 on 2 cores.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from parse_stat import build_document  # noqa: E402  (bench/ is on sys.path when run as a script)

SERVERS = 500
STREAMS = 10
CYCLES = 5


class _StatProtocol(asyncio.Protocol):
    """Answers every request on a keep-alive connection with the same canned response."""

    response = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:  # GETs only: no request body
            _, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            self.transport.write(self.response)


async def serve() -> None:
    """The stat server (child process): print the port, then answer until terminated."""
    body = build_document(STREAMS)
    head = f"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Type: text/xml\r\nContent-Length: {len(body)}\r\n\r\n"
    _StatProtocol.response = head.encode() + body
    server = await asyncio.get_running_loop().create_server(_StatProtocol, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


def setup_django(var_dir: str) -> None:
    """The embedded default settings, with a throwaway var/ and key: nothing in the checkout is written."""
    for name in ("DATABASE_URL", "REDIS_URL", "TALLY_PRODUCTION"):
        os.environ.pop(name, None)
    os.environ["TALLY_VAR_DIR"] = var_dir
    os.environ["SECRET_KEY"] = secrets.token_urlsafe(32)
    os.environ["DJANGO_SETTINGS_MODULE"] = "console.settings"
    import django

    django.setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tally-bench-fanout-") as var_dir:
        measure(var_dir)


def measure(var_dir: str) -> None:
    setup_django(var_dir)
    from django.conf import settings

    from monitoring.fanout import poll_many
    from streams.models import Server

    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        servers = [
            Server(
                id=index + 1, name=f"edge-{index}", kind="nginx-rtmp", stat_url=f"http://127.0.0.1:{port}/stat/{index}"
            )
            for index in range(SERVERS)
        ]
        cycles_s, cpus_s = [], []
        for cycle in range(CYCLES + 1):
            wall, cpu = time.perf_counter(), time.process_time()
            results = poll_many(servers)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            failed = [r.snapshot.error for r in results if len(r.snapshot.streams) != STREAMS]
            assert not failed, f"{len(failed)} polls failed, e.g. {failed[0]}"
            label = "warm-up" if cycle == 0 else f"cycle {cycle}"
            slowest = max(r.duration_ms for r in results)
            print(f"{label}: {wall:.4f} s, cpu {cpu:.4f} s, slowest poll {slowest:.0f} ms")
            if cycle:
                cycles_s.append(wall)
                cpus_s.append(cpu)
    finally:
        server.terminate()
        server.wait()
    result = {
        "servers": SERVERS,
        "cycle_s": round(statistics.median(cycles_s), 3),
        "cpu_s": round(statistics.median(cpus_s), 3),
        "concurrency": settings.POLL_CONCURRENCY,
        "streams_per_server": STREAMS,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        asyncio.run(serve())
    else:
        main()
