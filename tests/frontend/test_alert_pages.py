"""The alerts pages: open alerts before the history, acknowledge and mute (operators), mutes and
maintenance windows, rules and notification channels (admins) with test sends to a real loopback
receiver, subscriptions from the server and application pages, and hostile input never failing."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.core import mail
from django.test import Client
from django.utils import timezone

from console.models import AuditEntry
from monitoring.models import Alert, AlertRule, Delivery, Mute, NotificationChannel, Stream, Subscription
from tests import factories
from tests.factories import logged_in
from tests.frontend.browser import browser, live_console, log_in  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db


# --- helpers ---------------------------------------------------------------------------------------------


def make_stream(server, name="cam", app="live", live=True):
    now = timezone.now()
    return Stream.objects.create(server=server, app=app, name=name, live=live, first_seen=now, last_seen=now)


def make_alert(server, state="open", condition="server_down", stream=None, started=None, **fields):
    now = timezone.now()
    started = started or now - timedelta(minutes=5)
    if stream is not None:
        subject, title = f"stream:{server.pk}:{stream.app}/{stream.name}", f"Stream dropped: {stream.app}/{stream.name}"
    else:
        subject, title = f"server:{server.pk}", f"Server down: {server.name}"
    defaults: dict[str, Any] = {"title": title, "started_at": started}
    if state == "open":
        defaults.update(opened_at=started, next_reminder_at=now + timedelta(minutes=15))
    elif state == "pending":
        defaults.update(due_at=now + timedelta(seconds=10))
    else:
        defaults.update(closed_at=started + timedelta(minutes=2), close_reason="recovered")
    defaults.update(fields)
    return Alert.objects.create(server=server, stream=stream, condition=condition, subject=subject, state=state,
                                **defaults)  # fmt: skip


def notes(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def rows(page: str) -> list[tuple[str, str]]:
    """(alert id, state) of the alert rows, in page order."""
    return re.findall(r'<tr class="alert" data-alert-row="(\d+)" data-state="(\w+)">', page)


@pytest.fixture
def server():
    return factories.make_server("school-origin")


class Receiver:
    """A webhook receiver on a loopback port (http.server in a thread): records each POST."""

    def __init__(self, status: int = 200) -> None:
        received: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append({"headers": dict(self.headers), "body": body, "path": self.path})
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def closed_port():
    """A loopback port that refuses connections (bound, never listening, so nobody else takes it)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def create_webhook(client: Client, name: str, url: str) -> tuple[NotificationChannel, str]:
    response = client.post("/alerts/channels/", {"name": name, "kind": "webhook", "url": url, "enabled": "on"})
    assert response.status_code == 302, response.content.decode()
    channel = NotificationChannel.objects.get(name=name)
    page = client.get("/alerts/channels/").content.decode()
    secret = re.search(r'data-testid="secret">([^<]+)<', page).group(1)
    return channel, secret


# --- the alerts page -------------------------------------------------------------------------------------


def test_open_alerts_come_before_pending_and_history(server, viewer):
    stream = make_stream(server)
    now = timezone.now()
    old = make_alert(server, "closed", started=now - timedelta(days=1), acknowledged_at=now - timedelta(hours=23))
    cancelled = make_alert(server, "cancelled", condition="stream_dropped", stream=stream,
                           started=now - timedelta(minutes=1), close_reason="back live")  # fmt: skip
    pending = make_alert(server, "pending", condition="stream_dropped", stream=stream, started=now)
    opened = make_alert(server, "open", started=now - timedelta(hours=2), reminders_sent=3)

    page = logged_in(viewer).get("/alerts/").content.decode()
    assert rows(page) == [(str(opened.pk), "open"), (str(pending.pk), "pending"),
                          (str(cancelled.pk), "cancelled"), (str(old.pk), "closed")]  # fmt: skip
    assert page.index('id="alert-open"') < page.index('id="alert-backlog"') < page.index('id="alert-history"')
    assert page.index('id="alert-history"') < page.index('id="alert-events"')
    assert "Waiting for the grace period" in page
    assert f'<time datetime="{opened.started_at.isoformat()}">' in page
    assert f'<time datetime="{pending.due_at.isoformat()}">' in page  # when it opens
    assert "3 sent" in page  # reminders
    assert f'href="/servers/{server.pk}/">school-origin</a>' in page  # a server alert links its server
    assert f'href="/streams/{stream.pk}/">live/cam on school-origin</a>' in page  # a stream alert its stream
    assert "back live" in page and "0:02:00" in page  # close reason, how long the closed one lasted
    # viewers see no controls
    assert ">Acknowledge</button>" not in page and "Mute…" not in page
    for region in ("alert-open", "alert-backlog", "alert-history", "alert-events"):
        assert re.search(rf'<(section|div) id="{region}"[^>]* data-live-region', page), region
    assert "frontend/pages/alerts.js" in page


def test_empty_states_say_what_to_do(viewer, admin):
    AlertRule.objects.all().delete()
    page = logged_in(viewer).get("/alerts/").content.decode()
    assert "No open alerts" in page and "No alert rule is enabled" in page and "an admin adds rules" in page
    assert "No alert has ended yet" in page
    assert "You are not subscribed to any alert e-mails" in page and "ask an admin" in page  # no e-mail address
    admin_page = logged_in(admin).get("/alerts/").content.decode()
    assert 'href="/alerts/rules/">add or enable a rule</a>' in admin_page
    factories.default_alert_rules()
    assert "2 rules watch the fleet" in logged_in(viewer).get("/alerts/").content.decode()


def test_backlog_counts_and_explains(server, viewer):
    alert = make_alert(server)
    now = timezone.now()
    for status, n in (("pending", 3), ("sending", 1), ("failed", 2), ("sent", 5)):
        for _ in range(n):
            Delivery.objects.create(alert=alert, kind="email", target="ops@example.org", event="opened",
                                    payload={}, status=status, next_attempt_at=now, created=now)  # fmt: skip
    page = logged_in(viewer).get("/alerts/").content.decode()
    assert re.search(r'data-testid="backlog-pending"><b>3</b>', page)
    assert re.search(r'data-testid="backlog-sending"><b>1</b>', page)
    assert re.search(r'data-testid="backlog-failed"><b class="health-down">2</b>', page)
    assert "nothing is dropped" in page and "retried" in page


