"""Hostile, huge and malformed input gets a 400 that names the field, and nothing is half-written."""

import json

import pytest

from console.models import AuditEntry
from streams.models import Application, Server, StreamKey
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(admin):
    return factories.token_client(admin)


def counts():
    return (Server.objects.count(), Application.objects.count(), StreamKey.objects.count(), AuditEntry.objects.count())


GOOD_SERVER = {"name": "origin-a", "host": "127.0.0.1", "stat_url": "http://127.0.0.1:8080/stat"}


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"host": "bad host!"}, "host"),
        ({"host": "a" * 300}, "host"),
        ({"host": "http://example.org"}, "host"),
        ({"rtmp_port": 0}, "rtmp_port"),
        ({"rtmp_port": 70000}, "rtmp_port"),
        ({"rtmp_port": "abc"}, "rtmp_port"),
        ({"rtmp_port": 10**40}, "rtmp_port"),
        ({"stat_url": "ftp://x/stat"}, "stat_url"),
        ({"stat_url": "http://:99999/"}, "stat_url"),
        ({"stat_url": "not a url"}, "stat_url"),
        ({"stat_url": ""}, "stat_url"),  # an nginx-rtmp origin needs it
        ({"name": "has space"}, "name"),
        ({"name": "x\x00y"}, "name"),
        ({"name": ""}, "name"),
        ({"kind": "icecast"}, "kind"),
        ({"tags": "not-a-list"}, "tags"),
        ({"tags": ["ok", "bad tag"]}, "tags"),
        ({"wowza_api_url": "javascript:alert(1)"}, "wowza_api_url"),
        ({"unknown_field": 1}, "unknown_field"),
        ({"id": 5}, "id"),
    ],
)
def test_invalid_server_fields_are_named(api, override, field):
    before = counts()
    response = api.post("/api/v1/servers/", {**GOOD_SERVER, **override}, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert counts() == before


def test_wowza_needs_api_url_and_cannot_be_proxy(api):
    response = api.post("/api/v1/servers/", {"name": "w", "kind": "wowza", "role": "proxy", "host": "h"}, format="json")
    assert response.status_code == 400
    assert {"role", "wowza_api_url"} <= set(response.json())


def test_duplicate_names(api):
    assert api.post("/api/v1/servers/", GOOD_SERVER, format="json").status_code == 201
    before = counts()
    response = api.post("/api/v1/servers/", GOOD_SERVER, format="json")
    assert response.status_code == 400 and "name" in response.json()
    server_id = Server.objects.get().pk
    assert api.post("/api/v1/applications/", {"server": server_id, "name": "live"}, format="json").status_code == 201
    dup = api.post("/api/v1/applications/", {"server": server_id, "name": "live"}, format="json")
    assert dup.status_code == 400
    assert "non_field_errors" in dup.json() or "name" in dup.json()
    app_id = Application.objects.get().pk
    assert (
        api.post(
            "/api/v1/keys/", {"application": app_id, "label": "a", "public_name": "cam"}, format="json"
        ).status_code
        == 201
    )
    dup_key = api.post("/api/v1/keys/", {"application": app_id, "label": "b", "public_name": "cam"}, format="json")
    assert dup_key.status_code == 400 and "public_name" in dup_key.json()
    assert counts()[0] == before[0]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("{not json", "application/json"),
        ('{"name": "a",}', "application/json"),
        ("[1, 2, 3]", "application/json"),
        ('"just a string"', "application/json"),
        ("null", "application/json"),
        ("name=a&host=b", "application/x-www-form-urlencoded"),
        ("\xff\xfe garbage", "application/json"),
    ],
)
def test_malformed_bodies(api, body, content_type):
    before = counts()
    response = api.generic("POST", "/api/v1/servers/", body.encode("latin-1"), content_type=content_type)
    assert 400 <= response.status_code < 500, response.content
    assert response.json()  # a message, not an HTML page
    assert counts() == before


