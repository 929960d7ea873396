"""The WSGI route uWSGI serves (console.wsgi): nginx-rtmp callbacks skip Django's middleware and URL
resolver, yet every answer (status, body, headers) is the one the Django view gives through the full
stack, and nothing a client sends turns into a 500."""

import io
import wsgiref.util
from urllib.parse import urlencode

import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client, override_settings

from console.wsgi import application
from streams import hotpath
from streams.models import PublishReject, PublishSession
from tests import factories
from tests.streams.test_hooks import FFMPEG_FLASHVER, _fresh_limiter  # noqa: F401  (autouse fixture)

pytestmark = pytest.mark.django_db

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def app():
    return factories.make_application(factories.make_server())


def call_wsgi(method, path, query="", body=b"", content_type=FORM, host="testserver"):
    """One request through console.wsgi.application, as a WSGI server makes it: (status, headers, body).

    Like Django's test client, keeps request_started/request_finished from closing the test's
    connection (the test runs inside a transaction).
    """
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "CONTENT_TYPE": content_type,
               "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body), "REMOTE_ADDR": "127.0.0.1",
               "HTTP_HOST": host, "SERVER_PROTOCOL": "HTTP/1.0"}  # fmt: skip
    wsgiref.util.setup_testing_defaults(environ)
    started = {}

    def start_response(status, headers, exc_info=None):
        started.update(status=int(status.split()[0]), headers=headers)

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        result = application(environ, start_response)
        content = b"".join(result)
        getattr(result, "close", lambda: None)()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return started["status"], started["headers"], content


def call_django(method, path, query="", body=b"", content_type=FORM):
    """The same request through Django's full stack (middleware, URL resolver, the view)."""
    url = f"{path}?{query}" if query else path
    client = Client()
    response = client.get(url) if method == "GET" else client.post(url, body, content_type=content_type)
    return response.status_code, list(response.items()), response.content


def publish_body(**fields):
    form = {"app": "live", "flashver": FFMPEG_FLASHVER, "swfurl": "", "tcurl": "rtmp://127.0.0.1:1935/live",
            "pageurl": "", "addr": "127.0.0.1", "clientid": "7", "call": "publish", **fields}  # fmt: skip
    return urlencode(form).encode()


def test_publish_answers_exactly_as_the_django_view(app):
    issued = factories.issue_key(app, "Gym camera", max_publishers=2)
    path, query = f"/hooks/nginx-rtmp/{app.server.pk}/publish", f"secret={app.server.hook_secret}"
    wsgi = call_wsgi("POST", path, query, publish_body(name=issued.secret, clientid="1"))
    django = call_django("POST", path, query, publish_body(name=issued.secret, clientid="2"))
    assert wsgi == django
    status, headers, _ = wsgi
    assert status == 302 and ("Location", "gym-camera") in headers and ("X-Frame-Options", "DENY") in headers
    assert sorted(PublishSession.objects.values_list("client_id", flat=True)) == ["1", "2"]


@pytest.mark.parametrize(
    ("method", "event", "query", "body", "content_type", "status"),
    [
        ("POST", "publish", "secret=wrong", None, FORM, 403),
        ("POST", "publish", "", None, FORM, 403),
        ("POST", "explode", "SECRET", None, FORM, 404),
        ("GET", "publish", "SECRET", b"", FORM, 405),
        ("POST", "publish", "SECRET", b"%%%", FORM, 403),
        ("POST", "publish", "SECRET", b"name=\xff\xfe&app=live", FORM, 403),
        ("POST", "publish", "SECRET", b"&&&==&", FORM, 403),
        ("POST", "publish", "SECRET", b"app=live&name=" + b"x" * 100_000, FORM, 403),
        ("POST", "publish", "SECRET", b"app=" + b"x" * (1024 * 1024 + 1), FORM, 400),  # over the 1 MiB cap
        ("POST", "publish", "SECRET", b"&".join(b"f%d=1" % n for n in range(1001)), FORM, 400),  # too many fields
        ("POST", "publish", "SECRET&" + "&".join(f"q{n}=1" for n in range(1001)), None, FORM, 400),
        ("POST", "publish", "SECRET", b"--x\r\nnot really multipart", "multipart/form-data; boundary=x", 403),
        ("POST", "publish", "SECRET", b"x", "multipart/form-data", 400),  # no boundary
        ("POST", "publish", "SECRET", b'{"name": "x"}', "application/json", 403),
        ("POST", "done", "SECRET", b"", FORM, 200),
    ],
)
def test_bad_requests_get_the_django_answer_and_never_a_500(app, method, event, query, body, content_type, status):
    path = f"/hooks/nginx-rtmp/{app.server.pk}/{event}"
    query = query.replace("SECRET", f"secret={app.server.hook_secret}")
    body = publish_body(name="not-a-key") if body is None else body
    wsgi = call_wsgi(method, path, query, body, content_type)
    assert wsgi[0] == status
    assert wsgi == call_django(method, path, query, body, content_type)
    assert not PublishSession.objects.exists()


