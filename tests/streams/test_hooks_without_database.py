"""A real console process, served exactly as in production (tests/production.py), with the database
unreachable: it answers nginx-rtmp's callbacks without hanging (publish is refused, fail-closed;
everything else is allowed so live streams survive), and answers malformed HTTP requests too."""

import socket
import urllib.error
import urllib.request
from urllib.parse import urlencode

import pytest

from tests.console.test_modes import clean_env, free_port
from tests.production import run_web


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    dead_port = free_port()  # nothing listens there
    env = clean_env(
        TALLY_VAR_DIR=str(tmp_path_factory.mktemp("var")), DATABASE_URL=f"postgres://tally@127.0.0.1:{dead_port}/tally",
        LOG_LEVEL="CRITICAL",
    )  # fmt: skip
    with run_web(env) as port:
        yield port


def post(port, event, query, **fields):
    body = urlencode({"app": "live", "addr": "127.0.0.1", "clientid": "1", "call": event, **fields}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/hooks/nginx-rtmp/1/{event}?{query}", data=body)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def raw(port, data):
    """Send raw bytes, return what came back until the server closed ("" if it closed without a word)."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received.decode("latin-1")


def test_callbacks_when_the_database_is_down(port):
    assert post(port, "publish", "secret=x", name="some-key") == 403  # fail-closed
    assert post(port, "publish", "secret=x&fail_open=1", name="never-seen") == 403  # unknown key
    assert post(port, "update", "secret=x", name="some-key", call="update_publish") == 200  # live streams stay
    assert post(port, "publish_done", "secret=x", name="some-key") == 200
    assert post(port, "play", "secret=x", name="public") == 200


def test_malformed_requests_get_an_answer_or_a_closed_connection(port):
    assert raw(port, b"\x00\x01 garbage\r\n\r\n").startswith("HTTP/1.0 400 Bad Request")
    head = b"POST /hooks/nginx-rtmp/1/publish?secret=x HTTP/1.0\r\nHost: 127.0.0.1\r\n"
    form = b"Content-Type: application/x-www-form-urlencoded\r\n"
    # 40 KB of headers are read and answered; beyond 64 KB uWSGI drops the request without an answer
    # (deploy/systemd/tally-web.service) and goes on serving.
    big = head + b"X-Padding: " + b"a" * 40_000 + b"\r\nContent-Length: 0\r\n\r\n"
    assert raw(port, big).startswith("HTTP/1.0 403")
    assert raw(port, head + b"X-Padding: " + b"a" * 70_000 + b"\r\n\r\n") == ""
    not_a_form = head + form + b"Content-Length: 8\r\n\r\n%zz=&&=%"
    assert raw(port, not_a_form).startswith("HTTP/1.0 403")  # an odd body is just no key
    assert post(port, "publish_done", "secret=x") == 200
