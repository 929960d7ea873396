"""Publish-control pages: live publishers and kick, key history and rotation, publish security."""

import re

import pytest

from console import audit
from streams import keys
from streams.models import PublishReject, PublishSession
from streams.ratelimit import publish_failures
from tests import factories
from tests.factories import logged_in

pytestmark = pytest.mark.django_db


def open_session(issued, client_id="1"):
    return PublishSession.objects.create(
        server=issued.key.application.server, application=issued.key.application, key=issued.key,
        app_name="live", public_name=issued.key.public_name, client_id=client_id,
        publisher_addr="203.0.113.4", encoder="OBS 30.1", secret_hash_used=issued.key.secret_hash,
    )  # fmt: skip


def test_live_publishers_and_kick_for_operators(operator, viewer):
    app = factories.make_application(factories.make_server(control_url=""))
    issued = factories.issue_key(app, "Chapel")
    session = open_session(issued)
    page = logged_in(viewer).get(f"/applications/{app.pk}/").content.decode()
    assert "203.0.113.4" in page and "OBS 30.1" in page and "Kick" not in page
    assert logged_in(viewer).post(f"/sessions/{session.pk}/kick/").status_code == 403
    client = logged_in(operator)
    assert "Kick" in client.get(f"/applications/{app.pk}/").content.decode()
    response = client.post(f"/sessions/{session.pk}/kick/", {"next": f"/applications/{app.pk}/"}, follow=True)
    assert "has no control URL" in response.content.decode()
    session.refresh_from_db()
    assert session.end_reason == "kicked"
    issued.key.refresh_from_db()
    assert issued.key.state() == "active"
    # an open redirect through "next" is refused
    other = open_session(issued, "2")
    response = client.post(f"/sessions/{other.pk}/kick/", {"next": "https://evil.example/"})
    assert response["Location"] == "/"


def test_key_page_history_rotation_and_revoke_outcome(admin):
    app = factories.make_application(factories.make_server(control_url=""))
    issued = factories.issue_key(app, "Gym")
    session = open_session(issued)
    client = logged_in(admin)
    page = client.get(f"/keys/{issued.key.pk}/").content.decode()
    assert "203.0.113.4" in page and issued.secret not in page and "Rotate" in page

    response = client.post(f"/keys/{issued.key.pk}/rotate/", {"grace_hours": "2"})
    assert response.status_code == 302
    shown = client.get(response["Location"]).content.decode()
    new_secret = re.search(r'data-testid="secret">([^<]+)<', shown).group(1)
    assert new_secret != issued.secret and "rtmp://127.0.0.1/live/" + new_secret in shown
    assert new_secret not in client.get(response["Location"]).content.decode()
    assert client.post(f"/keys/{issued.key.pk}/rotate/", {"grace_hours": "9999"}).status_code == 302  # refused
    issued.key.refresh_from_db()
    assert issued.key.prefix == new_secret[:6]

    response = client.post(f"/keys/{issued.key.pk}/revoke/", {"reason": "x"}, follow=True)
    body = response.content.decode()
    assert "Revoked" in body and "has no control URL" in body
    session.refresh_from_db()
    assert session.end_reason == "revoked"


def test_publish_security_page(admin, viewer):
    server = factories.make_server()
    PublishReject.objects.create(server=server, app_name="live", addr="198.51.100.9", reason="unknown_key")
    for _ in range(publish_failures.limit):
        publish_failures.record_failure("198.51.100.9")
    try:
        assert logged_in(viewer).get("/publish-security/").status_code == 403
        client = logged_in(admin)
        page = client.get("/publish-security/").content.decode()
        assert "198.51.100.9" in page and "unknown_key" in page and "Unblock" in page
        client.post("/publish-security/", {"addr": "198.51.100.9"})
        assert not publish_failures.is_blocked("198.51.100.9")
    finally:
        publish_failures.reset()


def test_server_config_and_hook_secret_rotation(admin, viewer):
    app = factories.make_application()
    server = app.server
    assert logged_in(viewer).get(f"/servers/{server.pk}/config/").status_code == 403
    client = logged_in(admin)
    page = client.get(f"/servers/{server.pk}/config/").content.decode()
    assert "application live" in page and f"secret={server.hook_secret}" in page
    old = server.hook_secret
    client.post(f"/servers/{server.pk}/hook-secret/")
    server.refresh_from_db()
    assert server.hook_secret != old and server.hook_secret_previous == old
    keys.revoke_key(factories.issue_key(app).key, audit.Actor.system())  # nothing live: no kicks


def test_admins_manage_users_and_roles(admin, viewer):
    from console.models import AuditEntry
    from console.roles import role_of

    assert logged_in(viewer).get("/users/").status_code == 403
    client = logged_in(admin)
    assert "viewer" in client.get("/users/").content.decode()
    response = client.post("/users/", {"username": "newop", "role": "operator", "is_active": "on",
                                       "password": "a-long-enough-pass-42"})  # fmt: skip
    assert response.status_code == 302
    from django.contrib.auth import get_user_model

    newop = get_user_model().objects.get(username="newop")
    assert role_of(newop).label == "operator" and newop.check_password("a-long-enough-pass-42")
    assert client.post(f"/users/{viewer.pk}/", {"username": "viewer", "role": "", "is_active": ""}).status_code == 302
    viewer.refresh_from_db()
    assert not viewer.is_active
    # refusals: new user without password, weak password, taking a username, demoting yourself
    assert client.post("/users/", {"username": "x", "role": "viewer"}).status_code == 400
    assert client.post("/users/", {"username": "y", "role": "viewer", "password": "123"}).status_code == 400
    assert (
        client.post("/users/", {"username": "newop", "role": "viewer", "password": "another-pass-77"}).status_code
        == 400
    )
    assert (
        client.post(f"/users/{admin.pk}/", {"username": "admin", "role": "viewer", "is_active": "on"}).status_code
        == 400
    )
    assert AuditEntry.objects.filter(object_type="auth.user").count() == 2