def test_subnav_shows_rules_and_channels_to_admins_only(viewer, operator, admin):
    for user, sees in ((viewer, False), (operator, False), (admin, True)):
        page = logged_in(user).get("/alerts/").content.decode()
        assert '<a href="/alerts/" aria-current="page">Open &amp; history</a>' in page
        assert '<a href="/alerts/mutes/">Mutes</a>' in page
        assert ('href="/alerts/rules/"' in page) is sees and ('href="/alerts/channels/"' in page) is sees


def test_history_pages_of_fifty_filtered_by_condition_and_server(server, viewer):
    other = factories.make_server("edge-2")
    now = timezone.now()
    Alert.objects.bulk_create(
        Alert(server=server, condition="server_down", subject=f"server:{server.pk}", title=f"down {i}",
              state="closed", started_at=now - timedelta(minutes=i), closed_at=now - timedelta(minutes=i) +
              timedelta(seconds=30))
        for i in range(1, 121)
    )  # fmt: skip
    make_alert(other, "closed", condition="no_video", title="no video on edge")
    client = logged_in(viewer)
    first = client.get("/alerts/").content.decode()
    assert len(rows(first)) == 50 and "121 ended alerts" in first and "Page 1 of 3" in first
    assert ">down 1<" in first and ">down 50<" not in first  # newest first
    assert 'href="?hpage=2"' in first
    filtered = client.get("/alerts/", {"condition": "server_down", "alert_server": server.pk, "hpage": "3"})
    html = filtered.content.decode()
    assert len(rows(html)) == 20 and ">down 120<" in html and "no video on edge" not in html
    assert f'href="?condition=server_down&amp;alert_server={server.pk}&amp;hpage=2"' in html
    assert 'data-page="3"' in html and '<div id="alert-history" data-live-region' not in html  # older pages stay
    theirs = client.get("/alerts/", {"condition": "no_video"}).content.decode()
    assert [title for title in re.findall(r'/">([^<]+)</a><small>No video', theirs)] == ["no video on edge"]
    none = client.get("/alerts/", {"condition": "low_bitrate"}).content.decode()
    assert rows(none) == [] and "Show the whole history" in none
    # the events' pager keeps the history's filters, and the other way round
    assert (
        'name="condition" value="server_down"' in client.get("/alerts/", {"condition": "server_down"}).content.decode()
    )


def test_queries_stay_bounded_with_many_alerts(operator, django_assert_max_num_queries):
    now = timezone.now()
    for s in range(5):
        server = factories.make_server(f"origin-{s}")
        Mute.objects.create(server=server, starts_at=now - timedelta(minutes=1), ends_at=now + timedelta(hours=1))
        for i in range(8):
            stream = make_stream(server, f"cam-{i}")
            state = "open" if i % 2 else "pending"
            make_alert(server, state, condition="stream_dropped", stream=stream,
                       acknowledged_by=operator if i == 3 else None,
                       acknowledged_at=now if i == 3 else None)  # fmt: skip
            make_alert(server, "closed", condition="low_bitrate", stream=stream, acknowledged_by=operator,
                       acknowledged_at=now)  # fmt: skip
        Subscription.objects.create(user=operator, server=server)
    client = logged_in(operator)
    client.get("/alerts/")
    # session, user, role, servers, active alerts, the mutes in force, backlog (3), subscriptions, history
    # count and page, events count: none per alert, mute form or subscription
    with django_assert_max_num_queries(15):
        page = client.get("/alerts/").content.decode()
    states = [state for _pk, state in rows(page)]
    assert states == ["open"] * 20 + ["pending"] * 20 + ["closed"] * 40
    assert page.count("Mute…") == 40 and page.count(">Acknowledge</button>") == 15  # 5 were acknowledged
    assert page.count('<span class="pill muted">muted</span>') == 40


@pytest.mark.parametrize(
    "params",
    [{"condition": "\x00"}, {"condition": "server_down\x00"}, {"alert_server": "\x00"}, {"alert_server": "-1"},
     {"alert_server": "99999999999999999999"}, {"alert_server": "١"}, {"hpage": "\x00"}, {"hpage": "-3"},
     {"hpage": "1e9"}, {"hpage": "99999999999999999999999"}, {"condition": "x" * 5000},
     {"condition": ["server_down", "no_video"]}, {"kind": "health", "condition": "' OR 1=1 --"},
     {"page": "nan", "hpage": "inf"}],
)  # fmt: skip
def test_hostile_query_parameters_never_fail(server, viewer, params):
    make_alert(server, "closed")
    response = logged_in(viewer).get("/alerts/", params)
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="alert-history"' in page and ("Show the whole history" in page or rows(page))


# --- one alert -------------------------------------------------------------------------------------------


def test_alert_page_shows_details_and_deliveries(server, viewer, admin, receiver):
    channel = NotificationChannel.objects.create(name="pager", kind="webhook", url=receiver.url, secret="s3")
    stream = make_stream(server)
    alert = make_alert(server, condition="stream_dropped", stream=stream, reminders_sent=2,
                       detail="live/cam stopped publishing and was not back within 15 s.")  # fmt: skip
    now = timezone.now()
    Delivery.objects.create(alert=alert, kind="email", target="ops@example.org", event="opened", payload={},
                            status="sent", attempts=1, latency_ms=12.4, next_attempt_at=now, created=now,
                            sent_at=now)  # fmt: skip
    Delivery.objects.create(alert=alert, channel=channel, kind="webhook", target=receiver.url, event="opened",
                            payload={}, status="pending", attempts=2, last_error="ConnectError: refused",
                            next_attempt_at=now + timedelta(seconds=10), created=now)  # fmt: skip
    page = logged_in(viewer).get(f"/alerts/{alert.pk}/").content.decode()
    assert alert.title in page and "stopped publishing" in page and "2 sent" in page
    assert f'href="/streams/{stream.pk}/"' in page and f'href="/servers/{server.pk}/"' in page
    assert "12 ms" in page and "ConnectError: refused" in page and "2 notices" in page
    assert f'<time datetime="{now.isoformat()}">' in page
    # addresses and webhook URLs are the admins' (as in the API): viewers see where, not the address
    assert "ops@example.org" not in page and "an address at example.org" in page
    assert receiver.url not in page and "webhook pager (127.0.0.1)" in page
    assert ">Acknowledge</button>" not in page and "Mute…" not in page
    admin_page = logged_in(admin).get(f"/alerts/{alert.pk}/").content.decode()
    assert "ops@example.org" in admin_page and receiver.url in admin_page
    assert ">Acknowledge</button>" in admin_page and "Mute…" in admin_page
    assert f'data-alert="{alert.pk}"' in page and 'id="alert-deliveries" data-live-region' in page


