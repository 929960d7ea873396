"""deploy/agent/tally_agent.py for real: the agent runs as a subprocess on loopback beside a real nginx-rtmp,
and real ffmpeg publishers watch what its deploys do to live sessions. No console, no database.

The agent is started with ``--nginx-prefix PREFIX/ --nginx-conf conf/nginx.conf`` (the file the harness's
master was started with) and finds the master through the config's own ``pid`` directive.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from streams.app_settings import clean_app_settings
from streams.models import Application, Server
from streams.rendering import render_origin_config
from tests.nginx import (
    NGINX,
    FfmpegFactory,
    FfmpegPublisher,
    NginxFactory,
    NginxProcess,
    ffmpeg_factory,  # noqa: F401 - fixture
    free_port,
    nginx_factory,  # noqa: F401 - fixture
    terminate,
    wait_until,
)

AGENT = Path(__file__).resolve().parents[2] / "deploy" / "agent" / "tally_agent.py"
TOKEN = "agent-token-0123456789abcdef"
HOST = "127.0.0.1"
VERIFY_TIMEOUT_S = 3  # how long the agent waits for /stat from a new worker before it rolls back
POLL_S = 15
STREAM = "agentstream"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def origin_config(rtmp_port: int, http_port: int, apps: tuple[str, ...] = ("live",)) -> str:
    """What the console deploys: render_origin_config for a loopback origin, callbacks off."""
    server = Server(
        id=1,
        name="agent-test",
        host=HOST,
        rtmp_port=rtmp_port,
        stat_url=f"http://{HOST}:{http_port}/stat",
        hook_secret="unused",
    )
    applications = [
        Application(id=i, server=server, name=name, settings=clean_app_settings({"callbacks": False}))
        for i, name in enumerate(apps, start=1)
    ]
    return render_origin_config(
        server,
        applications,
        callback_base_url="http://127.0.0.1:9",
        hls_path="/nonexistent",
        record_path="/nonexistent",
    )


def stat_pid(nginx: NginxProcess) -> int | None:
    try:
        match = re.search(rb"<pid>(\d+)</pid>", nginx.stat_xml(timeout_s=2))
    except OSError:
        return None
    return int(match.group(1)) if match else None


def stat_lists(nginx: NginxProcess, stream: str) -> bool:
    try:
        return f"<name>{stream}</name>".encode() in nginx.stat_xml(timeout_s=2)
    except OSError:
        return False


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
    except OSError:
        return ""


@dataclass
class Agent:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    ssl_context: ssl.SSLContext | None = None

    def connection(self, timeout_s: float = 30) -> http.client.HTTPConnection:
        if self.ssl_context is not None:
            return http.client.HTTPSConnection(HOST, self.port, timeout=timeout_s, context=self.ssl_context)
        return http.client.HTTPConnection(HOST, self.port, timeout=timeout_s)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = TOKEN,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """One request; the answer's status and JSON body (every answer must be JSON)."""
        sent = {**(headers or {})}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            sent["Content-Type"] = "application/json"
        conn = self.connection()
        try:
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            payload = response.read()
        finally:
            conn.close()
        assert response.getheader("Content-Type") == "application/json", (response.status, payload[:300])
        return response.status, json.loads(payload)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