def test_refusals_are_logged_as_django_logs_them(app, caplog):
    path, query = f"/hooks/nginx-rtmp/{app.server.pk}/publish", "secret=wrong"
    logged = []
    for call in (call_wsgi, call_django):
        caplog.clear()
        assert call("POST", path, query, publish_body(name="x"))[0] == 403
        logged.append([(r.name, r.levelname, r.getMessage()) for r in caplog.records])
    assert logged[0] == logged[1]
    assert ("django.request", "WARNING", f"Forbidden: {path}") in logged[0]


def test_unknown_server_and_other_paths_are_answered_like_django(app):
    for path in ("/hooks/nginx-rtmp/999999/publish", "/hooks/nginx-rtmp/x1/publish", "/hooks/nginx-rtmp/1/",
                 "/hooks/nginx-rtmp/1/Publish", "/hooks/other"):  # fmt: skip
        wsgi = call_wsgi("POST", path, f"secret={app.server.hook_secret}", publish_body(name="x"))
        assert wsgi[0] in (403, 404) and wsgi == call_django("POST", path, f"secret={app.server.hook_secret}",
                                                        publish_body(name="x"))  # fmt: skip
    assert not PublishReject.objects.exists()  # none of these reached a decision


def test_a_host_django_refuses_is_refused_the_same_way(app):
    issued = factories.issue_key(app)
    path, query = f"/hooks/nginx-rtmp/{app.server.pk}/publish", f"secret={app.server.hook_secret}"
    with override_settings(ALLOWED_HOSTS=["console.example.org"]):
        status, _, _ = call_wsgi("POST", path, query, publish_body(name=issued.secret), host="evil.example.org")
        assert status == 400 and not PublishSession.objects.exists()
        status, _, _ = call_wsgi("POST", path, query, publish_body(name=issued.secret), host="console.example.org")
        assert status == 302


def test_request_signals_are_sent_once_each(app):
    """request_finished returns the pooled database connection, as after any Django request."""
    seen = []

    def started(**kwargs):
        seen.append("started")

    def finished(**kwargs):
        seen.append("finished")

    request_started.connect(started)
    request_finished.connect(finished)
    try:
        call_wsgi("POST", f"/hooks/nginx-rtmp/{app.server.pk}/publish_done", f"secret={app.server.hook_secret}")
    finally:
        request_started.disconnect(started)
        request_finished.disconnect(finished)
    assert seen == ["started", "finished"]


def test_an_unexpected_error_is_answered_and_logged_like_django(app, monkeypatch, caplog):
    def broken(*args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(hotpath, "load_publish_context", broken)
    status, _, content = call_wsgi("POST", f"/hooks/nginx-rtmp/{app.server.pk}/publish", "secret=x",
                                   publish_body(name="x"))  # fmt: skip
    assert status == 500 and content == b'{"detail": "Server error."}'
    assert any(record.name == "django.request" and record.levelname == "ERROR" for record in caplog.records)


def test_everything_else_is_served_by_django(app):
    status, _, content = call_wsgi("GET", "/healthz")
    assert status == 200 and b'"database": "ok"' in content
    assert call_wsgi("GET", "/login/")[0] == 200