def test_unknown_alert_is_404(viewer):
    client = logged_in(viewer)
    assert client.get("/alerts/999999/").status_code == 404
    assert client.get("/alerts/99999999999999999999/").status_code == 404


# --- acknowledge -----------------------------------------------------------------------------------------


def test_operators_acknowledge(server, operator):
    alert = make_alert(server)
    client = logged_in(operator)
    response = client.post(f"/alerts/{alert.pk}/acknowledge/", {"next": "/alerts/"})
    assert response.status_code == 302 and response["Location"] == "/alerts/"
    alert.refresh_from_db()
    assert alert.acknowledged_by == operator and alert.acknowledged_at is not None
    assert alert.next_reminder_at is None  # no more reminders
    assert any("no more reminders" in n for n in notes(response))
    entry = AuditEntry.objects.get(action="acknowledge")
    assert entry.actor == operator and entry.object_id == str(alert.pk)
    page = client.get("/alerts/").content.decode()
    assert "by operator" in page and ">Acknowledge</button>" not in page
    again = client.post(f"/alerts/{alert.pk}/acknowledge/")
    assert again["Location"] == f"/alerts/{alert.pk}/" and any("already" in n for n in notes(again))
    pending = make_alert(server, "pending", condition="no_video")
    refused = client.post(f"/alerts/{pending.pk}/acknowledge/")
    assert any("only an open alert" in n for n in notes(refused))
    pending.refresh_from_db()
    assert pending.acknowledged_at is None


def test_viewers_cannot_acknowledge(server, viewer, outsider):
    alert = make_alert(server)
    assert logged_in(viewer).post(f"/alerts/{alert.pk}/acknowledge/").status_code == 403
    assert logged_in(outsider).post(f"/alerts/{alert.pk}/acknowledge/").status_code == 403
    assert Client().post(f"/alerts/{alert.pk}/acknowledge/").status_code == 302  # to the login page
    alert.refresh_from_db()
    assert alert.acknowledged_at is None and not AuditEntry.objects.filter(action="acknowledge").exists()


def test_acknowledge_never_redirects_elsewhere(server, operator):
    alert = make_alert(server)
    client = logged_in(operator)
    for bad in ("https://evil.example/", "//evil.example/x", "/alerts/\r\nSet-Cookie: x=1", "/\x00", "javascript:1"):
        response = client.post(f"/alerts/{alert.pk}/acknowledge/", {"next": bad})
        assert response.status_code == 302 and response["Location"] == f"/alerts/{alert.pk}/", bad


# --- mutes -----------------------------------------------------------------------------------------------


def test_mute_a_stream_from_its_alert(server, operator):
    stream = make_stream(server)
    alert = make_alert(server, condition="stream_dropped", stream=stream)
    client = logged_in(operator)
    page = client.get("/alerts/").content.decode()
    form = re.search(r'<details class="mute">.*?</details>', page, re.S).group(0)
    assert f'value="stream:{stream.pk}"' in form and f'value="server:{server.pk}"' in form
    assert 'name="duration"' in form and 'name="ends_at"' in form and 'name="reason"' in form
    assert f'id="mute-{alert.pk}-subject_0"' in form  # ids are unique per alert
    before = timezone.now()
    response = client.post("/alerts/mutes/", {"subject": f"stream:{stream.pk}", "duration": "4",
                                              "reason": "camera swap", "next": "/alerts/"})  # fmt: skip
    assert response.status_code == 302 and response["Location"] == "/alerts/"
    mute = Mute.objects.get()
    assert mute.stream == stream and mute.server is None and mute.created_by == operator
    assert before <= mute.starts_at <= timezone.now()
    assert mute.ends_at - mute.starts_at == timedelta(hours=4) and mute.reason == "camera swap"
    assert any("Muted stream live/cam on school-origin until" in n for n in notes(response))
    assert AuditEntry.objects.filter(action="create", object_type="monitoring.mute").exists()
    page = client.get("/alerts/").content.decode()
    assert '<span class="pill muted">muted</span> until <time datetime="' in page


def test_maintenance_window_in_the_browsers_time_zone(server, operator):
    client = logged_in(operator)
    tomorrow = (timezone.now() + timedelta(days=1)).astimezone(UTC).date()
    response = client.post("/alerts/mutes/", {
        "subject": f"server:{server.pk}", "starts_at": f"{tomorrow}T22:00", "duration": "until",
        "ends_at": f"{tomorrow}T23:30", "reason": "kernel update", "tz": "Europe/Paris",
    })  # fmt: skip
    assert response.status_code == 302, response.content.decode()
    mute = Mute.objects.get()
    paris = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 22, 0)
    from zoneinfo import ZoneInfo

    assert mute.starts_at == paris.replace(tzinfo=ZoneInfo("Europe/Paris"))
    assert mute.ends_at - mute.starts_at == timedelta(minutes=90) and mute.server == server
    assert any("Planned a maintenance window" in n for n in notes(response))
    page = client.get("/alerts/mutes/").content.decode()
    upcoming = page[page.index('id="upcoming-title"') :]
    assert "kernel update" in upcoming and f'<time datetime="{mute.starts_at.isoformat()}">' in upcoming
    assert "Nothing is muted now" in page
    # an unknown or hostile zone falls back to UTC
    client.post("/alerts/mutes/", {"subject": f"server:{server.pk}", "starts_at": f"{tomorrow}T10:00",
                                   "duration": "1", "tz": "../../etc/passwd"})  # fmt: skip
    assert Mute.objects.filter(starts_at=datetime(tomorrow.year, tomorrow.month, tomorrow.day, 10, tzinfo=UTC))


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"subject": "", "duration": "1"}, "subject", "This field is required."),
        ({"subject": "server:999999", "duration": "1"}, "subject", "Choose a server or a stream to mute."),
        ({"subject": "nginx:1", "duration": "1"}, "subject", "Choose a server or a stream to mute."),
        ({"duration": "until"}, "ends_at", "Give the end time"),
        ({"duration": "until", "ends_at": "2001-01-01T10:00"}, "ends_at", "after the start, and in the future"),
        ({"duration": "1", "ends_at": "2999-01-01T10:00"}, "ends_at", "goes with “until a given time”"),
        ({"duration": "until", "ends_at": "+40d"}, "ends_at", "at most 30 days"),
        ({"duration": "1", "starts_at": "+400d"}, "starts_at", "at most 365 days from now"),
        ({"duration": "7"}, "duration", "Select a valid choice"),
        ({"duration": "1", "starts_at": "tomorrow"}, "starts_at", "Enter a valid date/time"),
        ({"duration": "1", "reason": "x" * 201}, "reason", "at most 200 characters"),
        ({"duration": "1", "reason": "a\x00b"}, "reason", "Null characters are not allowed"),
    ],
)
def test_mute_validation(server, operator, data, field, message):
    now = timezone.now()
    data = {"subject": f"server:{server.pk}", **data}
    for name in ("starts_at", "ends_at"):
        if str(data.get(name, "")).startswith("+"):
            data[name] = (now + timedelta(days=int(data[name][1:-1]))).strftime("%Y-%m-%dT%H:%M")
    response = logged_in(operator).post("/alerts/mutes/", data)
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert message in " ".join(errors.get(field, [])), errors
    assert not Mute.objects.exists()


