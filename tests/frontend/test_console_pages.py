"""The Foundation flow in the console's pages: log in, create server, application and key (secret shown
once), revoke it, and find every step in the audit log."""

import re

import pytest
from django.test import Client

from console.models import AuditEntry
from console.tokens import hash_secret
from streams.models import Application, Server, StreamKey
from tests import factories

pytestmark = pytest.mark.django_db


def test_login_page_and_redirect():
    client = Client()
    response = client.get("/servers/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert client.get("/login/").status_code == 200


def test_admin_flow_in_pages(admin):
    client = Client()
    response = client.post("/login/", {"username": "admin", "password": factories.PASSWORD})
    assert response.status_code == 302

    assert "No servers yet" in client.get("/servers/").content.decode()
    response = client.post(
        "/servers/new/",
        {"name": "school-origin", "kind": "nginx-rtmp", "role": "origin", "host": "192.0.2.10", "rtmp_port": "1935",
         "enabled": "on", "stat_url": "http://192.0.2.10:8080/stat", "control_url": "http://192.0.2.10:8080/control",
         "wowza_auth": "digest", "tags_text": "school, north"},
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()
    server = Server.objects.get(name="school-origin")
    assert server.tags == ["school", "north"]

    form = client.get(f"/servers/{server.pk}/applications/new/").content.decode()
    assert "on_update_interval_s" in form  # settings prefilled with defaults
    response = client.post(
        f"/servers/{server.pk}/applications/new/",
        {"name": "live", "kind": "live", "settings_json": '{"on_update": false}'},
    )
    assert response.status_code == 302, response.content.decode()
    app = Application.objects.get(server=server, name="live")
    assert app.settings["on_update"] is False and app.settings["callbacks"] is True

    response = client.post(f"/applications/{app.pk}/keys/new/", {"label": "Gym camera", "max_publishers": "1"})
    assert response.status_code == 302
    key = StreamKey.objects.get(application=app)
    page = client.get(response["Location"]).content.decode()
    secret = re.search(r'data-testid="secret">([^<]+)<', page).group(1)
    assert hash_secret(secret) == key.secret_hash
    assert "rtmp://192.0.2.10/live" in page and f"rtmp://192.0.2.10/live/{secret}" in page
    again = client.get(response["Location"]).content.decode()
    assert secret not in again and 'data-testid="secret-gone"' in again
    listing = client.get(f"/applications/{app.pk}/").content.decode()
    assert secret not in listing and key.prefix in listing

    response = client.post(f"/keys/{key.pk}/revoke/", {"reason": "lost laptop"})
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at and key.revoke_reason == "lost laptop" and key.revoked_by == admin

    audit_page = client.get("/audit/").content.decode()
    entries = list(AuditEntry.objects.order_by("created").values_list("action", "object_type", "actor_name"))
    assert entries == [
        ("create", "streams.server", "admin"),
        ("create", "streams.application", "admin"),
        ("issue", "streams.streamkey", "admin"),
        ("revoke", "streams.streamkey", "admin"),
    ]
    for text in ("school-origin", "Gym camera", "revoke", "issue", "127.0.0.1"):
        assert text in audit_page


def test_bad_form_input_is_400_with_messages_and_nothing_saved(admin):
    client = Client()
    client.force_login(admin)
    response = client.post("/servers/new/", {"name": "bad name", "kind": "nginx-rtmp", "role": "origin",
                                             "host": "not a host", "rtmp_port": "99999", "wowza_auth": "digest"})  # fmt: skip
    assert response.status_code == 400
    body = response.content.decode()
    assert "not a valid hostname" in body and "less than or equal to 65535" in body
    server = factories.make_server()
    response = client.post(
        f"/servers/{server.pk}/applications/new/", {"name": "live", "kind": "live", "settings_json": "{oops"}
    )
    assert response.status_code == 400 and "Not valid JSON" in response.content.decode()
    response = client.post(
        f"/servers/{server.pk}/applications/new/", {"name": "live", "kind": "live", "settings_json": '{"hls": 5}'}
    )
    assert response.status_code == 400 and "settings.hls" in response.content.decode()
    assert Server.objects.count() == 1 and Application.objects.count() == 0 and AuditEntry.objects.count() == 0


def test_viewer_sees_keys_without_admin_controls(viewer):
    key = factories.issue_key().key
    client = Client()
    client.force_login(viewer)
    page = client.get(f"/applications/{key.application_id}/").content.decode()
    assert key.public_name in page and key.prefix in page
    assert "Issue key" not in page and "Revoke" not in page and "Edit" not in page
    assert "Audit log" not in client.get("/").content.decode()


def test_api_docs_are_served_without_cdn(admin):
    client = Client()
    client.force_login(admin)
    docs = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in docs
    assert not re.search(r'(src|href)="https?://', docs), "docs must not load assets from a CDN"
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in ("/api/v1/servers/", "/api/v1/applications/", "/api/v1/keys/", "/api/v1/keys/{id}/revoke/",
                 "/api/v1/audit-log/", "/api/v1/tokens/"):  # fmt: skip
        assert path in paths
