"""poll_many against real loopback servers: healthy and hostile stat URLs and a Wowza stand-in in one
call, slow servers that must overlap, and the concurrency cap.

The hostile server is a real HTTP server on 127.0.0.1 (one path per behaviour) plus a listening socket
that never accepts and a port nothing listens on. The registry's nginx-rtmp poller is swapped for one
with a short timeout so the slow cases stay quick; nothing else is replaced. Pure: no database
(``Server`` objects get an id and are never saved).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from monitoring.fanout import INLINE_PARSE_BYTES, PollResult, poll_many
from monitoring.pollers import registry
from monitoring.pollers.nginx_rtmp import MAX_STAT_BYTES, NginxRtmpPoller
from streams.models import Server
from tests.monitoring.test_parse_stat import BILLION_LAUGHS, NGINX_502
from tests.nginx import free_port
from tests.wowza_standin import WowzaStandin, wowza_standin, wowza_standin_factory  # noqa: F401

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nginx_rtmp"
TIMEOUT_S = 1.0
HUGE_BYTES = 100 * 1024 * 1024
Route = Callable[["_Handler"], None]


def fixture(name: str) -> bytes:
    return (FIXTURES / f"stat-{name}.xml").read_bytes()


def many_streams(count: int) -> bytes:
    """A stat document with ``count`` copies of stat-one-publisher's stream, renamed: big enough to be
    parsed off the event loop."""
    head, _, rest = fixture("one-publisher").partition(b"<stream>")
    block, _, tail = rest.partition(b"</stream>")
    streams = b"".join(
        b"<stream>" + block.replace(b"<name>stream1</name>", b"<name>cam%d</name>" % i) + b"</stream>\r\n"
        for i in range(count)
    )
    return head + streams + tail.lstrip(b"\r\n")


class LoopbackServer(ThreadingHTTPServer):
    """An HTTP server on a free loopback port; each path answers with its route. Records how many
    requests were open at once (``peak_open``) and how many body bytes each path managed to send."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # the default backlog of 5 would drop connections the tests open at once

    def __init__(self, routes: dict[str, Route]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes = routes
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.open_requests = 0
        self.peak_open = 0
        self.sent: dict[str, int] = {}

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_port}{path}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LoopbackServer

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.open_requests += 1
            self.server.peak_open = max(self.server.peak_open, self.server.open_requests)
        try:
            self.server.routes[self.path](self)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the poller hung up: what a timeout or a size cap must do
        finally:
            with self.server.lock:
                self.server.open_requests -= 1

    def send_head(self, status: int = 200, content_type: str = "text/xml", length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is None:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def wait_for_hang_up(self) -> None:
        """Block until the client closes the connection (or the server stops), sending nothing."""
        while not self.server.stopping.is_set():
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            if readable and not self.connection.recv(1024):
                return

    def log_message(self, format: str, *args: Any) -> None:
        pass


def answer(body: bytes, status: int = 200, content_type: str = "text/xml") -> Route:
    def route(handler: _Handler) -> None:
        handler.send_head(status, content_type, len(body))
        handler.wfile.write(body)

    return route


def huge(*, announce_length: bool) -> Route:
    """100 MB of stat-looking XML, written 1 MB at a time for as long as the client reads."""

    def route(handler: _Handler) -> None:
        handler.send_head(length=HUGE_BYTES if announce_length else None)
        chunk = b"<rtmp>" + b" " * (1024 * 1024 - 6)
        for _ in range(HUGE_BYTES // len(chunk)):
            handler.wfile.write(chunk)
            handler.server.sent[handler.path] = handler.server.sent.get(handler.path, 0) + len(chunk)

    return route


def trickle(handler: _Handler) -> None:
    """Announce a body, then send one byte every 50 ms: each read is quick, the whole never ends."""
    body = fixture("one-publisher")
    handler.send_head(length=len(body))
    for byte in body:
        if handler.server.stopping.wait(0.05):
            return
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()


def hold(handler: _Handler) -> None:
    """Read the request, then never answer."""
    handler.wait_for_hang_up()


@contextlib.contextmanager
def loopback_server(routes: dict[str, Route]) -> Iterator[LoopbackServer]:
    server = LoopbackServer(routes)
    thread = threading.Thread(target=server.serve_forever, name="fanout-test-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry's nginx-rtmp poller with a TIMEOUT_S request timeout instead of the default 5 s."""
    monkeypatch.setitem(registry, "nginx-rtmp", NginxRtmpPoller(timeout_s=TIMEOUT_S))


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listening socket never accepts: the TCP handshake completes, then nothing."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


def nginx(index: int, stat_url: str, **fields: Any) -> Server:
    return Server(id=index, name=f"nginx-{index}", kind="nginx-rtmp", host="127.0.0.1", stat_url=stat_url, **fields)


def wowza(index: int, standin: WowzaStandin) -> Server:
    return Server(id=index, name=f"wowza-{index}", kind="wowza", host="127.0.0.1", wowza_api_url=standin.url,
                  wowza_username=standin.username, wowza_password=standin.password,
                  wowza_auth=standin.auth)  # fmt: skip


def stream_names(result: PollResult) -> list[str]:
    assert result.snapshot.reachable, result.snapshot.error
    return [stream.name for stream in result.snapshot.streams]


# --- healthy and hostile servers in one call -----------------------------------------------------------

HEALTHY = {
    "/three": ("three-publishers-two-players", ["stream1", "stream2", "stream3"]),
    "/edge": ("edge-push", ["edgecam"]),
    "/idle": ("idle", []),
}
WRONG_FIELDS = fixture("one-publisher").replace(b"<pid>8716</pid>", b"<pid>eight</pid>")
HOSTILE = {
    "/billion-laughs": (answer(BILLION_LAUGHS), "DTD and entity declarations are not allowed"),
    "/huge": (huge(announce_length=False), f"response too large (more than {MAX_STAT_BYTES} bytes)"),
    "/huge-announced": (huge(announce_length=True), f"response too large ({HUGE_BYTES} bytes"),
    "/truncated": (answer(fixture("three-publishers-two-players")[:900]), "invalid stat XML"),
    "/json": (answer(b'{"rtmp": {"pid": "eight"}}', content_type="application/json"), "invalid stat XML"),
    "/html": (answer(NGINX_502, content_type="text/html"), "not nginx-rtmp stat XML (got HTML)"),
    "/500": (answer(b"", status=500), "stat request failed: HTTP 500 Internal Server Error"),
    "/redirect": (answer(b"", status=302), "stat request failed: HTTP 302"),
    "/hold": (hold, f"stat request failed: timed out after {TIMEOUT_S:g} s"),
    "/trickle": (trickle, f"stat request failed: timed out after {TIMEOUT_S:g} s"),
}


@pytest.mark.usefixtures("short_timeout")
def test_hostile_servers_only_spoil_their_own_snapshot(wowza_standin: WowzaStandin, silent_port: int) -> None:  # noqa: F811
    wowza_standin.add_stream("live", "cam1", "192.0.2.10", bitrate_kbps=1500)
    routes: dict[str, Route] = {path: answer(fixture(name)) for path, (name, _) in HEALTHY.items()}
    routes |= {path: route for path, (route, _) in HOSTILE.items()}
    routes["/wrong-fields"] = answer(WRONG_FIELDS)
    routes["/big"] = answer(many_streams(400))
    with loopback_server(routes) as server:
        paths = list(HEALTHY) + list(HOSTILE) + ["/wrong-fields", "/big"]
        servers = [nginx(index, server.url(path)) for index, path in enumerate(paths, start=1)]
        refused = nginx(101, f"http://127.0.0.1:{free_port()}/stat")
        silent = nginx(102, f"http://127.0.0.1:{silent_port}/stat")
        unconfigured = nginx(103, "")
        unknown_kind = Server(id=104, name="flussonic-1", kind="flussonic", host="127.0.0.1")
        servers += [refused, silent, unconfigured, unknown_kind, wowza(105, wowza_standin)]

        results = poll_many(servers)

        sent = dict(server.sent)
    assert [result.server_id for result in results] == [server.pk for server in servers]
    by_path = dict(zip(paths, results, strict=False))
    for path, (_, names) in HEALTHY.items():
        assert stream_names(by_path[path]) == names
        assert by_path[path].snapshot.server_id == by_path[path].server_id
    for path, (_, reason) in HOSTILE.items():
        snapshot = by_path[path].snapshot
        assert not snapshot.reachable and snapshot.streams == (), path
        assert reason in snapshot.error, (path, snapshot.error)
    # a wrong field only blanks itself; a big document (parsed off the event loop) is complete
    assert (by_path["/wrong-fields"].snapshot.worker_pid, stream_names(by_path["/wrong-fields"])) == (None, ["stream1"])
    assert len(many_streams(400)) > INLINE_PARSE_BYTES
    assert stream_names(by_path["/big"]) == [f"cam{i}" for i in range(400)]
    # the 100 MB bodies were cut off at the cap, not read to the end
    assert sent["/huge"] < HUGE_BYTES / 2 and sent.get("/huge-announced", 0) < HUGE_BYTES / 2
    tail = {result.server_id: result.snapshot for result in results[len(paths) :]}
    assert "cannot connect" in tail[101].error
    assert "timed out" in tail[102].error
    assert tail[103].error == "no stat URL configured"
    assert tail[104].error == "no poller for server kind 'flussonic'"
    assert stream_names(results[-1]) == ["cam1"]
    assert all(result.snapshot.server_id == result.server_id and result.duration_ms >= 0 for result in results)


def test_a_wowza_server_gives_its_streams(wowza_standin: WowzaStandin) -> None:  # noqa: F811
    wowza_standin.add_stream("live", "cam1", "192.0.2.10", bitrate_kbps=2500, viewers=3)
    wowza_standin.add_stream("live", "cam2", "192.0.2.11", instance="backup")
    (result,) = poll_many([wowza(7, wowza_standin)])
    assert result.server_id == 7 and result.snapshot.version == "Wowza/4.7.0 (build 20186)"
    streams = {(stream.app, stream.name): stream for stream in result.snapshot.streams}
    assert set(streams) == {("live", "cam1"), ("live/backup", "cam2")}
    assert streams["live", "cam1"].viewers == 3 and streams["live", "cam1"].publisher_address == "192.0.2.10"


# --- timing structure ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("short_timeout")
def test_slow_servers_are_waited_for_together() -> None:
    count = 10
    with loopback_server({"/hold": hold}) as server:
        servers = [nginx(index, server.url("/hold")) for index in range(1, count + 1)]
        started = time.monotonic()
        results = poll_many(servers)
        elapsed = time.monotonic() - started
        peak_open = server.peak_open
    assert all("timed out" in result.snapshot.error for result in results)
    assert all(result.duration_ms >= TIMEOUT_S * 1000 * 0.9 for result in results)
    assert peak_open == count  # every request was open at the same moment
    assert elapsed < count * TIMEOUT_S / 2  # about one timeout, nowhere near ten


@pytest.mark.usefixtures("short_timeout")
def test_concurrency_caps_the_polls_in_flight() -> None:
    with loopback_server({"/hold": hold}) as server:
        servers = [nginx(index, server.url("/hold")) for index in range(1, 5)]
        started = time.monotonic()
        results = poll_many(servers, concurrency=2)
        elapsed = time.monotonic() - started
    assert all("timed out" in result.snapshot.error for result in results)
    # two at a time: the second pair can only start once the first has timed out
    assert elapsed >= 2 * TIMEOUT_S * 0.9


def test_no_servers_and_unsaved_servers() -> None:
    assert poll_many([]) == []
    with pytest.raises(ValueError, match="primary key"):
        poll_many([Server(name="x", kind="nginx-rtmp", stat_url="http://127.0.0.1:9/stat")])