def test_end_a_mute_early_or_cancel_a_window(server, operator, viewer):
    now = timezone.now()
    active = Mute.objects.create(server=server, starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=1),
                                 reason="swap", created_by=operator)  # fmt: skip
    planned = Mute.objects.create(server=server, starts_at=now + timedelta(days=2), ends_at=now + timedelta(days=3))
    viewer_page = logged_in(viewer).get("/alerts/mutes/").content.decode()
    assert "swap" in viewer_page and ">End now<" not in viewer_page and "Mute or plan a window" not in viewer_page
    assert logged_in(viewer).post(f"/alerts/mutes/{active.pk}/end/").status_code == 403
    assert (
        logged_in(viewer).post("/alerts/mutes/", {"subject": f"server:{server.pk}", "duration": "1"}).status_code == 403
    )
    client = logged_in(operator)
    page = client.get("/alerts/mutes/").content.decode()
    assert ">End now<" in page and ">Cancel<" in page and "Mute or plan a window" in page
    response = client.post(f"/alerts/mutes/{active.pk}/end/")
    assert response["Location"] == "/alerts/mutes/" and any("Ended the mute" in n for n in notes(response))
    response = client.post(f"/alerts/mutes/{planned.pk}/end/", {"next": "/alerts/"})
    assert response["Location"] == "/alerts/" and any("Cancelled the maintenance window" in n for n in notes(response))
    assert not Mute.objects.exists()
    assert AuditEntry.objects.filter(action="delete", object_type="monitoring.mute").count() == 2
    assert client.post(f"/alerts/mutes/{active.pk}/end/").status_code == 404


def test_mutes_page_prefills_and_lists_streams(server, operator):
    stream = make_stream(server, "gym")
    make_stream(server, "gone", live=False)
    page = logged_in(operator).get("/alerts/mutes/", {"subject": f"server:{server.pk}"}).content.decode()
    assert f'<option value="server:{server.pk}" selected>school-origin</option>' in page
    assert f'<option value="stream:{stream.pk}">live/gym on school-origin</option>' in page
    assert "live/gone" not in page  # neither live nor alerting
    assert 'type="datetime-local"' in page and 'name="tz"' in page


# --- rules -----------------------------------------------------------------------------------------------


RULE = {"name": "Gym camera live", "condition": "stream_dropped", "enabled": "on", "duration_s": "15"}


def test_rules_and_channels_pages_are_for_admins(viewer, operator, outsider):
    rule = AlertRule.objects.create(name="r", condition="no_video")
    channel = NotificationChannel.objects.create(name="c", kind="email", emails=["a@example.org"])
    urls = [
        "/alerts/rules/",
        "/alerts/rules/new/",
        f"/alerts/rules/{rule.pk}/",
        f"/alerts/rules/{rule.pk}/delete/",
        "/alerts/channels/",
        f"/alerts/channels/{channel.pk}/",
        f"/alerts/channels/{channel.pk}/delete/",
    ]
    posts = [*urls, f"/alerts/channels/{channel.pk}/test/", f"/alerts/channels/{channel.pk}/rotate/",
             f"/alerts/channels/{channel.pk}/enable/", "/alerts/channels/test/"]  # fmt: skip
    for user in (viewer, operator, outsider):
        client = logged_in(user)
        for url in urls:
            assert client.get(url).status_code == 403, (user.username, url)
        for url in posts:
            assert client.post(url, {**RULE, "email": "a@example.org"}).status_code == 403, (user.username, url)
    assert AlertRule.objects.filter(pk=rule.pk).exists() and NotificationChannel.objects.filter(pk=channel.pk).exists()
    assert not Delivery.objects.exists()