AgentFactory = Callable[..., Agent]


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[AgentFactory]:
    """``start(nginx, *extra_args, ssl_context=None)`` -> a running agent for ``nginx``; all ended at teardown."""
    token_file = tmp_path / "agent.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    started: list[Agent] = []

    def start(nginx: NginxProcess, *extra_args: str, ssl_context: ssl.SSLContext | None = None) -> Agent:
        port = free_port()
        log_path = tmp_path / f"agent-{len(started) + 1}.log"
        args = [sys.executable, str(AGENT), "--listen", f"{HOST}:{port}", "--token-file", str(token_file)]
        args += ["--nginx-bin", NGINX, "--nginx-prefix", f"{nginx.prefix}/", "--nginx-conf", "conf/nginx.conf"]
        args += ["--nginx-error-log", "logs/error.log", "--stat-url", nginx.stat_url]
        args += ["--state-dir", str(tmp_path / f"agent-state-{len(started) + 1}")]
        args += ["--verify-timeout-s", str(VERIFY_TIMEOUT_S), *extra_args]
        with log_path.open("wb") as log:
            process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        agent = Agent(process, port, log_path, ssl_context)
        started.append(agent)

        def answers() -> bool:
            assert process.poll() is None, f"the agent exited with rc {process.returncode}:\n{agent.log()}"
            try:
                return agent.call("GET", "/v1/status")[0] == 200
            except (OSError, http.client.HTTPException):
                return False

        assert wait_until(answers, POLL_S), agent.log()
        return agent

    yield start
    for agent in reversed(started):
        terminate(agent.process)


@dataclass
class Origin:
    nginx: NginxProcess
    agent: Agent
    config: str  # the config nginx started with
    conf_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.conf_path = self.nginx.prefix / "conf" / "nginx.conf"

    def live(self) -> bytes:
        return self.conf_path.read_bytes()

    def render(self, apps: tuple[str, ...] = ("live",), http_port: int | None = None) -> str:
        return origin_config(self.nginx.rtmp_port, http_port or self.nginx.http_port, apps)


@pytest.fixture
def origin(nginx_factory: NginxFactory, agent_factory: AgentFactory) -> Origin:  # noqa: F811
    rtmp_port, http_port = free_port(), free_port()
    config = origin_config(rtmp_port, http_port)
    nginx = nginx_factory(config, http_port=http_port, rtmp_port=rtmp_port)
    return Origin(nginx, agent_factory(nginx), config)


