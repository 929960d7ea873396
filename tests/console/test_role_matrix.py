"""Roles × actions: the same rules hold in pages, the API and websockets.

Expected outcome per persona: "ok", "denied" (403, or a refused websocket) or "login" (anonymous:
redirect to the login page / 401).
"""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from console.asgi import application
from tests import factories

PERSONAS = ["admin", "operator", "viewer", "outsider", "anonymous"]
READ = {"admin": "ok", "operator": "ok", "viewer": "ok", "outsider": "denied", "anonymous": "login"}
ADMIN_ONLY = {"admin": "ok", "operator": "denied", "viewer": "denied", "outsider": "denied", "anonymous": "login"}


def make_persona(name):
    if name == "anonymous":
        return None
    return factories.make_user(name, None if name == "outsider" else name)


def session_client(user):
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def outcome(status, *, page):
    if status in (200, 201, 204) or (page and status == 302):
        return "ok"
    if status == 403:
        return "denied"
    if status == 401:
        return "login"
    raise AssertionError(f"unexpected status {status}")


def page_outcome(client, method, url, data=None):
    response = client.get(url) if method == "GET" else client.post(url, data or {})
    if response.status_code == 302 and response["Location"].startswith("/login/"):
        return "login"
    return outcome(response.status_code, page=True)


def api_outcome(client, method, url, data=None):
    response = client.get(url) if method == "GET" else client.post(url, data or {}, content_type="application/json")
    if response.status_code == 403 and "credentials were not provided" in response.content.decode():
        return "login"
    return outcome(response.status_code, page=False)


# (name, kind, method, url template, body, expected per persona)
ACTIONS = [
    ("overview page", "page", "GET", "/", None, READ),
    ("server list page", "page", "GET", "/servers/", None, READ),
    ("server detail page", "page", "GET", "/servers/{server}/", None, READ),
    ("application page", "page", "GET", "/applications/{app}/", None, READ),
    ("add server form", "page", "GET", "/servers/new/", None, ADMIN_ONLY),
    ("add server", "page", "POST", "/servers/new/", {"name": "n{n}", "kind": "nginx-rtmp", "role": "origin",
     "host": "10.0.0.1", "rtmp_port": "1935", "stat_url": "http://10.0.0.1/stat", "wowza_auth": "digest"}, ADMIN_ONLY),
    ("issue key", "page", "POST", "/applications/{app}/keys/new/", {"label": "k{n}", "max_publishers": "1"}, ADMIN_ONLY),
    ("revoke key", "page", "POST", "/keys/{key}/revoke/", {"reason": "x"}, ADMIN_ONLY),
    ("delete application", "page", "GET", "/applications/{app}/delete/", None, ADMIN_ONLY),
    ("audit log page", "page", "GET", "/audit/", None, ADMIN_ONLY),
    ("tokens page", "page", "GET", "/tokens/", None, ADMIN_ONLY),
    ("api list servers", "api", "GET", "/api/v1/servers/", None, READ),
    ("api list keys", "api", "GET", "/api/v1/keys/", None, READ),
    ("api get key", "api", "GET", "/api/v1/keys/{key}/", None, READ),
    ("api list applications", "api", "GET", "/api/v1/applications/", None, READ),
    ("api create server", "api", "POST", "/api/v1/servers/", {"name": "a{n}", "host": "10.0.0.2",
     "stat_url": "http://10.0.0.2/stat"}, ADMIN_ONLY),
    ("api issue key", "api", "POST", "/api/v1/keys/", {"application": "{app}", "label": "x{n}"}, ADMIN_ONLY),
    ("api revoke key", "api", "POST", "/api/v1/keys/{key}/revoke/", {}, ADMIN_ONLY),
    ("api audit log", "api", "GET", "/api/v1/audit-log/", None, ADMIN_ONLY),
    ("api tokens", "api", "GET", "/api/v1/tokens/", None, ADMIN_ONLY),
    ("api create token", "api", "POST", "/api/v1/tokens/", {"name": "t{n}", "role_ceiling": "viewer"}, ADMIN_ONLY),
]  # fmt: skip


def fill(value, ids):
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: (int(fill(v, ids)) if v == "{app}" else fill(v, ids)) for k, v in value.items()}
    return value


@pytest.mark.django_db
@pytest.mark.parametrize("persona", PERSONAS)
def test_pages_and_api_enforce_roles(persona):
    app = factories.make_application()
    user = make_persona(persona)
    client = session_client(user)
    failures = []
    for n, (name, kind, method, url, body, expected) in enumerate(ACTIONS):
        key = factories.issue_key(app, label=f"matrix-{n}").key
        ids = {"server": app.server_id, "app": app.pk, "key": key.pk, "n": n}
        check = page_outcome if kind == "page" else api_outcome
        got = check(client, method, fill(url, ids), fill(body, ids))
        if got != expected[persona]:
            failures.append(f"{name}: expected {expected[persona]}, got {got}")
    assert not failures, failures


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["admin", "operator", "viewer", "outsider"])
def test_api_tokens_enforce_roles(persona):
    """The same matrix with bearer tokens (a token's ceiling is the owner's role here; anonymous has none)."""
    user = make_persona(persona)
    app = factories.make_application()
    client = factories.token_client(user, "admin")
    failures = []
    for n, (name, kind, method, url, body, expected) in enumerate(ACTIONS):
        if kind != "api":
            continue
        key = factories.issue_key(app, label=f"matrix-{n}").key
        ids = {"server": app.server_id, "app": app.pk, "key": key.pk, "n": n}
        response = (
            client.get(fill(url, ids))
            if method == "GET"
            else client.post(fill(url, ids), fill(body, ids), format="json")
        )
        got = outcome(response.status_code, page=False)
        if got != expected[persona]:
            failures.append(f"{name}: expected {expected[persona]}, got {got}")
    assert not failures, failures


async def ws_connect(user):
    headers = [(b"origin", b"http://127.0.0.1")]
    if user is not None:
        client = await sync_to_async(session_client)(user)
        cookie = client.cookies["sessionid"].value
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/live/", headers=headers)
    connected, code = await communicator.connect()
    return communicator, connected, code


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("persona", PERSONAS)
async def test_websocket_enforces_roles(persona):
    user = await sync_to_async(make_persona)(persona)
    communicator, connected, code = await ws_connect(user)
    expected = READ[persona]
    if expected == "ok":
        assert connected
        hello = await communicator.receive_json_from(timeout=5)
        assert hello == {"type": "hello", "role": persona}
    else:
        assert not connected and code == 4403
    await communicator.disconnect()