def test_admin_creates_edits_and_deletes_a_rule(server, admin):
    app = factories.make_application(server)
    issued = factories.issue_key(app, "Gym camera")
    ops = NotificationChannel.objects.create(name="ops", kind="email", emails=["ops@example.org"])
    hook = NotificationChannel.objects.create(name="hook", kind="webhook", url="https://example.org/h", secret="x")
    client = logged_in(admin)
    form = client.get("/alerts/rules/new/").content.decode()
    assert 'value="stream_unstable"' not in form  # it follows the stream_dropped rule: no rule of its own
    assert f"school-origin/live/{issued.key.public_name} (Gym camera)" in form
    response = client.post("/alerts/rules/new/", {
        **RULE, "condition": "expected_live", "key": issued.key.pk, "duration_s": "60",
        "schedule_text": "Mon-Fri 08:00-17:00\nsat, sun 10:00 - 12:30\n6 23:00-24:00",
        "channels": [ops.pk, hook.pk], "emails_text": "a@example.org, b@example.org; a@example.org",
    })  # fmt: skip
    assert response.status_code == 302, response.content.decode()
    rule = AlertRule.objects.get(name="Gym camera live")
    assert rule.key == issued.key and rule.duration_s == 60
    assert rule.schedule == [{"days": [0, 1, 2, 3, 4], "start": "08:00", "end": "17:00"},
                             {"days": [5, 6], "start": "10:00", "end": "12:30"},
                             {"days": [6], "start": "23:00", "end": "24:00"}]  # fmt: skip
    assert rule.emails == ["a@example.org", "b@example.org"]
    assert set(rule.channels.all()) == {ops, hook}
    created = AuditEntry.objects.get(action="create", object_type="monitoring.alertrule")
    assert sorted(created.after["channels"]) == sorted([ops.pk, hook.pk])

    listing = client.get("/alerts/rules/").content.decode()
    assert "Gym camera live" in listing and "Mon-Fri 08:00-17:00" in listing and "hook, ops; 2 addresses" in listing
    edit = client.get(f"/alerts/rules/{rule.pk}/").content.decode()
    assert "Mon-Fri 08:00-17:00\nSat,Sun 10:00-12:30\nSun 23:00-24:00" in edit  # read back as written
    response = client.post(f"/alerts/rules/{rule.pk}/", {
        "name": "Gym camera live", "condition": "expected_live", "key": issued.key.pk, "duration_s": "30",
        "schedule_text": "daily 06:00-22:00", "channels": [ops.pk],
    })  # fmt: skip
    assert response.status_code == 302, response.content.decode()
    rule.refresh_from_db()
    assert not rule.enabled and rule.duration_s == 30 and list(rule.channels.all()) == [ops] and rule.emails == []
    assert rule.schedule == [{"days": list(range(7)), "start": "06:00", "end": "22:00"}]
    update = AuditEntry.objects.get(action="update", object_type="monitoring.alertrule")
    assert "channels" in update.message and "duration_s" in update.message

    assert client.get(f"/alerts/rules/{rule.pk}/delete/").status_code == 200
    response = client.post(f"/alerts/rules/{rule.pk}/delete/")
    assert response["Location"] == "/alerts/rules/" and not AlertRule.objects.filter(pk=rule.pk).exists()
    assert AuditEntry.objects.filter(action="delete", object_type="monitoring.alertrule").exists()


def test_low_bitrate_and_server_scoped_rules(server, admin):
    client = logged_in(admin)
    response = client.post("/alerts/rules/new/", {**RULE, "name": "Low", "condition": "low_bitrate",
                                                  "threshold_kbps": "800", "threshold_pct": "50"})  # fmt: skip
    assert response.status_code == 302, response.content.decode()
    rule = AlertRule.objects.get(name="Low")
    assert (rule.threshold_kbps, rule.threshold_pct, rule.server) == (800, 50, None)
    response = client.post("/alerts/rules/new/", {**RULE, "name": "Down here", "condition": "server_down",
                                                  "server": server.pk, "duration_s": "0"})  # fmt: skip
    assert response.status_code == 302 and AlertRule.objects.get(name="Down here").scope == f"server {server.pk}"
    listing = client.get("/alerts/rules/").content.decode()
    assert "below 800 kbps or 50 % of its median" in listing and f'server <a href="/servers/{server.pk}/">' in listing


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"name": ""}, "name", "This field is required"),
        ({"condition": "stream_unstable"}, "condition", "Select a valid choice"),
        ({"condition": "bogus"}, "condition", "Select a valid choice"),
        ({"server": "S", "application": "A"}, "__all__", "at most one scope"),
        ({"server": "S", "key": "K"}, "__all__", "at most one scope"),
        ({"condition": "expected_live"}, "key", "needs the publish key"),
        ({"condition": "server_down", "application": "A"}, "__all__", "about a whole server"),
        ({"condition": "server_down", "key": "K"}, "__all__", "about a whole server"),
        ({"condition": "low_bitrate"}, "threshold_kbps", "needs a threshold"),
        ({"threshold_kbps": "500"}, "threshold_kbps", "low-bitrate rules only"),
        ({"condition": "low_bitrate", "threshold_kbps": "0"}, "threshold_kbps", "above 0"),
        ({"condition": "low_bitrate", "threshold_kbps": "-5"}, "threshold_kbps", "above 0"),
        ({"condition": "low_bitrate", "threshold_kbps": "nan"}, "threshold_kbps", "Enter a number"),
        ({"condition": "low_bitrate", "threshold_kbps": "inf"}, "threshold_kbps", "Enter a number"),
        ({"condition": "low_bitrate", "threshold_kbps": "1e12"}, "threshold_kbps", "less than or equal to"),
        ({"condition": "low_bitrate", "threshold_pct": "101"}, "threshold_pct", "less than or equal to 100"),
        ({"duration_s": "-1"}, "duration_s", "greater than or equal to 0"),
        ({"duration_s": "86401"}, "duration_s", "less than or equal to 86400"),
        ({"duration_s": "99999999999999999999"}, "duration_s", "less than or equal to"),
        ({"schedule_text": "Mon-Fri 08:00-17:00"}, "schedule_text", "“Expected live” rules only"),
        ({"condition": "expected_live", "key": "K", "schedule_text": "Mon 17:00-08:00"}, "schedule_text",
         "must start before it ends"),
        ({"condition": "expected_live", "key": "K", "schedule_text": "7 08:00-09:00"}, "schedule_text",
         "is not a day"),
        ({"condition": "expected_live", "key": "K", "schedule_text": "Fri-Mon 08:00-09:00"}, "schedule_text",
         "a range goes forward"),
        ({"condition": "expected_live", "key": "K", "schedule_text": "Mon 24:30-25:00"}, "schedule_text",
         "is not a time of day"),
        ({"condition": "expected_live", "key": "K", "schedule_text": "Mon 8-9"}, "schedule_text",
         "write days then hours"),
        ({"condition": "expected_live", "key": "K", "schedule_text": "Mon 08:00-09:00\n" * 51}, "schedule_text",
         "At most 50 windows"),
        ({"emails_text": "ops@example.org, not-an-address"}, "emails_text", "“not-an-address” is not a valid"),
        ({"emails_text": " ".join(f"u{i}@example.org" for i in range(51))}, "emails_text", "At most 50 addresses"),
        ({"channels": ["999999"]}, "channels", "Select a valid choice"),
        ({"channels": ["x"]}, "channels", "is not a valid value"),
        ({"channels": ["\x00"]}, "channels", "Null characters are not allowed"),
        ({"server": "99999999999999999999"}, "server", "Select a valid choice"),
        ({"key": "1.5"}, "key", "Select a valid choice"),
        ({"name": "x\x00"}, "name", "Null characters are not allowed"),
    ],
)  # fmt: skip
def test_rule_validation(server, admin, changes, field, message):
    app = factories.make_application(server)
    key = factories.issue_key(app).key
    ids = {"S": str(server.pk), "A": str(app.pk), "K": str(key.pk)}
    data = {**RULE, **{k: ids.get(v, v) if isinstance(v, str) else v for k, v in changes.items()}}
    response = logged_in(admin).post("/alerts/rules/new/", data)
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert message in " ".join(errors.get(field, [])), errors
    assert not AlertRule.objects.exclude(condition__in=["stream_dropped", "server_down"]).exists()
    assert AlertRule.objects.count() == 2  # the default rules only


