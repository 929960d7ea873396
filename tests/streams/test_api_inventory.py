"""The Foundation flow through the API with a token: server → application → key (secret once) → revoke,
every step in the audit log; a viewer token gets 403 on create and revoke."""

import pytest

from console.models import AuditEntry
from console.tokens import hash_secret
from streams.models import StreamKey
from tests import factories

pytestmark = pytest.mark.django_db


def test_admin_token_full_flow_is_audited(admin):
    api = factories.token_client(admin, "admin")
    server = api.post(
        "/api/v1/servers/",
        {"name": "origin-a", "host": "10.0.0.5", "rtmp_port": 1935, "stat_url": "http://10.0.0.5:8080/stat",
         "control_url": "http://10.0.0.5:8080/control", "tags": ["school", "north"]},
        format="json",
    )  # fmt: skip
    assert server.status_code == 201, server.json()
    app = api.post("/api/v1/applications/", {"server": server.json()["id"], "name": "live"}, format="json")
    assert app.status_code == 201, app.json()
    assert app.json()["settings"]["callbacks"] is True  # defaults filled in

    issued = api.post("/api/v1/keys/", {"application": app.json()["id"], "label": "Gym camera"}, format="json")
    assert issued.status_code == 201, issued.json()
    body = issued.json()
    secret = body["secret"]
    assert body["obs_stream_key"] == secret
    assert body["obs_server_url"] == "rtmp://10.0.0.5/live"
    assert body["publish_url"] == f"rtmp://10.0.0.5/live/{secret}"
    assert body["public_name"] == "gym-camera" and body["public_name"] != secret
    assert issued["Cache-Control"] == "no-store"

    # Stored only as a hash + prefix, never shown again.
    key = StreamKey.objects.get(pk=body["id"])
    assert key.secret_hash == hash_secret(secret) and secret.startswith(key.prefix)
    again = api.get(f"/api/v1/keys/{key.pk}/").json()
    assert "secret" not in again and secret not in str(again)
    assert secret not in str(list(AuditEntry.objects.values()))

    revoked = api.post(f"/api/v1/keys/{key.pk}/revoke/", {"reason": "camera stolen"}, format="json")
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert revoked.json()["revoke_reason"] == "camera stolen"

    log = api.get("/api/v1/audit-log/?ordering=created").json()["results"]
    steps = [(e["action"], e["object_type"]) for e in log]
    assert steps[-4:] == [
        ("create", "streams.server"),
        ("create", "streams.application"),
        ("issue", "streams.streamkey"),
        ("revoke", "streams.streamkey"),
    ]
    for entry in log[-4:]:
        assert entry["actor_name"] == "admin"
        assert entry["token_name"].startswith("admin-token")
        assert entry["ip"] == "127.0.0.1"
    assert log[-1]["before"]["revoked_at"] is None and log[-1]["after"]["revoked_at"]


def test_update_and_delete_are_audited_with_before_and_after(admin):
    api = factories.token_client(admin)
    server = factories.make_server("edge-1")
    response = api.patch(f"/api/v1/servers/{server.pk}/", {"notes": "rack 4", "rtmp_port": 1936}, format="json")
    assert response.status_code == 200, response.json()
    entry = AuditEntry.objects.filter(action="update").get()
    assert entry.before["rtmp_port"] == 1935 and entry.after["rtmp_port"] == 1936
    assert entry.before["notes"] == "" and entry.after["notes"] == "rack 4"
    assert "rtmp_port" in entry.message

    factories.make_application(server, "live")
    assert api.delete(f"/api/v1/servers/{server.pk}/").status_code == 204
    deleted = AuditEntry.objects.filter(action="delete").get()
    assert deleted.object_repr == "edge-1" and "1 dependent" in deleted.message