def test_oversize_body_is_400(api):
    before = counts()
    huge = json.dumps({**GOOD_SERVER, "notes": "x" * (2 * 1024 * 1024)})
    response = api.generic("POST", "/api/v1/servers/", huge, content_type="application/json")
    assert response.status_code == 400
    assert "too large" in response.json()["detail"]
    assert counts() == before


def test_deeply_nested_json_is_rejected(api):
    before = counts()
    nested = "[" * 100000 + "]" * 100000
    response = api.generic("POST", "/api/v1/servers/", nested, content_type="application/json")
    assert 400 <= response.status_code < 500
    assert counts() == before


@pytest.mark.parametrize(
    ("settings_value", "field"),
    [
        ({"on_update_interval_s": 1}, "settings.on_update_interval_s"),
        ({"hls": "maybe"}, "settings.hls"),
        ({"push_targets": ["http://not-rtmp/x"]}, "settings.push_targets"),
        ({"push_targets": ["rtmp://host/app; evil"]}, "settings.push_targets"),
        ({"publish_allow_cidrs": ["300.1.1.1/8"]}, "settings.publish_allow_cidrs"),
        ({"surprise": True}, "settings.surprise"),
        ("a string", None),
    ],
)
def test_application_settings_schema(api, settings_value, field):
    server = factories.make_server()
    before = counts()
    response = api.post(
        "/api/v1/applications/", {"server": server.pk, "name": "live", "settings": settings_value}, format="json"
    )
    assert response.status_code == 400, response.content
    errors = response.json()["settings"]
    if field:
        assert field in str(errors)
    assert counts() == before


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"application": 999999}, "application"),
        ({"application": "x"}, "application"),
        ({"label": ""}, "label"),
        ({"label": "x" * 101}, "label"),
        ({"public_name": "with space"}, "public_name"),
        ({"public_name": "café"}, "public_name"),
        ({"expires_at": "2000-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": "yesterday"}, "expires_at"),
        ({"max_publishers": 0}, "max_publishers"),
        ({"allowed_cidrs": ["10.0.0.0/8", "nope"]}, "allowed_cidrs"),
        ({"allowed_cidrs": "10.0.0.0/8"}, "allowed_cidrs"),
        ({"secret": "i-choose-my-own"}, "secret"),
    ],
)
def test_invalid_key_issue(api, override, field):
    app = factories.make_application()
    before = counts()
    response = api.post("/api/v1/keys/", {"application": app.pk, "label": "cam", **override}, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert counts() == before


def test_unknown_and_invalid_fields_reported_together(api):
    response = api.post("/api/v1/servers/", {**GOOD_SERVER, "rtmp_port": -1, "bogus": 1}, format="json")
    assert response.status_code == 400
    assert {"bogus", "rtmp_port"} <= set(response.json())


def test_unknown_ids_are_404_json(api):
    for url in ("/api/v1/servers/999999/", "/api/v1/keys/999999/", "/api/v1/servers/abc/"):
        response = api.get(url)
        assert response.status_code == 404 and response.json()["detail"]
    assert api.post("/api/v1/keys/999999/revoke/").status_code == 404


def test_bad_query_parameters_do_not_500(api):
    for url in (
        "/api/v1/keys/?server=abc",
        "/api/v1/keys/?limit=-5",
        "/api/v1/keys/?offset=zzz",
        "/api/v1/keys/?ordering=secret_hash",
        "/api/v1/audit-log/?since=notadate",
        "/api/v1/servers/?enabled=maybe",
    ):
        assert api.get(url).status_code < 500, url


def test_revoke_body_validation(api):
    key = factories.issue_key().key
    response = api.post(f"/api/v1/keys/{key.pk}/revoke/", {"reason": "x" * 500}, format="json")
    assert response.status_code == 400 and "reason" in response.json()
    key.refresh_from_db()
    assert key.revoked_at is None