# --- channels --------------------------------------------------------------------------------------------


def test_webhook_secret_is_shown_once_and_never_audited(admin, receiver):
    client = logged_in(admin)
    response = client.post("/alerts/channels/", {"name": "pager", "kind": "webhook", "url": receiver.url,
                                                 "enabled": "on"})  # fmt: skip
    assert response.status_code == 302
    channel = NotificationChannel.objects.get(name="pager")
    first = client.get("/alerts/channels/")
    page = first.content.decode()
    secret = re.search(r'data-testid="secret">([^<]+)<', page).group(1)
    assert secret == channel.secret and len(secret) >= 43  # token_urlsafe(32)
    assert first["Cache-Control"] == "no-store" and "X-Tally-Signature" in page
    assert secret not in client.get("/alerts/channels/").content.decode()  # once
    assert 'data-testid="secret"' not in client.get("/alerts/channels/").content.decode()

    response = client.post(f"/alerts/channels/{channel.pk}/rotate/")
    assert response["Location"] == "/alerts/channels/"
    page = client.get("/alerts/channels/").content.decode()
    rotated = re.search(r'data-testid="secret">([^<]+)<', page).group(1)
    channel.refresh_from_db()
    assert rotated == channel.secret != secret and "the old one stopped working" in page
    assert rotated not in client.get("/alerts/channels/").content.decode()

    entries = AuditEntry.objects.filter(object_type="monitoring.notificationchannel")
    assert {e.action for e in entries} == {"create", "update"}
    dumped = json.dumps([[e.before, e.after, e.message] for e in entries])
    assert secret not in dumped and rotated not in dumped and "webhook secret rotated" in dumped
    # deleting keeps the secret out of the audit log too
    assert client.post(f"/alerts/channels/{channel.pk}/delete/")["Location"] == "/alerts/channels/"
    assert rotated not in json.dumps(AuditEntry.objects.get(action="delete").before)


def test_email_channel_and_editing(admin):
    client = logged_in(admin)
    response = client.post(
        "/alerts/channels/",
        {"name": "ops", "kind": "email", "enabled": "on", "emails_text": "a@example.org\nb@example.org, a@example.org"},
    )
    assert response.status_code == 302, response.content.decode()
    channel = NotificationChannel.objects.get(name="ops")
    assert channel.emails == ["a@example.org", "b@example.org"] and channel.secret == ""
    assert 'data-testid="secret"' not in client.get("/alerts/channels/").content.decode()
    edit = client.get(f"/alerts/channels/{channel.pk}/").content.decode()
    assert "Edit “ops”" in edit and "a@example.org, b@example.org" in edit
    # the kind is fixed once the channel exists (as in the API)
    response = client.post(f"/alerts/channels/{channel.pk}/", {"name": "ops", "kind": "webhook",
                                                               "emails_text": "c@example.org"})  # fmt: skip
    assert response.status_code == 302
    channel.refresh_from_db()
    assert channel.kind == "email" and channel.emails == ["c@example.org"] and not channel.enabled


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"kind": "email"}, "emails_text", "at least one address"),
        ({"kind": "email", "emails_text": "a@example.org", "url": "https://example.org"}, "url", "clear it"),
        ({"kind": "email", "emails_text": "nope"}, "emails_text", "is not a valid e-mail address"),
        ({"kind": "email", "emails_text": ",".join(f"u{i}@example.org" for i in range(51))}, "emails_text",
         "At most 50"),
        ({"kind": "webhook"}, "url", "needs its URL"),
        ({"kind": "webhook", "url": "ftp://example.org/x"}, "url", "http:// or https://"),
        ({"kind": "webhook", "url": "example.org/hook"}, "url", "http:// or https://"),
        ({"kind": "webhook", "url": "http://example.org:99999/"}, "url", "not a valid URL"),
        ({"kind": "webhook", "url": "https://exa mple.org/"}, "url", "not a valid"),
        ({"kind": "webhook", "url": "https://example.org/" + "x" * 500}, "url", "at most 500"),
        ({"kind": "webhook", "url": "https://example.org/", "emails_text": "a@example.org"}, "emails_text",
         "clear them"),
        ({"kind": "sms", "url": "https://example.org/"}, "kind", "Select a valid choice"),
        ({"kind": "email", "emails_text": "a@example.org", "name": ""}, "name", "required"),
        ({"kind": "email", "emails_text": "a@example.org", "name": "taken"}, "name", "already exists"),
    ],
)  # fmt: skip
def test_channel_validation(admin, data, field, message):
    NotificationChannel.objects.create(name="taken", kind="email", emails=["t@example.org"])
    response = logged_in(admin).post("/alerts/channels/", {"name": "new", **data})
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert message in " ".join(errors.get(field, [])), errors
    assert NotificationChannel.objects.count() == 1


