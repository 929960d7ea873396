"""The alerts REST API: alerts (filters, acknowledge), mutes, rules, channels (secret once, rotate, test sends
to real loopback webhooks), deliveries, subscriptions; the role matrix; hostile input never gets a 500 and
never leaves anything half-written."""

from __future__ import annotations

import json
import re
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.utils import timezone
from rest_framework.test import APIClient

from console.models import AuditEntry
from monitoring import alerting
from monitoring.models import (
    Alert,
    AlertRule,
    Condition,
    Delivery,
    Mute,
    NotificationChannel,
    Stream,
    Subscription,
)
from tests import factories
from tests.nginx import free_port

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=0)


def iso(moment):
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
def api(admin):
    return factories.token_client(admin)


@pytest.fixture
def server():
    return factories.make_server("edge-a")


@pytest.fixture
def stream(server):
    return Stream.objects.create(server=server, app="live", name="cam", live=True, first_seen=NOW, last_seen=NOW)


def make_alert(server, state=Alert.State.OPEN, condition=Condition.SERVER_DOWN, subject=None, ago=60, **fields):
    started = NOW - timedelta(seconds=ago)
    extra = {"opened_at": started} if state in (Alert.State.OPEN, Alert.State.CLOSED) else {}
    if state in (Alert.State.CLOSED, Alert.State.CANCELLED):
        extra["closed_at"] = started + timedelta(seconds=30)
    return Alert.objects.create(
        condition=condition, subject=subject or alerting.server_subject(server.pk), server=server,
        title=f"{condition} on {server.name}", state=state, started_at=started, **extra, **fields,
    )  # fmt: skip


def written():
    """Everything a refused request must leave untouched."""
    return (Mute.objects.count(), AlertRule.objects.count(), NotificationChannel.objects.count(),
            Subscription.objects.count(), Delivery.objects.count(), AuditEntry.objects.count())  # fmt: skip


def assert_refused(response, field=None):
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:500])
    body = response.json()
    assert body, "a 4xx carries a message"
    if field:
        assert field in body, body
    return body


# --- alerts ----------------------------------------------------------------------------------------------


@pytest.fixture
def alerts(server, stream):
    other = factories.make_server("edge-b")
    subject = alerting.stream_subject(server.pk, "live", "cam")
    return {
        "open": make_alert(server, ago=300),
        "closed": make_alert(server, Alert.State.CLOSED, ago=3600),
        "pending": make_alert(server, Alert.State.PENDING, Condition.STREAM_DROPPED, subject, ago=5, stream=stream),
        "cancelled": make_alert(server, Alert.State.CANCELLED, Condition.STREAM_DROPPED, subject, ago=7200,
                                stream=stream),
        "other": make_alert(other, ago=10),
    }  # fmt: skip


def ids(response):
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_list_is_active_first_then_newest_and_filters(alerts, viewer, server, stream):
    client = factories.token_client(viewer)
    a = {name: alert.pk for name, alert in alerts.items()}
    assert ids(client.get("/api/v1/alerts/")) == [a["pending"], a["other"], a["open"], a["closed"], a["cancelled"]]
    assert ids(client.get("/api/v1/alerts/?state=open")) == [a["other"], a["open"]]
    assert ids(client.get("/api/v1/alerts/?state=closed")) == [a["closed"]]
    assert ids(client.get("/api/v1/alerts/?state=pending")) == [a["pending"]]
    assert ids(client.get("/api/v1/alerts/?state=cancelled")) == [a["cancelled"]]
    assert ids(client.get("/api/v1/alerts/?state=active")) == [a["pending"], a["other"], a["open"]]
    subject = alerting.stream_subject(server.pk, "live", "cam")
    assert ids(client.get("/api/v1/alerts/", {"subject": subject})) == [a["pending"], a["cancelled"]]
    assert ids(client.get("/api/v1/alerts/", {"subject": subject, "state": "active"})) == [a["pending"]]
    assert ids(client.get("/api/v1/alerts/", {"subject": "stream:1:live"})) == []  # exact, not a prefix
    assert ids(client.get(f"/api/v1/alerts/?server={server.pk}&condition=server_down")) == [a["open"], a["closed"]]
    assert ids(client.get(f"/api/v1/alerts/?stream={stream.pk}")) == [a["pending"], a["cancelled"]]
    assert ids(client.get("/api/v1/alerts/?ordering=started_at"))[0] == a["cancelled"]
    row = client.get(f"/api/v1/alerts/?state=open&server={server.pk}").json()["results"][0]
    assert row["server_name"] == "edge-a" and row["active"] is True and row["acknowledged_by"] is None


@pytest.mark.parametrize(
    "query",
    ["state=bogus", "condition=nope", "server=abc", "server=99999999999999999999999999", "server=-1",
     "stream=1.5e400", "subject=" + "x" * 401, "subject=a%00b", "since=yesterday"],
)  # fmt: skip
def test_bad_filters_are_400(alerts, viewer, query):
    response = factories.token_client(viewer).get(f"/api/v1/alerts/?{query}")
    assert response.status_code == 400, response.content
    assert response.json()


@pytest.mark.parametrize("query", ["search=%00", "ordering=%00", "ordering=-password", "limit=abc",
                                   "offset=-4", "limit=99999999999999999999",
                                   "offset=99999999999999999999999", "acknowledged=maybe"])  # fmt: skip
