"""The three configurations: embedded default (the one SQLite test), production checks, and settings errors."""

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.nginx import terminate

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def clean_env(**extra):
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "REDIS_", "TALLY_", "SECRET_"))
    }
    env.update(extra)
    return env


def manage(*args, env):
    return subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_file(path):
    """A loopback HTTP server answering every GET with the file (an nginx-rtmp /stat stand-in)."""
    body = path.read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def http(url, *, token=None, data=None):
    request = urllib.request.Request(url, data=json.dumps(data).encode() if data is not None else None)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read().decode()


def callback(port, server_id, hook_secret, name, client_id):
    """POST on_publish like nginx-rtmp (no redirect following); returns (status, Location)."""
    body = urlencode({"app": "live", "addr": "127.0.0.1", "clientid": client_id, "call": "publish", "name": name})
    connection = HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("POST", f"/hooks/nginx-rtmp/{server_id}/publish?secret={hook_secret}", body,
                       {"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status, response.getheader("Location")


def test_embedded_default_migrates_serves_login_and_answers_api(tmp_path):
    """The only SQLite test: no variables set except a scratch var dir. It also drives the publish
    callback, whose hot path has SQLite-specific statements."""
    env = clean_env(TALLY_VAR_DIR=str(tmp_path), TALLY_ADMIN_PASSWORD="smoke-test-pass", TALLY_HEARTBEAT_INTERVAL_S="1",
                    TALLY_POLL_INTERVAL_S="1")  # fmt: skip
    assert manage("migrate", "--noinput", env=env).returncode == 0
    assert (tmp_path / "tally.sqlite3").exists()
    assert "Log in as 'admin'" in manage("bootstrap_admin", env=env).stdout
    token = manage("create_api_token", "--user", "admin", "--name", "smoke", "--role", "admin", env=env).stdout.strip()
    stat_server = serve_file(ROOT / "tests" / "fixtures" / "nginx_rtmp" / "stat-one-publisher.xml")
    port = free_port()
    server = subprocess.Popen(
        [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "console.asgi:application"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = http(f"{base}/login/")
                break
            except OSError:
                assert time.monotonic() < deadline, "console did not start"
                time.sleep(0.2)
        assert status == 200 and "Log in to Tally" in body
        status, body = http(f"{base}/api/v1/servers/", token=token)
        assert status == 200 and json.loads(body)["count"] == 0
        stat_url = f"http://127.0.0.1:{stat_server.server_port}/stat"
        status, body = http(f"{base}/api/v1/servers/", token=token,
                            data={"name": "o1", "host": "127.0.0.1", "stat_url": stat_url, "poll_interval_s": 1})  # fmt: skip
        assert status == 201
        # The publish callback's SQLite statements (the rest of the suite runs them on PostgreSQL).
        server_id = json.loads(body)["id"]
        app = json.loads(
            http(f"{base}/api/v1/applications/", token=token, data={"server": server_id, "name": "live"})[1]
        )
        secret = json.loads(
            http(f"{base}/api/v1/keys/", token=token, data={"application": app["id"], "label": "Cam"})[1]
        )["secret"]
        config = http(f"{base}/api/v1/servers/{server_id}/origin-config/", token=token)[1]
        hook_secret = re.search(r"publish\?secret=([^;&\s]+)", config).group(1)
        assert callback(port, server_id, hook_secret, secret, "1") == (302, "cam")
        assert callback(port, server_id, hook_secret, secret, "1") == (302, "cam")  # repeated: same answer
        assert callback(port, server_id, hook_secret, secret, "2")[0] == 403  # one publisher per key
        assert callback(port, server_id, hook_secret, "wrong", "3")[0] == 403
        # No broker: the in-process timer runs the periodic work, polling included (its SQLite statements).
        deadline = time.monotonic() + 30
        while not (live := json.loads(http(f"{base}/api/v1/streams/?live=true", token=token)[1])["results"]):
            assert time.monotonic() < deadline, "the in-process poll did not run"
            time.sleep(0.3)
        assert [(s["name"], s["health"]) for s in live] == [("stream1", "up")]
        assert "in-process" in json.loads(http(f"{base}/healthz")[1])["background_last_beat_s"]
        while len(json.loads(http(f"{base}/api/v1/streams/{live[0]['id']}/history/", token=token)[1])["points"]) < 2:
            assert time.monotonic() < deadline, "no history"
            time.sleep(0.3)
    finally:
        terminate(server)
        stat_server.shutdown()


def production_env(**extra):
    return clean_env(
        TALLY_PRODUCTION="1",
        SECRET_KEY=secrets.token_urlsafe(50),
        DATABASE_URL="postgres://tally:pw@127.0.0.1:5432/tally",
        REDIS_URL="redis://127.0.0.1:6379/0",
        ALLOWED_HOSTS="tally.example.org",
        **extra,
    )


def test_check_deploy_is_clean_in_production(tmp_path):
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env(TALLY_VAR_DIR=str(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_requires_secret_key(tmp_path):
    env = production_env(TALLY_VAR_DIR=str(tmp_path))
    del env["SECRET_KEY"]
    result = manage("check", env=env)
    assert result.returncode != 0 and "SECRET_KEY" in result.stderr


def test_secret_key_file_is_read(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(secrets.token_urlsafe(50))
    env = production_env(TALLY_VAR_DIR=str(tmp_path), SECRET_KEY_FILE=str(key_file))
    del env["SECRET_KEY"]
    assert manage("check", "--deploy", "--fail-level", "WARNING", env=env).returncode == 0


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DEBUG", "perhaps", "DEBUG must be a boolean"),
        ("TALLY_MAX_BODY_BYTES", "lots", "TALLY_MAX_BODY_BYTES must be an integer"),
        ("DATABASE_URL", "mysql://x@y/z", "postgres"),
        ("TALLY_ENCRYPTION_KEYS", "not-a-fernet-key", "console.E001"),
    ],
)
def test_configuration_errors_are_reported_clearly(tmp_path, variable, value, message):
    result = manage("check", "--deploy", env=clean_env(TALLY_VAR_DIR=str(tmp_path), **{variable: value}))
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