def test_disabled_channel_shows_why_and_is_enabled_again(admin):
    channel = NotificationChannel.objects.create(
        name="pager", kind="webhook", url="https://example.org/h", secret="s", enabled=False, consecutive_failures=5,
        disabled_reason="5 permanent failures in a row; last: SendError: HTTP 410",
    )  # fmt: skip
    client = logged_in(admin)
    page = client.get("/alerts/channels/").content.decode()
    assert "5 permanent failures in a row; last: SendError: HTTP 410" in page and "Enable again" in page
    response = client.post(f"/alerts/channels/{channel.pk}/enable/")
    assert response["Location"] == "/alerts/channels/"
    channel.refresh_from_db()
    assert channel.enabled and channel.consecutive_failures == 0 and channel.disabled_reason == ""
    assert AuditEntry.objects.get(action="update").message.startswith("enabled again")


def test_send_test_to_a_loopback_webhook(admin, receiver):
    client = logged_in(admin)
    channel, secret = create_webhook(client, "pager", receiver.url)
    response = client.post(f"/alerts/channels/{channel.pk}/test/")
    assert response["Location"] == "/alerts/channels/"
    assert any(n.startswith("Test notice sent to “pager” (HTTP 200, ") for n in notes(response)), notes(response)
    assert len(receiver.received) == 1
    request = receiver.received[0]
    body = request["body"]
    payload = json.loads(body)
    assert payload["event"] == "alert.test" and payload["alert"] is None and request["path"] == "/hook"
    timestamp, signature = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", request["headers"]["X-Tally-Signature"]).groups()
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, expected)
    delivery = Delivery.objects.get()
    assert delivery.status == "sent" and delivery.event == "test" and delivery.channel == channel
    assert AuditEntry.objects.filter(action="test", object_id=str(channel.pk)).exists()


def test_send_test_to_a_closed_port_reports_the_failure(admin, closed_port):
    client = logged_in(admin)
    channel, _secret = create_webhook(client, "pager", f"http://127.0.0.1:{closed_port}/hook")
    response = client.post(f"/alerts/channels/{channel.pk}/test/")
    text = " ".join(notes(response))
    assert "The test notice to “pager” failed: ConnectError" in text and "It stays queued" in text
    delivery = Delivery.objects.get()
    assert delivery.status == "pending" and delivery.attempts == 1 and "ConnectError" in delivery.last_error
    assert client.get("/alerts/").content.decode().count("<b>1</b><span>waiting to be sent</span>") == 1


def test_send_test_to_a_webhook_that_refuses(admin):
    gone = Receiver(status=410)
    try:
        client = logged_in(admin)
        channel, _secret = create_webhook(client, "pager", gone.url)
        text = " ".join(notes(client.post(f"/alerts/channels/{channel.pk}/test/")))
    finally:
        gone.close()
    assert "failed and is not retried" in text and "HTTP 410" in text
    assert Delivery.objects.get().status == "failed"


def test_send_test_by_email_and_test_an_address(admin):
    channel = NotificationChannel.objects.create(name="ops", kind="email", emails=["ops@example.org"])
    empty = NotificationChannel.objects.create(name="nobody", kind="email", emails=[])
    client = logged_in(admin)
    response = client.post(f"/alerts/channels/{channel.pk}/test/")
    assert any(n.startswith("Test notice sent to ops@example.org") for n in notes(response)), notes(response)
    assert [m.to for m in mail.outbox] == [["ops@example.org"]] and mail.outbox[0].subject == "[Tally] Test notice"
    response = client.post(f"/alerts/channels/{empty.pk}/test/")
    assert any("Nothing to send a test to" in n for n in notes(response))
    response = client.post("/alerts/channels/test/", {"email": "me@example.org"})
    assert response["Location"] == "/alerts/channels/" and mail.outbox[-1].to == ["me@example.org"]
    bad = client.post("/alerts/channels/test/", {"email": "not an address"})
    assert bad.status_code == 400 and "Enter a valid email address" in bad.content.decode()
    assert len(mail.outbox) == 2 and Delivery.objects.filter(status="sent").count() == 2


# --- subscriptions ---------------------------------------------------------------------------------------


def test_subscribe_from_the_server_page(server, viewer):
    viewer.email = "viewer@example.org"
    viewer.save()
    client = logged_in(viewer)
    page = client.get(f"/servers/{server.pk}/").content.decode()
    assert "Subscribe to alerts by e-mail" in page and 'data-subscribed="no"' in page
    assert "has no e-mail address" not in page
    response = client.post("/alerts/subscribe/", {"server": server.pk, "action": "subscribe",
                                                  "next": f"/servers/{server.pk}/"})  # fmt: skip
    assert response["Location"] == f"/servers/{server.pk}/"
    assert any("go to viewer@example.org" in n for n in notes(response))
    assert Subscription.objects.filter(user=viewer, server=server, application=None).count() == 1
    page = client.get(f"/servers/{server.pk}/").content.decode()
    assert 'data-subscribed="yes"' in page and ">Unsubscribe</button>" in page and "at viewer@example.org" in page
    again = client.post("/alerts/subscribe/", {"server": server.pk, "action": "subscribe"})
    assert any("already subscribed" in n for n in notes(again)) and Subscription.objects.count() == 1
    mine = client.get("/alerts/").content.decode()
    assert (
        f'server <a href="/servers/{server.pk}/">school-origin</a>' in mine and "They go to viewer@example.org" in mine
    )
    response = client.post("/alerts/subscribe/", {"server": server.pk, "action": "unsubscribe"})
    assert response["Location"] == "/alerts/" and not Subscription.objects.exists()
    assert any("no longer get" in n for n in notes(response))
    assert {e.action for e in AuditEntry.objects.filter(object_type="monitoring.subscription")} == {"create", "delete"}


def test_subscribe_to_an_application_without_an_email_address(server, operator, viewer):
    app = factories.make_application(server)
    client = logged_in(operator)
    page = client.get(f"/applications/{app.pk}/").content.decode()
    assert "Subscribe to alerts by e-mail" in page and "has no e-mail address" in page
    response = client.post("/alerts/subscribe/", {"application": app.pk, "action": "subscribe",
                                                  "next": f"/applications/{app.pk}/"})  # fmt: skip
    assert any("no e-mail address" in n for n in notes(response))
    assert Subscription.objects.get().application == app
    assert 'data-subscribed="yes"' in client.get(f"/applications/{app.pk}/").content.decode()
    # the server page is not the application's subscription; nor someone else's page
    assert 'data-subscribed="no"' in client.get(f"/servers/{server.pk}/").content.decode()
    assert 'data-subscribed="no"' in logged_in(viewer).get(f"/applications/{app.pk}/").content.decode()