class RetryingEncoder:
    """An encoder that reconnects as OBS does: whenever ffmpeg exits, start it again (after a short pause)."""

    def __init__(self, factory: FfmpegFactory, url: str) -> None:
        self.factory = factory
        self.url = url
        self.publishers: list[FfmpegPublisher] = [factory.publisher(url)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            if not self.publishers[-1].alive():
                self.publishers.append(self.factory.publisher(self.url))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def publish_and_wait(ffmpeg: FfmpegFactory, origin: Origin, app: str, stream: str = STREAM) -> FfmpegPublisher:
    publisher = ffmpeg.publisher(origin.nginx.rtmp_url(app, stream))
    assert wait_until(lambda: not publisher.alive() or stat_lists(origin.nginx, stream), POLL_S), (
        origin.nginx.error_log()
    )
    assert publisher.alive(), publisher.stderr_text()
    return publisher


# ---------------------------------------------------------------------------------------------------------


def test_status_and_config_report_the_nginx_version_and_the_live_sha(origin: Origin) -> None:
    status, body = origin.agent.call("GET", "/v1/status")
    assert status == 200, body
    printed = subprocess.run([NGINX, "-v"], capture_output=True, text=True, check=True).stderr
    assert body["nginx_version"] == printed.split(":", 1)[1].strip()
    assert re.fullmatch(r"nginx/\d+\.\d+\.\d+", body["nginx_version"])
    assert body["config_sha256"] == sha(origin.live())
    assert body["master_pid"] == origin.nginx.pid
    assert body["master_alive"] is True
    assert body["stat_pid"] == stat_pid(origin.nginx)
    assert body["worker_pids"] == [body["stat_pid"]]
    assert body["old_worker_pids"] == []
    assert body["previous_sha256"] is None

    status, body = origin.agent.call("GET", "/v1/config")
    assert status == 200, body
    assert body["config"].encode() == origin.live() == origin.config.encode()
    assert body["sha256"] == sha(origin.live())


def test_validate_answers_with_nginx_text_and_never_touches_the_live_file(origin: Origin) -> None:
    before, worker = origin.live(), stat_pid(origin.nginx)

    status, body = origin.agent.call("POST", "/v1/validate", {"config": origin.render(("live", "fresh"))})
    assert status == 200, body
    assert body["ok"] is True, body

    broken = origin.config.replace("live on;", "live on;\n            bogus_directive on;", 1)
    status, body = origin.agent.call("POST", "/v1/validate", {"config": broken})
    assert status == 200, body
    assert body["ok"] is False
    assert "[emerg]" in body["output"] and 'unknown directive "bogus_directive"' in body["output"], body

    assert origin.live() == before  # byte for byte
    assert sorted(os.listdir(origin.conf_path.parent)) == ["nginx.conf"]  # the candidates are gone
    assert stat_pid(origin.nginx) == worker  # nothing was reloaded


def test_apply_a_new_application_then_publish_to_it(origin: Origin, ffmpeg_factory: FfmpegFactory) -> None:  # noqa: F811
    old_sha, old_worker = sha(origin.live()), stat_pid(origin.nginx)
    new_config = origin.render(("fresh", "live"))

    status, body = origin.agent.call("POST", "/v1/apply", {"config": new_config, "expected_sha256": old_sha})
    assert status == 200, (body, origin.agent.log())
    assert body["ok"] is True and body["mode"] == "graceful"
    assert body["sha256"] == sha(new_config.encode()) and body["previous_sha256"] == old_sha
    assert old_worker in body["old_worker_pids"]
    assert body["new_worker_pid"] not in (None, old_worker)
    assert isinstance(body["duration_ms"], int)
    assert origin.live() == new_config.encode()
    # /stat answers from the new worker (for ~0.1 s after a reload it may still alternate with the old one)
    assert wait_until(lambda: stat_pid(origin.nginx) == body["new_worker_pid"], POLL_S)

    publish_and_wait(ffmpeg_factory, origin, "fresh")

    status, state = origin.agent.call("GET", "/v1/status")
    assert state["config_sha256"] == body["sha256"] and state["previous_sha256"] == old_sha


def test_a_broken_value_is_rejected_and_the_old_config_keeps_serving(
    origin: Origin,
    ffmpeg_factory: FfmpegFactory,  # noqa: F811
) -> None:
    before, worker = origin.live(), stat_pid(origin.nginx)
    broken = origin.render(("live", "other")).replace("chunk_size 4096;", "chunk_size lots;")

    status, body = origin.agent.call("POST", "/v1/apply", {"config": broken})
    assert status == 422, body
    assert body["ok"] is False and body["rolled_back"] is False
    assert "[emerg]" in body["output"] and '"chunk_size" directive invalid number' in body["output"], body
    assert origin.live() == before
    assert stat_pid(origin.nginx) == worker  # never reloaded

    publish_and_wait(ffmpeg_factory, origin, "live")
    assert stat_pid(origin.nginx) == worker


def test_graceful_keeps_a_live_publisher_and_a_delayed_reconnect_ends_it(
    origin: Origin,
    ffmpeg_factory: FfmpegFactory,  # noqa: F811
) -> None:
    publisher = publish_and_wait(ffmpeg_factory, origin, "live")
    old_worker = stat_pid(origin.nginx)
    assert old_worker is not None

    status, body = origin.agent.call(
        "POST", "/v1/apply", {"config": origin.render(("live", "two")), "mode": "graceful"}
    )
    assert status == 200, (body, origin.agent.log())
    assert old_worker in body["old_worker_pids"] and "reconnect" not in body

    # The session stays in the old worker, which now says it is shutting down and is not ended.
    def old_worker_listed() -> bool:
        return old_worker in origin.agent.call("GET", "/v1/status")[1]["old_worker_pids"]

    assert wait_until(old_worker_listed, POLL_S)
    assert not wait_until(lambda: not publisher.alive(), timeout_s=2), publisher.stderr_text()
    assert running(old_worker) and "is shutting down" in title(old_worker)

    # Reconnect mode with a delay: the answer lists the old worker, ended later by a background thread.
    config = origin.render(("live", "three", "two"))
    status, body = origin.agent.call(
        "POST", "/v1/apply", {"config": config, "mode": "reconnect", "reconnect_delay_s": 1}
    )
    assert status == 200, (body, origin.agent.log())
    assert body["reconnect"]["delay_s"] == 1 and body["reconnect"]["ended"] is False
    assert old_worker in body["reconnect"]["worker_pids"]
    assert body["new_worker_pid"] not in body["reconnect"]["worker_pids"]

    assert wait_until(lambda: not publisher.alive(), POLL_S), publisher.stderr_text()
    assert publisher.wait(timeout_s=5) != 0  # cut off, not a clean end
    assert wait_until(lambda: not running(old_worker), POLL_S)
    assert origin.nginx.alive() and running(body["new_worker_pid"])
    assert wait_until(lambda: "SIGTERM to old workers" in origin.agent.log(), POLL_S), origin.agent.log()


def test_reconnect_mode_ends_the_old_worker_and_a_retrying_encoder_comes_back(
    origin: Origin,
    ffmpeg_factory: FfmpegFactory,  # noqa: F811
) -> None:
    encoder = RetryingEncoder(ffmpeg_factory, origin.nginx.rtmp_url("live", STREAM))
    try:
        first = encoder.publishers[0]
        assert wait_until(lambda: stat_lists(origin.nginx, STREAM), POLL_S), first.stderr_text()
        old_worker = stat_pid(origin.nginx)
        assert old_worker is not None

        config = origin.render(("live", "next"))
        status, body = origin.agent.call(
            "POST", "/v1/apply", {"config": config, "mode": "reconnect", "reconnect_delay_s": 0}
        )
        assert status == 200, (body, origin.agent.log())
        assert body["mode"] == "reconnect"
        assert body["reconnect"] == {"delay_s": 0, "worker_pids": [old_worker], "ended": True}
        new_worker = body["new_worker_pid"]

        assert first.wait(timeout_s=POLL_S) != 0  # the publisher was cut off
        assert wait_until(lambda: not running(old_worker), POLL_S)
        assert origin.nginx.alive()  # never the master
        # The encoder reconnects, to the new worker and the new config.
        assert wait_until(
            lambda: (
                len(encoder.publishers) > 1
                and stat_lists(origin.nginx, STREAM)
                and stat_pid(origin.nginx) == new_worker
            ),
            POLL_S,
        ), encoder.publishers[-1].stderr_text()
        assert encoder.publishers[-1].alive()
    finally:
        encoder.stop()


def test_rollback_restores_the_previous_config_byte_for_byte(origin: Origin) -> None:
    original = origin.live()
    status, body = origin.agent.call("POST", "/v1/rollback")
    assert status == 409 and "no previous revision" in body["error"], body

    applied = origin.render(("live", "later")).encode()
    status, body = origin.agent.call("POST", "/v1/apply", {"config": applied.decode()})
    assert status == 200, body
    applied_worker = body["new_worker_pid"]

    status, body = origin.agent.call("POST", "/v1/rollback", {})
    assert status == 200, (body, origin.agent.log())
    assert body["ok"] is True and body["op"] == "rollback"
    assert body["sha256"] == sha(original) and body["previous_sha256"] == sha(applied)
    assert body["new_worker_pid"] not in (None, applied_worker)
    assert origin.live() == original
    assert wait_until(lambda: stat_pid(origin.nginx) == body["new_worker_pid"], POLL_S)

    # The revision rolled back from becomes the previous one: a second rollback goes forward again.
    status, body = origin.agent.call("POST", "/v1/rollback", {"mode": "graceful"})
    assert status == 200, body
    assert origin.live() == applied

    status, body = origin.agent.call("GET", "/v1/history")
    assert [entry["op"] for entry in body["history"]] == ["apply", "rollback", "rollback"]
    assert all(entry["ok"] for entry in body["history"])


def test_a_reload_that_loses_stat_is_rolled_back_and_other_deploys_wait_their_turn(origin: Origin) -> None:
    """The candidate passes nginx -t but moves /stat to another port: verification fails, the agent puts
    the old file back and reloads again. Meanwhile a second apply and a rollback get 409."""
    original = origin.live()
    moved = origin.render(("live",), http_port=free_port()).encode()
    outcome: dict[str, Any] = {}

    def slow_apply() -> None:
        outcome["answer"] = origin.agent.call("POST", "/v1/apply", {"config": moved.decode()})

    thread = threading.Thread(target=slow_apply)
    thread.start()
    try:
        assert wait_until(lambda: origin.live() == moved, POLL_S), origin.agent.log()  # mid-deploy, verifying
        status, body = origin.agent.call("POST", "/v1/apply", {"config": origin.render(("live", "x"))})
        assert (status, body["error"]) == (409, "a deploy is running"), body
        status, body = origin.agent.call("POST", "/v1/rollback")
        assert (status, body["error"]) == (409, "a deploy is running"), body
        assert origin.agent.call("GET", "/v1/status")[1]["deploy_running"] is True
    finally:
        thread.join(timeout=VERIFY_TIMEOUT_S + 60)

    status, body = outcome["answer"]
    assert status == 502, body
    assert body["ok"] is False and body["rolled_back"] is True and body["rollback_ok"] is True, body
    assert "/stat did not answer from a new worker" in body["error"], body
    assert origin.live() == original
    assert origin.nginx.alive()
    # nginx serves the old config again: /stat on the old port, from a (newer) worker of the same master.
    assert wait_until(lambda: stat_pid(origin.nginx) is not None, POLL_S)
    status, state = origin.agent.call("GET", "/v1/status")
    assert state["config_sha256"] == sha(original) and state["stat_pid"] in state["worker_pids"]
    # A failed deploy does not count as a revision: there is still nothing to roll back to.
    status, body = origin.agent.call("POST", "/v1/rollback")
    assert status == 409 and "no previous revision" in body["error"], body


def test_auth_paths_and_methods(origin: Origin) -> None:
    status, body = origin.agent.call("GET", "/v1/status", token=None)
    assert status == 401 and body["ok"] is False, body
    status, body = origin.agent.call("GET", "/v1/status", token=None, headers={"Authorization": f"Basic {TOKEN}"})
    assert status == 401, body
    status, body = origin.agent.call("GET", "/v1/status", token=TOKEN + "x")
    assert status == 403, body
    status, body = origin.agent.call("POST", "/v1/apply", {"config": "events {}"}, token="wrong-token-wrong-token")
    assert status == 403, body
    status, body = origin.agent.call("GET", "/v1/nope", token=None)
    assert status == 401, body  # no token, no map of the API

    status, body = origin.agent.call("GET", "/v1/nope")
    assert status == 404, body
    status, body = origin.agent.call("GET", "/v1/apply")
    assert status == 405, body
    status, body = origin.agent.call("DELETE", "/v1/config")
    assert status == 405, body
    assert origin.live() == origin.config.encode()


def test_hostile_input_gets_a_json_4xx_and_leaves_the_live_file_alone(origin: Origin) -> None:
    before = origin.live()
    good = origin.render(("live", "y"))
    bad_bodies: list[tuple[str, bytes]] = [
        ("/v1/apply", b"{not json"),
        ("/v1/apply", b"\xff\xfe garbage"),
        ("/v1/apply", b'["config"]'),
        ("/v1/apply", b"{}"),
        ("/v1/apply", json.dumps({"config": 42}).encode()),
        ("/v1/apply", json.dumps({"config": ""}).encode()),
        ("/v1/apply", json.dumps({"config": good, "mode": "fast"}).encode()),
        ("/v1/apply", json.dumps({"config": good, "mode": "reconnect", "reconnect_delay_s": 601}).encode()),
        ("/v1/apply", json.dumps({"config": good, "mode": "reconnect", "reconnect_delay_s": True}).encode()),
        ("/v1/apply", json.dumps({"config": good, "mode": "reconnect", "reconnect_delay_s": "5"}).encode()),
        ("/v1/apply", b'{"config": "events {}", "reconnect_delay_s": NaN}'),
        ("/v1/apply", json.dumps({"config": good, "expected_sha256": "abc"}).encode()),
        ("/v1/apply", json.dumps({"config": good, "surprise": 1}).encode()),
        ("/v1/apply", json.dumps({"config": good + "\0"}).encode()),
        ("/v1/apply", b"[" * 100000 + b"]" * 100000),
        ("/v1/validate", json.dumps({"config": ["a"]}).encode()),
        ("/v1/rollback", json.dumps({"mode": 3}).encode()),
    ]
    for path, raw in bad_bodies:
        status, body = origin.agent.call("POST", path, raw=raw)
        assert status == 400 and body["ok"] is False and body["error"], (raw[:80], status, body)

    huge = json.dumps({"config": "#" * (3 * 1024 * 1024)}).encode()
    status, body = origin.agent.call("POST", "/v1/apply", raw=huge)
    assert status == 413, body

    status, body = origin.agent.call("POST", "/v1/apply", {"config": good, "expected_sha256": "0" * 64})
    assert status == 409 and body["sha256"] == sha(before), body

    # Request lines http.server cannot parse (or HTTP/0.9) still get a status line and JSON.
    for line in (b"GARBAGE", b"GET /v1/status HTTP/1.x", b"GET /v1/status"):
        with socket.create_connection((HOST, origin.agent.port), timeout=10) as sock:
            sock.sendall(line + b"\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.") and b" 400 " in head.split(b"\r\n")[0], answer
        assert b"application/json" in head and json.loads(payload)["ok"] is False, answer

    assert origin.live() == before
    assert origin.agent.call("GET", "/v1/status")[0] == 200  # still serving
    assert "Traceback" not in origin.agent.log()


def test_tls_with_a_self_signed_certificate(
    tmp_path: Path,
    nginx_factory: NginxFactory,  # noqa: F811
    agent_factory: AgentFactory,
) -> None:
    openssl = shutil.which("openssl")
    assert openssl is not None, (
        "the openssl CLI is missing: make test installs it (deploy/scripts/install-system-deps.sh)"
    )
    cert, key = tmp_path / "agent.crt", tmp_path / "agent.key"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={HOST}"),
            *("-addext", f"subjectAltName=IP:{HOST}", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    rtmp_port, http_port = free_port(), free_port()
    config = origin_config(rtmp_port, http_port)
    nginx = nginx_factory(config, http_port=http_port, rtmp_port=rtmp_port)
    context = ssl.create_default_context(cafile=str(cert))
    agent = agent_factory(nginx, "--tls-cert", str(cert), "--tls-key", str(key), ssl_context=context)

    status, body = agent.call("GET", "/v1/config")
    assert status == 200 and body["sha256"] == sha(config.encode()), body
    status, body = agent.call("GET", "/v1/config", token="not-the-token-at-all")
    assert status == 403, body

    # Plain HTTP to the TLS port gets no HTTP answer.
    plain = http.client.HTTPConnection(HOST, agent.port, timeout=10)
    with pytest.raises((http.client.HTTPException, OSError)):
        plain.request("GET", "/v1/status", headers={"Authorization": f"Bearer {TOKEN}"})
        plain.getresponse().read()
    plain.close()
    # and the agent keeps serving TLS afterwards
    assert agent.call("GET", "/v1/status")[0] == 200