def test_odd_search_ordering_and_paging_are_not_500(alerts, viewer, query):
    response = factories.token_client(viewer).get(f"/api/v1/alerts/?{query}")
    assert response.status_code < 500, response.content


def test_detail_lists_deliveries_without_secrets(alerts, admin, viewer):
    alert = alerts["open"]
    hook = NotificationChannel.objects.create(name="pager", kind="webhook", url="https://hooks.example.test/T0/s3cr3t",
                                              secret="the-signing-secret")  # fmt: skip
    for kind, target, channel, state in [("email", "noc@example.test", None, "sent"),
                                         ("webhook", hook.url, hook, "pending")]:  # fmt: skip
        Delivery.objects.create(alert=alert, channel=channel, kind=kind, target=target, event="opened",
                                payload={"id": "x"}, status=state, attempts=2, last_error="HTTP 503",
                                latency_ms=12.5, next_attempt_at=NOW, created=NOW)  # fmt: skip
    as_admin = factories.token_client(admin).get(f"/api/v1/alerts/{alert.pk}/")
    assert as_admin.status_code == 200
    body = as_admin.json()
    assert body["deliveries_count"] == 2
    rows = {row["kind"]: row for row in body["deliveries"]}
    assert rows["email"]["target"] == "noc@example.test" and rows["email"]["status"] == "sent"
    assert rows["webhook"]["target"] == hook.url and rows["webhook"]["channel_name"] == "pager"
    assert {"status", "attempts", "last_error", "latency_ms", "sent_at", "target"} <= set(rows["email"])
    assert "the-signing-secret" not in as_admin.content.decode() and "payload" not in rows["email"]
    as_viewer = factories.token_client(viewer).get(f"/api/v1/alerts/{alert.pk}/").json()
    hook_row = next(row for row in as_viewer["deliveries"] if row["kind"] == "webhook")
    assert hook_row["target"] == "https://hooks.example.test/…"  # the path may carry a credential
    assert "s3cr3t" not in json.dumps(as_viewer)
    assert factories.token_client(viewer).get("/api/v1/alerts/999999/").status_code == 404


def test_acknowledge(alerts, operator, viewer):
    alert = alerts["open"]
    assert factories.token_client(viewer).post(f"/api/v1/alerts/{alert.pk}/acknowledge/").status_code == 403
    client = factories.token_client(operator)
    done = client.post(f"/api/v1/alerts/{alert.pk}/acknowledge/")
    assert done.status_code == 200, done.content
    assert done.json()["acknowledged_by"] == "operator" and done.json()["acknowledged_at"]
    alert.refresh_from_db()
    assert alert.acknowledged_by == operator and alert.next_reminder_at is None
    entry = AuditEntry.objects.get(action="acknowledge")
    assert entry.object_id == str(alert.pk) and entry.actor_name == "operator"
    again = client.post(f"/api/v1/alerts/{alert.pk}/acknowledge/")
    assert again.status_code == 409 and "already acknowledged by operator" in again.json()["detail"]
    for name in ("closed", "pending", "cancelled"):
        refused = client.post(f"/api/v1/alerts/{alerts[name].pk}/acknowledge/")
        assert refused.status_code == 409 and "only an open alert" in refused.json()["detail"]
    assert AuditEntry.objects.filter(action="acknowledge").count() == 1
    assert client.post("/api/v1/alerts/999999/acknowledge/").status_code == 404
    assert ids(client.get("/api/v1/alerts/?acknowledged=true")) == [alert.pk]


# --- mutes -----------------------------------------------------------------------------------------------