@pytest.mark.parametrize(
    "data",
    [{}, {"action": "subscribe"}, {"server": "S", "application": "A", "action": "subscribe"},
     {"server": "999999", "action": "subscribe"}, {"server": "99999999999999999999", "action": "subscribe"},
     {"server": "\x00", "action": "subscribe"}, {"server": "S", "action": "delete-all"},
     {"server": "S", "action": "subscribe", "next": "https://evil.example/"},
     {"server": "S", "action": "subscribe", "next": "/\r\nLocation: //evil.example"},
     {"application": "١", "action": "unsubscribe"}, {"user": "1", "server": "S", "action": "subscribe"}],
)  # fmt: skip
def test_hostile_subscribe_bodies(server, viewer, admin, data):
    app = factories.make_application(server)
    ids = {"S": str(server.pk), "A": str(app.pk)}
    response = logged_in(viewer).post("/alerts/subscribe/", {k: ids.get(v, v) for k, v in data.items()})
    assert response.status_code == 302 and response["Location"] == "/alerts/"
    assert not Subscription.objects.exclude(user=viewer).exists()  # only ever for oneself


def test_subscribe_needs_a_role(server, outsider):
    assert (
        logged_in(outsider).post("/alerts/subscribe/", {"server": server.pk, "action": "subscribe"}).status_code == 403
    )
    assert Client().post("/alerts/subscribe/", {"server": server.pk, "action": "subscribe"}).status_code == 302
    assert not Subscription.objects.exists()


# --- hostile form bodies everywhere ----------------------------------------------------------------------


HOSTILE_BODIES = [
    {}, {"subject": "\x00", "duration": "\x00"}, {"name": "\x00", "kind": "\x00", "condition": "\x00"},
    {"duration_s": "1e400", "threshold_kbps": "1e400", "threshold_pct": "-0"},
    {"starts_at": "9999-12-31T23:59", "ends_at": "0001-01-01T00:00", "duration": "until", "tz": "Pacific/Kiritimati"},
    {"starts_at": "0001-01-01T00:00", "duration": "24", "tz": "Etc/GMT+12"},
    {"emails_text": "@" * 10000, "schedule_text": "\n".join(["Mon 08:00-09:00"] * 5000), "url": "http://[::1"},
    {"channels": ["1", "2", "x"], "server": "-1", "application": "0", "key": "1.5", "email": "a" * 1000},
    {"next": "//evil.example", "subject": "stream:0", "tz": "x" * 100},
]  # fmt: skip


@pytest.mark.parametrize("body", HOSTILE_BODIES)
def test_hostile_form_bodies_never_fail(server, admin, body):
    alert = make_alert(server)
    rule = AlertRule.objects.create(name="r", condition="no_video")
    channel = NotificationChannel.objects.create(name="c", kind="email", emails=["a@example.org"])
    client = logged_in(admin)
    for url in ("/alerts/mutes/", "/alerts/rules/new/", f"/alerts/rules/{rule.pk}/", "/alerts/channels/",
                f"/alerts/channels/{channel.pk}/", "/alerts/channels/test/", "/alerts/subscribe/",
                f"/alerts/{alert.pk}/acknowledge/"):  # fmt: skip
        response = client.post(url, body)
        assert response.status_code in (302, 400), (url, response.status_code)
    for url in ("/alerts/", f"/alerts/{alert.pk}/", "/alerts/mutes/", "/alerts/rules/", "/alerts/channels/"):
        assert client.get(url, body).status_code == 200, url


# --- in a real browser -----------------------------------------------------------------------------------

WAIT_MS = 30_000  # a bound against hanging, not a speed target


@pytest.mark.browser
def test_acknowledge_and_mute_with_the_keyboard_while_others_watch(live_console, browser):  # noqa: F811
    """An operator mutes a stream and acknowledges its alert with the keyboard only; a viewer's alerts page
    follows the acknowledgement over the websocket without a reload; times are localized."""
    server = factories.make_server("school-origin", enabled=False)  # not polled: the engine leaves it be
    stream = make_stream(server, live=False)  # dropped, not back: the alert stays open
    alert = make_alert(server, condition="stream_dropped", stream=stream)
    for role in ("operator", "viewer"):
        factories.make_user(role, role)
    base = live_console.base

    watcher = browser()
    log_in(watcher, base, "viewer", "/alerts/")
    watcher.wait_for_selector("#live-status[data-state=live]", timeout=WAIT_MS)
    watcher.evaluate("window.tallyNoReload = true")
    assert watcher.get_attribute("#alert-open time", "title")  # localized, the ISO time kept in the title

    page = browser()
    log_in(page, base, "operator", "/alerts/")
    page.focus(f"#mute-toggle-{alert.pk}")
    page.keyboard.press("Enter")  # opens "Mute…"
    assert page.is_visible(f"#mute-{alert.pk}-reason")
    page.focus(f"#mute-{alert.pk}-duration")
    page.keyboard.press("ArrowDown")  # 4 hours
    page.focus(f"#mute-{alert.pk}-reason")
    page.keyboard.type("camera swap")
    page.keyboard.press("Enter")
    page.wait_for_selector(".messages >> text=Muted stream live/cam on school-origin", timeout=WAIT_MS)
    assert page.is_visible(f"tr[data-alert-row='{alert.pk}'] .pill.muted")

    page.focus(f"#ack-{alert.pk}")
    page.keyboard.press("Enter")
    page.wait_for_selector(".messages >> text=no more reminders", timeout=WAIT_MS)
    # within 15 s: before the page's 30 s catch-up timer, so it is the websocket message that did it
    watcher.wait_for_selector(f"tr[data-alert-row='{alert.pk}'] >> text=by operator", timeout=15_000)
    assert watcher.evaluate("window.tallyNoReload === true")
    mutes = browser()
    log_in(mutes, base, "viewer", "/alerts/mutes/")
    assert "camera swap" in mutes.inner_text("[data-mutes=active]")
    assert re.search(r"\b20\d\d\b", mutes.inner_text("[data-mutes=active]"))  # times as localized dates