def test_viewer_token_is_refused_create_and_revoke(viewer, admin):
    key = factories.issue_key().key
    api = factories.token_client(viewer, "viewer")
    assert api.get("/api/v1/keys/").status_code == 200
    assert (
        api.post("/api/v1/keys/", {"application": key.application_id, "label": "x"}, format="json").status_code == 403
    )
    assert api.post(f"/api/v1/keys/{key.pk}/revoke/").status_code == 403
    assert api.post("/api/v1/servers/", {"name": "x", "host": "h"}, format="json").status_code == 403
    key.refresh_from_db()
    assert key.revoked_at is None and StreamKey.objects.count() == 1


def test_admin_user_with_viewer_ceiling_token_is_capped(admin):
    app = factories.make_application()
    api = factories.token_client(admin, "viewer")
    assert api.post("/api/v1/keys/", {"application": app.pk, "label": "x"}, format="json").status_code == 403


def test_lists_filter_order_and_paginate(admin):
    api = factories.token_client(admin)
    a = factories.make_application(factories.make_server("a-server"), "live")
    b = factories.make_application(factories.make_server("b-server", kind="nginx-rtmp"), "live")
    k1 = factories.issue_key(a, "one").key
    factories.issue_key(a, "two")
    factories.issue_key(b, "three")
    from console import audit
    from streams import keys

    keys.revoke_key(k1, audit.Actor.system())

    def names(url):
        response = api.get(url)
        assert response.status_code == 200, response.json()
        return [item["label"] for item in response.json()["results"]]

    assert sorted(names(f"/api/v1/keys/?server={a.server_id}")) == ["one", "two"]
    assert names(f"/api/v1/keys/?application={b.pk}") == ["three"]
    assert names("/api/v1/keys/?state=revoked") == ["one"]
    assert sorted(names("/api/v1/keys/?state=active")) == ["three", "two"]
    assert names("/api/v1/keys/?ordering=-label") == ["two", "three", "one"]
    page = api.get("/api/v1/keys/?limit=2&ordering=label").json()
    assert page["count"] == 3 and len(page["results"]) == 2 and page["next"]
    assert [s["name"] for s in api.get("/api/v1/servers/?ordering=-name").json()["results"]] == ["b-server", "a-server"]
    assert api.get("/api/v1/keys/?state=bogus").status_code == 400


def test_unauthenticated_and_bad_tokens_get_401(admin):
    from rest_framework.test import APIClient

    client = APIClient()
    assert client.get("/api/v1/servers/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION="Bearer tly_not-a-real-token")
    response = client.get("/api/v1/servers/")
    assert response.status_code == 401 and "Invalid" in response.json()["detail"]
    client.credentials(HTTP_AUTHORIZATION="Bearer")
    assert client.get("/api/v1/servers/").status_code == 401


def test_credentials_are_write_only_and_encrypted_at_rest(admin):
    from django.db import connection

    api = factories.token_client(admin)
    response = api.post(
        "/api/v1/servers/",
        {"name": "wowza-1", "kind": "wowza", "host": "wowza.example.org", "wowza_api_url": "http://wowza.example.org:8087",
         "wowza_username": "tally", "wowza_password": "s3cret-pw", "wowza_auth": "digest"},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.json()
    body = response.json()
    assert "wowza_password" not in body and "wowza_username" not in body and body["has_wowza_credentials"] is True
    with connection.cursor() as cursor:
        cursor.execute("SELECT wowza_username, wowza_password FROM streams_server WHERE id = %s", [body["id"]])
        raw_user, raw_password = cursor.fetchone()
    assert raw_password.startswith("fernet:") and "s3cret-pw" not in raw_password
    assert "tally" not in raw_user
    from streams.models import Server

    assert Server.objects.get(pk=body["id"]).wowza_password == "s3cret-pw"
    # A partial update without credentials keeps them.
    assert api.patch(f"/api/v1/servers/{body['id']}/", {"notes": "x"}, format="json").status_code == 200
    assert Server.objects.get(pk=body["id"]).wowza_password == "s3cret-pw"
    entry = AuditEntry.objects.filter(object_type="streams.server", action="create").get()
    assert entry.after["wowza_password"] == "********" and "s3cret-pw" not in str(entry.after)