def test_mutes_create_list_delete(server, stream, operator, viewer, api):
    client = factories.token_client(operator)
    response = client.post("/api/v1/mutes/", {"server": server.pk, "duration_s": 3600, "reason": "maintenance"},
                           format="json")  # fmt: skip
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["active"] is True and body["created_by"] == "operator" and body["server_name"] == "edge-a"
    mute = Mute.objects.get()
    assert timedelta(seconds=3599) <= mute.ends_at - mute.starts_at <= timedelta(seconds=3601)
    assert AuditEntry.objects.filter(action="create", object_type="monitoring.mute").count() == 1
    later = {"stream": stream.pk, "starts_at": iso(NOW + timedelta(days=1)),
             "ends_at": iso(NOW + timedelta(days=1, hours=2))}  # fmt: skip
    planned = client.post("/api/v1/mutes/", later, format="json")
    assert planned.status_code == 201, planned.content
    assert planned.json()["active"] is False and planned.json()["stream_label"] == "edge-a: live/cam"
    reader = factories.token_client(viewer)
    assert len(reader.get("/api/v1/mutes/").json()["results"]) == 2
    assert [m["id"] for m in reader.get("/api/v1/mutes/?active=true").json()["results"]] == [mute.pk]
    assert reader.post("/api/v1/mutes/", {"server": server.pk, "duration_s": 60}, format="json").status_code == 403
    assert reader.delete(f"/api/v1/mutes/{mute.pk}/").status_code == 403
    assert client.delete(f"/api/v1/mutes/{mute.pk}/").status_code == 204
    assert AuditEntry.objects.filter(action="delete", object_type="monitoring.mute").count() == 1
    assert api.put(f"/api/v1/mutes/{planned.json()['id']}/", later, format="json").status_code == 405  # no edits


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"duration_s": 60}, "non_field_errors"),  # no subject
        ({"server": "SERVER", "stream": "STREAM", "duration_s": 60}, "non_field_errors"),  # both
        ({"server": "SERVER"}, "ends_at"),  # no end
        ({"server": "SERVER", "duration_s": 60, "ends_at": "+1h"}, "ends_at"),  # both ends
        ({"server": "SERVER", "starts_at": "+2h", "ends_at": "+1h"}, "ends_at"),  # ends before it starts
        ({"server": "SERVER", "starts_at": "+1h", "ends_at": "+1h"}, "ends_at"),  # empty
        ({"server": "SERVER", "ends_at": "+31d"}, "ends_at"),  # longer than 30 days
        ({"server": "SERVER", "starts_at": "-2h", "ends_at": "-1h"}, "ends_at"),  # over already
        ({"server": "SERVER", "starts_at": "+400d", "duration_s": 60}, "starts_at"),
        ({"server": "SERVER", "starts_at": "9999-12-31T23:59:59Z", "duration_s": 2592000}, "starts_at"),
        ({"server": "SERVER", "starts_at": "0001-01-01T00:00:00+05:00", "duration_s": 60}, "starts_at"),
        ({"server": "SERVER", "ends_at": "tomorrow"}, "ends_at"),
        ({"server": "SERVER", "ends_at": "2026-13-45T99:00:00Z"}, "ends_at"),
        ({"server": "SERVER", "ends_at": 1234567890}, "ends_at"),
        ({"server": "SERVER", "duration_s": 0}, "duration_s"),
        ({"server": "SERVER", "duration_s": 30 * 86400 + 1}, "duration_s"),
        ({"server": "SERVER", "duration_s": "an hour"}, "duration_s"),
        ({"server": "SERVER", "duration_s": 10**40}, "duration_s"),
        ({"server": "SERVER", "duration_s": 60, "reason": "x" * 201}, "reason"),
        ({"server": "SERVER", "duration_s": 60, "reason": "a\x00b"}, "reason"),
        ({"server": 99999999999999999999, "duration_s": 60}, "server"),
        ({"server": True, "duration_s": 60}, "server"),
        ({"server": [1], "duration_s": 60}, "server"),
        ({"stream": 424242, "duration_s": 60}, "stream"),
        ({"server": "SERVER", "duration_s": 60, "created_by": 1}, "created_by"),
    ],
)
def test_mute_validation_writes_nothing(server, stream, operator, body, field):
    offsets = {"+1h": timedelta(hours=1), "+2h": timedelta(hours=2), "-1h": timedelta(hours=-1),
               "-2h": timedelta(hours=-2), "+31d": timedelta(days=31), "+400d": timedelta(days=400)}  # fmt: skip
    resolved = {}
    for name, value in body.items():
        value = {"SERVER": server.pk, "STREAM": stream.pk}.get(value, value) if isinstance(value, str) else value
        resolved[name] = iso(NOW + offsets[value]) if isinstance(value, str) and value in offsets else value
    client = factories.token_client(operator)  # issuing a token writes an audit entry
    before = written()
    response = client.post("/api/v1/mutes/", resolved, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert written() == before


# --- rules -----------------------------------------------------------------------------------------------


def test_rules_crud_is_audited(api, server):
    email = NotificationChannel.objects.create(name="ops", kind="email", emails=["ops@example.test"])
    body = {"name": "Slow camera", "condition": "low_bitrate", "server": server.pk, "duration_s": 30,
            "threshold_kbps": 800, "channels": [email.pk], "emails": ["a@example.test", "a@example.test"]}  # fmt: skip
    created = api.post("/api/v1/alert-rules/", body, format="json")
    assert created.status_code == 201, created.content
    rule = created.json()
    assert (
        rule["channels"] == [email.pk]
        and rule["emails"] == ["a@example.test"]
        and rule["scope"] == f"server {server.pk}"
    )
    entry = AuditEntry.objects.get(action="create", object_type="monitoring.alertrule")
    assert entry.after["channels"] == [email.pk] and entry.after["threshold_kbps"] == 800
    assert api.get(f"/api/v1/alert-rules/{rule['id']}/").json()["name"] == "Slow camera"
    assert rule["id"] in [r["id"] for r in api.get("/api/v1/alert-rules/?condition=low_bitrate").json()["results"]]

    patched = api.patch(f"/api/v1/alert-rules/{rule['id']}/", {"threshold_pct": 50, "channels": []}, format="json")
    assert patched.status_code == 200, patched.content
    assert patched.json()["channels"] == [] and patched.json()["threshold_pct"] == 50
    update = AuditEntry.objects.get(action="update", object_type="monitoring.alertrule")
    assert update.before["channels"] == [email.pk] and update.after["channels"] == []
    assert "threshold_pct" in update.message and "channels" in update.message

    full = {**body, "server": None, "threshold_kbps": None, "threshold_pct": 40, "enabled": False}
    put = api.put(f"/api/v1/alert-rules/{rule['id']}/", full, format="json")
    assert put.status_code == 200, put.content
    assert put.json()["scope"] == "global" and put.json()["enabled"] is False

    assert api.delete(f"/api/v1/alert-rules/{rule['id']}/").status_code == 204
    assert not AlertRule.objects.filter(pk=rule["id"]).exists()
    assert AuditEntry.objects.filter(action="delete", object_type="monitoring.alertrule").count() == 1


def test_expected_live_rule_with_schedule(api):
    key = factories.issue_key().key
    body = {"name": "Mass", "condition": "expected_live", "key": key.pk, "duration_s": 120,
            "schedule": [{"days": [6, 6, 5], "start": "09:30", "end": "11:00"},
                         {"days": [0], "start": "18:00", "end": "24:00"}]}  # fmt: skip
    response = api.post("/api/v1/alert-rules/", body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["schedule"][0] == {"days": [5, 6], "start": "09:30", "end": "11:00"}
    rule = AlertRule.objects.get(pk=response.json()["id"])
    assert alerting.in_schedule(rule.schedule, NOW) in (True, False)  # the stored shape is what the engine reads


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"condition": "expected_live"}, "key"),
        ({"condition": "low_bitrate"}, "threshold_kbps"),
        ({"condition": "low_bitrate", "threshold_kbps": 0}, "threshold_kbps"),
        ({"condition": "low_bitrate", "threshold_kbps": -5}, "threshold_kbps"),
        ({"condition": "low_bitrate", "threshold_kbps": 1e12}, "threshold_kbps"),
        ({"condition": "low_bitrate", "threshold_kbps": "NaN"}, "threshold_kbps"),
        ({"condition": "low_bitrate", "threshold_pct": 0}, "threshold_pct"),
        ({"condition": "low_bitrate", "threshold_pct": 100.5}, "threshold_pct"),
        ({"condition": "low_bitrate", "threshold_pct": "Infinity"}, "threshold_pct"),
        ({"threshold_kbps": 500}, "threshold_kbps"),  # a threshold on a stream_dropped rule
        ({"schedule": [{"days": [0], "start": "08:00", "end": "09:00"}]}, "schedule"),  # not expected_live
        ({"condition": "stream_unstable"}, "condition"),
        ({"condition": "server_down", "application": "APP"}, "non_field_errors"),
        ({"server": "SERVER", "application": "APP"}, "non_field_errors"),
        ({"server": "SERVER", "key": "KEY"}, "non_field_errors"),
        ({"condition": "bogus"}, "condition"),
        ({"duration_s": -1}, "duration_s"),
        ({"duration_s": 86401}, "duration_s"),
        ({"duration_s": "soon"}, "duration_s"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "a\x00b"}, "name"),
        ({"emails": "ops@example.test"}, "emails"),
        ({"emails": ["not an address"]}, "emails"),
        ({"emails": ["ops@example.test\r\nBcc: evil@example.test"]}, "emails"),
        ({"emails": [f"u{i}@example.test" for i in range(51)]}, "emails"),
        ({"emails": [{"nested": ["x"]}]}, "emails"),
        ({"channels": [424242]}, "channels"),
        ({"channels": ["one"]}, "channels"),
        ({"channels": list(range(1, 52))}, "channels"),
        ({"channels": [2**40]}, "channels"),
        ({"channels": 1}, "channels"),
        ({"server": 424242}, "server"),
        ({"key": True}, "key"),
        ({"scope": "global"}, "scope"),
        ({"created": "2020-01-01T00:00:00Z"}, "created"),
    ],
)
def test_rule_validation_writes_nothing(api, server, override, field):
    app = factories.make_application(server, "live")
    key = factories.issue_key(app).key
    marks = {"SERVER": server.pk, "APP": app.pk, "KEY": key.pk}
    body = {"name": "r", "condition": "stream_dropped"}
    body.update({k: marks.get(v, v) if isinstance(v, str) else v for k, v in override.items()})
    before = written()
    response = api.post("/api/v1/alert-rules/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert written() == before


@pytest.mark.parametrize(
    "schedule",
    [
        "always",
        {"days": [0], "start": "08:00", "end": "09:00"},
        [[0, "08:00", "09:00"]],
        [{"days": [7], "start": "08:00", "end": "09:00"}],
        [{"days": [-1], "start": "08:00", "end": "09:00"}],
        [{"days": [True], "start": "08:00", "end": "09:00"}],
        [{"days": [1.0], "start": "08:00", "end": "09:00"}],
        [{"days": "0", "start": "08:00", "end": "09:00"}],
        [{"days": [], "start": "08:00", "end": "09:00"}],
        [{"start": "08:00", "end": "09:00"}],
        [{"days": [0], "start": "8:00", "end": "09:00"}],
        [{"days": [0], "start": "24:00", "end": "24:00"}],
        [{"days": [0], "start": "08:60", "end": "09:00"}],
        [{"days": [0], "start": "10:00", "end": "09:00"}],
        [{"days": [0], "start": "10:00", "end": "10:00"}],
        [{"days": [0], "start": 800, "end": "09:00"}],
        [{"days": [0], "start": "08:00\x00", "end": "09:00"}],
        [{"days": [0], "start": "08:00", "end": "09:00", "tz": "Europe/Paris"}],
        [{"days": [0], "start": "08:00", "end": "09:00", "x" * 100000: 1}],
        [{"days": [0], "start": "08:00", "end": "09:00"}] * 51,
        [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
    ],
)
def test_schedule_is_strictly_validated(api, schedule):
    key = factories.issue_key().key
    before = written()
    body = {"name": "r", "condition": "expected_live", "key": key.pk, "schedule": schedule}
    response = api.post("/api/v1/alert-rules/", body, format="json")
    assert response.status_code == 400, response.content
    assert "schedule" in response.json()
    assert len(response.content) < 5000  # hostile keys are not echoed back whole
    assert written() == before


def test_patch_keeps_the_rule_consistent(api, server):
    rule = AlertRule.objects.create(name="slow", condition="low_bitrate", threshold_kbps=500, server=server)
    app = factories.make_application(server, "live")
    scoped = api.patch(f"/api/v1/alert-rules/{rule.pk}/", {"application": app.pk}, format="json")
    assert scoped.status_code == 400 and "non_field_errors" in scoped.json()
    moved = api.patch(f"/api/v1/alert-rules/{rule.pk}/", {"application": app.pk, "server": None}, format="json")
    assert moved.status_code == 200 and moved.json()["scope"] == f"application {app.pk}"
    dropped = api.patch(f"/api/v1/alert-rules/{rule.pk}/", {"threshold_kbps": None}, format="json")
    assert dropped.status_code == 400 and "threshold_kbps" in dropped.json()
    rule.refresh_from_db()
    assert rule.threshold_kbps == 500


# --- channels --------------------------------------------------------------------------------------------


def test_webhook_secret_is_shown_once_and_rotates(api):
    created = api.post("/api/v1/alert-channels/", {"name": "pager", "kind": "webhook",
                                                   "url": "https://hooks.example.test/x"}, format="json")  # fmt: skip
    assert created.status_code == 201, created.content
    assert created["Cache-Control"] == "no-store"
    body = created.json()
    secret = body["secret"]
    assert len(secret) >= 40 and body["has_secret"] is True
    channel = NotificationChannel.objects.get(pk=body["id"])
    assert channel.secret == secret
    read = api.get(f"/api/v1/alert-channels/{channel.pk}/")
    assert read.status_code == 200 and "secret" not in read.json() and secret not in read.content.decode()
    assert secret not in api.get("/api/v1/alert-channels/").content.decode()

    rotated = api.post(f"/api/v1/alert-channels/{channel.pk}/rotate-secret/")
    assert rotated.status_code == 200 and rotated["Cache-Control"] == "no-store"
    new = rotated.json()["secret"]
    assert new != secret
    channel.refresh_from_db()
    assert channel.secret == new

    patched = api.patch(f"/api/v1/alert-channels/{channel.pk}/", {"url": "https://hooks.example.test/y"},
                        format="json")  # fmt: skip
    assert patched.status_code == 200 and "secret" not in patched.json()
    assert api.patch(f"/api/v1/alert-channels/{channel.pk}/", {"secret": "mine"}, format="json").status_code == 400
    entries = json.dumps(list(AuditEntry.objects.values("before", "after", "message")))
    assert secret not in entries and new not in entries
    assert AuditEntry.objects.filter(action="rotate_secret").count() == 1
    assert api.delete(f"/api/v1/alert-channels/{channel.pk}/").status_code == 204
    assert new not in json.dumps(list(AuditEntry.objects.values("before", "after")))

    email = api.post("/api/v1/alert-channels/", {"name": "ops", "kind": "email", "emails": ["ops@example.test"]},
                     format="json")  # fmt: skip
    assert email.status_code == 201 and email.json()["secret"] is None
    refused = api.post(f"/api/v1/alert-channels/{email.json()['id']}/rotate-secret/")
    assert refused.status_code == 400 and "webhook" in refused.json()["detail"]


def test_enabling_a_disabled_channel_resets_its_failures(api):
    channel = NotificationChannel.objects.create(name="pager", kind="webhook", url="https://h.example.test/",
                                                 secret="s", enabled=False, consecutive_failures=5,
                                                 disabled_reason="5 permanent failures in a row")  # fmt: skip
    response = api.patch(f"/api/v1/alert-channels/{channel.pk}/", {"enabled": True}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["consecutive_failures"] == 0 and response.json()["disabled_reason"] == ""
    channel.refresh_from_db()
    assert channel.enabled and channel.consecutive_failures == 0 and channel.secret == "s"
    assert api.patch(f"/api/v1/alert-channels/{channel.pk}/", {"disabled_reason": ""}, format="json").status_code == 400


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "email"}, "emails"),
        ({"kind": "email", "emails": []}, "emails"),
        ({"kind": "email", "emails": ["ops@example.test"], "url": "https://x.example.test/"}, "url"),
        ({"kind": "email", "emails": [f"u{i}@example.test" for i in range(51)]}, "emails"),
        ({"kind": "email", "emails": ["nope"]}, "emails"),
        ({"kind": "webhook"}, "url"),
        ({"kind": "webhook", "url": ""}, "url"),
        ({"kind": "webhook", "url": "ftp://files.example.test/"}, "url"),
        ({"kind": "webhook", "url": "javascript:alert(1)"}, "url"),
        ({"kind": "webhook", "url": "http://127.0.0.1:99999/"}, "url"),
        ({"kind": "webhook", "url": "https://" + "a" * 600 + ".test/"}, "url"),
        ({"kind": "webhook", "url": "https://h.example.test/", "emails": ["ops@example.test"]}, "emails"),
        ({"kind": "sms", "url": "https://h.example.test/"}, "kind"),
        ({"kind": "webhook", "url": "https://h.example.test/", "secret": "chosen"}, "secret"),
        ({"kind": "webhook", "url": "https://h.example.test/", "consecutive_failures": 0}, "consecutive_failures"),
        ({"kind": "webhook", "url": "https://h.example.test/", "name": "a\x00b"}, "name"),
        ({"kind": "webhook", "url": "https://h.example.test/", "name": "x" * 101}, "name"),
        ({"kind": "webhook", "url": "https://h.example.test/", "name": "taken"}, "name"),
    ],
)
def test_channel_validation_writes_nothing(api, body, field):
    NotificationChannel.objects.create(name="taken", kind="email", emails=["a@example.test"])
    before = written()
    response = api.post("/api/v1/alert-channels/", {"name": "new", **body}, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert written() == before


def test_channel_kind_cannot_change(api):
    channel = NotificationChannel.objects.create(name="ops", kind="email", emails=["a@example.test"])
    response = api.patch(f"/api/v1/alert-channels/{channel.pk}/", {"kind": "webhook", "url": "https://h.test/",
                                                                   "emails": []}, format="json")  # fmt: skip
    assert response.status_code == 400 and "kind" in response.json()
    assert api.patch(f"/api/v1/alert-channels/{channel.pk}/", {"emails": []}, format="json").status_code == 400
    channel.refresh_from_db()
    assert channel.kind == "email" and channel.emails == ["a@example.test"]


class Receiver(ThreadingHTTPServer):
    """A loopback webhook endpoint keeping (headers, raw body) of every POST."""

    def __init__(self, status=200):
        self.calls = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append((self.headers, body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_port}/hook"


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.shutdown()
    server.server_close()


def test_test_send_to_a_live_webhook_is_signed(api, receiver):
    created = api.post("/api/v1/alert-channels/", {"name": "hook", "kind": "webhook", "url": receiver.url},
                       format="json").json()  # fmt: skip
    response = api.post(f"/api/v1/alert-channels/{created['id']}/test/")
    assert response.status_code == 200, response.content
    result = response.json()
    assert result["sent"] is True and result["status"] == "sent" and result["last_error"] == ""
    assert result["last_status_code"] == 200 and result["latency_ms"] is not None
    assert len(receiver.calls) == 1
    headers, body = receiver.calls[0]
    header = headers[alerting.SIGNATURE_HEADER]
    timestamp = int(dict(part.split("=", 1) for part in header.split(","))["t"])
    assert header == alerting.sign(created["secret"], timestamp, body)
    assert abs(timestamp - timezone.now().timestamp()) < 60
    payload = json.loads(body)
    assert payload["event"] == "alert.test" and payload["alert"] is None
    assert payload["id"] == headers["X-Tally-Delivery"]
    delivery = Delivery.objects.get(pk=result["delivery"])
    assert delivery.status == "sent" and delivery.event == "test" and delivery.attempts == 1
    assert AuditEntry.objects.filter(action="test", object_id=str(created["id"])).count() == 1


def test_test_send_to_an_unreachable_webhook_stays_queued(api):
    url = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    created = api.post("/api/v1/alert-channels/", {"name": "hook", "kind": "webhook", "url": url},
                       format="json").json()  # fmt: skip
    response = api.post(f"/api/v1/alert-channels/{created['id']}/test/")
    assert response.status_code == 200, response.content
    result = response.json()
    assert result["sent"] is False and result["status"] == "pending"
    assert result["last_error"] and "retried" in result["detail"]
    delivery = Delivery.objects.get(pk=result["delivery"])
    assert delivery.status == "pending" and delivery.attempts == 1 and delivery.next_attempt_at > timezone.now()
    backlog = api.get("/api/v1/alert-deliveries/backlog/")
    assert backlog.status_code == 200 and backlog.json()["pending"] == 1


def test_test_send_to_one_address(api):
    response = api.post("/api/v1/alert-channels/test/", {"email": "ops@example.test"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["target"] == "ops@example.test"
    assert response.json()["status"] == "sent" and len(mail.outbox) == 1  # pytest-django's locmem backend
    assert mail.outbox[0].to == ["ops@example.test"]
    assert AuditEntry.objects.filter(action="test", object_type="monitoring.delivery").count() == 1
    before = written()
    refusals = [({}, "email"), ({"email": "not an address"}, "email"), ({"email": "a@b.test", "extra": 1}, "extra"),
                ({"email": ["a@b.test"]}, "email"), ({"email": "x" * 300 + "@example.test"}, "email"),
                ({"email": "a\x00@example.test"}, "email")]  # fmt: skip
    for body, field in refusals:
        assert_refused(api.post("/api/v1/alert-channels/test/", body, format="json"), field)
    assert written() == before


# --- deliveries ------------------------------------------------------------------------------------------


def test_deliveries_are_admin_only_and_filterable(api, alerts, viewer, operator):
    alert = alerts["open"]
    for state in ("sent", "pending", "failed"):
        Delivery.objects.create(alert=alert, kind="email", target="a@example.test", event="opened",
                                payload={}, status=state, next_attempt_at=NOW, created=NOW)  # fmt: skip
    assert len(api.get("/api/v1/alert-deliveries/").json()["results"]) == 3
    failed = api.get("/api/v1/alert-deliveries/?status=failed").json()["results"]
    assert [d["status"] for d in failed] == ["failed"]
    assert len(api.get(f"/api/v1/alert-deliveries/?alert={alert.pk}").json()["results"]) == 3
    assert api.get("/api/v1/alert-deliveries/?status=lost").status_code == 400
    assert api.get("/api/v1/alert-deliveries/?alert=99999999999999999999").status_code == 400
    assert api.get("/api/v1/alert-deliveries/backlog/").json() == {"pending": 1, "sending": 0, "failed": 1}
    for user in (viewer, operator):
        client = factories.token_client(user)
        assert client.get("/api/v1/alert-deliveries/").status_code == 403
        assert client.get("/api/v1/alert-deliveries/backlog/").status_code == 403
    assert api.post("/api/v1/alert-deliveries/", {}, format="json").status_code == 405


# --- subscriptions ---------------------------------------------------------------------------------------


def test_subscriptions_are_per_user(server, viewer, operator):
    app = factories.make_application(server, "live")
    viewer.email = "viewer@example.test"
    viewer.save()
    mine = factories.token_client(viewer)
    theirs = factories.token_client(operator)
    created = mine.post("/api/v1/subscriptions/", {"server": server.pk}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["email"] == "viewer@example.test" and created.json()["server_name"] == "edge-a"
    to_app = mine.post("/api/v1/subscriptions/", {"application": app.pk}, format="json")
    assert to_app.status_code == 201 and to_app.json()["application_label"] == "edge-a/live"
    assert theirs.post("/api/v1/subscriptions/", {"server": server.pk}, format="json").status_code == 201
    assert Subscription.objects.count() == 3

    before = written()
    duplicate = mine.post("/api/v1/subscriptions/", {"server": server.pk}, format="json")
    assert duplicate.status_code == 400 and "already subscribed" in str(duplicate.json())
    for body in ({}, {"server": server.pk, "application": app.pk}, {"server": None, "application": None},
                 {"server": 424242}, {"application": "live"}, {"server": server.pk, "user": operator.pk}):  # fmt: skip
        assert_refused(mine.post("/api/v1/subscriptions/", body, format="json"))
    assert written() == before

    listed = mine.get("/api/v1/subscriptions/").json()["results"]
    assert {row["id"] for row in listed} == {created.json()["id"], to_app.json()["id"]}
    other = theirs.get("/api/v1/subscriptions/").json()["results"]
    assert len(other) == 1 and other[0]["email"] is None  # the operator has no address
    assert theirs.get(f"/api/v1/subscriptions/{created.json()['id']}/").status_code == 404
    assert theirs.delete(f"/api/v1/subscriptions/{created.json()['id']}/").status_code == 404
    assert mine.delete(f"/api/v1/subscriptions/{created.json()['id']}/").status_code == 204
    assert Subscription.objects.filter(user=viewer).count() == 1
    assert AuditEntry.objects.filter(object_type="monitoring.subscription", action="delete").count() == 1


def test_outsiders_and_anonymous_are_refused(outsider, server):
    client = factories.token_client(outsider)
    assert client.get("/api/v1/alerts/").status_code == 403
    assert client.post("/api/v1/subscriptions/", {"server": server.pk}, format="json").status_code == 403
    assert APIClient().get("/api/v1/alerts/").status_code in (401, 403)


# --- role matrix -----------------------------------------------------------------------------------------


ROLE_MATRIX = [
    # (method, path, body, lowest role allowed)
    ("get", "/api/v1/alerts/", None, "viewer"),
    ("get", "/api/v1/alerts/{alert}/", None, "viewer"),
    ("post", "/api/v1/alerts/{alert}/acknowledge/", None, "operator"),
    ("get", "/api/v1/mutes/", None, "viewer"),
    ("post", "/api/v1/mutes/", {"server": "{server}", "duration_s": 60}, "operator"),
    ("delete", "/api/v1/mutes/{mute}/", None, "operator"),
    ("get", "/api/v1/alert-rules/", None, "viewer"),
    ("get", "/api/v1/alert-rules/{rule}/", None, "viewer"),
    ("post", "/api/v1/alert-rules/", {"name": "n", "condition": "no_video"}, "admin"),
    ("patch", "/api/v1/alert-rules/{rule}/", {"enabled": False}, "admin"),
    ("delete", "/api/v1/alert-rules/{rule}/", None, "admin"),
    ("get", "/api/v1/alert-channels/", None, "admin"),
    ("get", "/api/v1/alert-channels/{channel}/", None, "admin"),
    ("post", "/api/v1/alert-channels/", {"name": "c2", "kind": "email", "emails": ["a@example.test"]}, "admin"),
    ("patch", "/api/v1/alert-channels/{channel}/", {"enabled": False}, "admin"),
    ("post", "/api/v1/alert-channels/{channel}/rotate-secret/", None, "admin"),
    ("post", "/api/v1/alert-channels/{channel}/test/", None, "admin"),
    ("post", "/api/v1/alert-channels/test/", {"email": "a@example.test"}, "admin"),
    ("delete", "/api/v1/alert-channels/{channel}/", None, "admin"),
    ("get", "/api/v1/alert-deliveries/", None, "admin"),
    ("get", "/api/v1/alert-deliveries/backlog/", None, "admin"),
    ("get", "/api/v1/subscriptions/", None, "viewer"),
    ("post", "/api/v1/subscriptions/", {"server": "{server}"}, "viewer"),
]
RANK = {"viewer": 1, "operator": 2, "admin": 3}


@pytest.mark.parametrize(("method", "path", "body", "needed"), ROLE_MATRIX)
@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_role_matrix(request, server, receiver, method, path, body, needed, role):
    user = request.getfixturevalue(role)
    marks = {
        "alert": make_alert(server).pk,
        "mute": Mute.objects.create(server=server, starts_at=NOW, ends_at=NOW + timedelta(hours=1)).pk,
        "rule": AlertRule.objects.create(name="r", condition="no_video").pk,
        "channel": NotificationChannel.objects.create(name="c", kind="webhook", url=receiver.url, secret="s").pk,
        "server": server.pk,
    }
    path = path.format(**marks)
    if body:
        body = {k: marks[v[1:-1]] if isinstance(v, str) and v.startswith("{") else v for k, v in body.items()}
    response = getattr(factories.token_client(user), method)(path, body, format="json")
    if RANK[role] >= RANK[needed]:
        assert response.status_code in (200, 201, 204), (role, path, response.content)
    else:
        assert response.status_code == 403, (role, path, response.content)


def test_token_ceiling_caps_the_role(operator, server):
    alert = make_alert(server)
    client = factories.token_client(operator, role_ceiling="viewer")
    assert client.post(f"/api/v1/alerts/{alert.pk}/acknowledge/").status_code == 403


# --- hostile input ---------------------------------------------------------------------------------------


HOSTILE_BODIES = [
    ("{not json", "application/json"),
    ('{"name": "a",}', "application/json"),
    ("[1, 2, 3]", "application/json"),
    ('"just a string"', "application/json"),
    ("null", "application/json"),
    ("42", "application/json"),
    ('{"name": NaN}', "application/json"),
    ("name=a&kind=email", "application/x-www-form-urlencoded"),
    ("\xff\xfe garbage", "application/json"),
    ("[" * 100000 + "]" * 100000, "application/json"),
    ('{"schedule": ' + "[" * 900 + "]" * 900 + "}", "application/json"),
    ('{"name": "' + "x" * (2 * 1024 * 1024) + '"}', "application/json"),
    (
        '{"name": "a\\u0000b", "kind": "email", "emails": ["a@example.test"], "condition": "no_video"}',
        "application/json",
    ),
    (
        '{"name": {"a": {"b": [1, 2, {"c": null}]}}, "kind": ["email"], "server": {"id": 1}, "duration_s": [1],'
        ' "emails": {"a": 1}, "email": 5, "channels": "1,2", "application": [], "url": 1}',
        "application/json",
    ),
]
WRITE_PATHS = ["/api/v1/mutes/", "/api/v1/alert-rules/", "/api/v1/alert-channels/", "/api/v1/alert-channels/test/",
               "/api/v1/subscriptions/", "/api/v1/alert-rules/{rule}/", "/api/v1/alert-channels/{channel}/",
               "/api/v1/alerts/{alert}/acknowledge/", "/api/v1/alert-channels/{channel}/test/"]  # fmt: skip


@pytest.mark.parametrize("path", WRITE_PATHS)
@pytest.mark.parametrize(("body", "content_type"), HOSTILE_BODIES, ids=range(len(HOSTILE_BODIES)))
def test_hostile_bodies_never_500_nor_write(api, server, path, body, content_type):
    marks = {
        "rule": AlertRule.objects.create(name="r", condition="no_video").pk,
        "channel": NotificationChannel.objects.create(name="c", kind="email", emails=["a@example.test"]).pk,
        "alert": make_alert(server, Alert.State.CLOSED).pk,
    }
    path = path.format(**marks)
    method = "PATCH" if re.fullmatch(r"/api/v1/[a-z-]+/\d+/", path) else "POST"
    before = written()
    response = api.generic(method, path, body.encode("latin-1"), content_type=content_type)
    assert 400 <= response.status_code < 500, (path, response.status_code, response.content[:300])
    assert response.json(), "a message, not an HTML page"
    assert written() == before


def test_huge_lists_are_refused_quickly(api):
    before = written()
    many = list(range(1, 100000))
    response = api.post("/api/v1/alert-rules/", {"name": "r", "condition": "no_video", "channels": many},
                        format="json")  # fmt: skip
    assert response.status_code == 400 and "channels" in response.json()
    emails = [f"u{i}@example.test" for i in range(20000)]
    response = api.post("/api/v1/alert-channels/", {"name": "c", "kind": "email", "emails": emails}, format="json")
    assert response.status_code == 400 and "emails" in response.json()
    assert written() == before


def test_schema_documents_the_alert_endpoints(admin):
    client = factories.logged_in(admin)
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ("/api/v1/alerts/", "/api/v1/alerts/{id}/acknowledge/", "/api/v1/mutes/", "/api/v1/alert-rules/",
                 "/api/v1/alert-channels/", "/api/v1/alert-channels/{id}/test/", "/api/v1/alert-channels/test/",
                 "/api/v1/alert-channels/{id}/rotate-secret/", "/api/v1/alert-deliveries/backlog/",
                 "/api/v1/subscriptions/"):  # fmt: skip
        assert path in paths, path
