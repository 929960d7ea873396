"""With the database unreachable, a real console process answers nginx-rtmp's callbacks without
hanging: publish is refused (fail-closed), everything else is allowed so live streams survive."""

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlencode

from tests.console.test_modes import ROOT, clean_env, free_port
from tests.nginx import terminate


def post(port, event, query, **fields):
    body = urlencode({"app": "live", "addr": "127.0.0.1", "clientid": "1", "call": event, **fields}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/hooks/nginx-rtmp/1/{event}?{query}", data=body)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_callbacks_when_the_database_is_down(tmp_path):
    dead_port = free_port()  # nothing listens there
    env = clean_env(
        TALLY_VAR_DIR=str(tmp_path), DATABASE_URL=f"postgres://tally@127.0.0.1:{dead_port}/tally", LOG_LEVEL="CRITICAL"
    )
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "console.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "console did not start"
                time.sleep(0.2)
        assert post(port, "publish", "secret=x", name="some-key") == 403  # fail-closed
        assert post(port, "publish", "secret=x&fail_open=1", name="never-seen") == 403  # unknown key
        assert post(port, "update", "secret=x", name="some-key", call="update_publish") == 200  # live streams stay
        assert post(port, "publish_done", "secret=x", name="some-key") == 200
        assert post(port, "play", "secret=x", name="public") == 200
    finally:
        terminate(server)
