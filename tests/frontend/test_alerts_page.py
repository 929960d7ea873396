"""The alerts page ("events now": health transitions, publish starts and stops, refused publishes, newest
first) and the time stamps and usability of the audit log, API tokens and users pages."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from console import audit, tokens
from console.models import AuditEntry
from monitoring.models import HealthTransition
from streams.models import PublishReject, PublishSession
from tests import factories
from tests.factories import logged_in

pytestmark = pytest.mark.django_db


def kinds_of(page):
    return re.findall(r'<tr class="event" data-kind="(\w+)">', page)


def session(server, name, started, ended=None, reason="", key=None, client_id=None):
    return PublishSession.objects.create(
        server=server, key=key, app_name="live", public_name=name, client_id=client_id or name,
        publisher_addr="203.0.113.4", encoder="OBS 30.1", started=started, ended=ended, end_reason=reason,
    )  # fmt: skip


@pytest.fixture
def timeline():
    """Five minutes of a server: down, a publish that is refused, one that starts, the first one kicked."""
    now = timezone.now()
    server = factories.make_server("school-origin")
    issued = factories.issue_key(factories.make_application(server), "Gym camera")
    HealthTransition.objects.create(server=server, at=now - timedelta(minutes=5), from_health="up",
                                    to_health="down", reason="connection refused")  # fmt: skip
    kicked = session(server, "gym", now - timedelta(minutes=4), now - timedelta(minutes=1), "kicked", issued.key)
    PublishReject.objects.create(server=server, app_name="live", addr="198.51.100.9", reason="unknown_key",
                                 created=now - timedelta(minutes=3))  # fmt: skip
    PublishReject.objects.create(server=server, app_name="live", addr="198.51.100.10", reason="revoked",
                                 key=issued.key, detail=f"key {issued.key.prefix}…",
                                 created=now - timedelta(minutes=2, seconds=30))  # fmt: skip
    session(server, "chapel", now - timedelta(minutes=2))
    return {"server": server, "issued": issued, "kicked": kicked}


def test_events_newest_first_for_every_role(timeline, viewer):
    client = logged_in(viewer)
    response = client.get("/alerts/")
    assert response.status_code == 200
    page = response.content.decode()
    # stop (-1 min), start of chapel (-2), refusals (-2.5, -3), start of gym (-4), health (-5)
    assert kinds_of(page) == ["stopped", "started", "rejected", "rejected", "started", "health"]
    for text in ("connection refused", "Up → Down", "Kicked by an operator", "unknown_key", "198.51.100.9",
                 "live/chapel", "live/gym", "Gym camera", "school-origin", "OBS 30.1"):  # fmt: skip
        assert text in page, text
    assert timeline["issued"].secret not in page  # refusals never carry a secret
    assert f'<time datetime="{timeline["kicked"].ended.isoformat()}">' in page
    # the feed sits below the alerts themselves (open alerts, the notice backlog, the history)
    assert page.index('id="alert-open"') < page.index('id="alert-history"') < page.index('id="alert-events"')
    assert re.search(r'<div id="alert-events" data-live-region', page)
    assert "frontend/pages/alerts.js" in page
    assert 'href="/alerts/">Alerts</a>' in client.get("/").content.decode()  # in every role's nav


def test_alerts_page_needs_a_role(outsider):
    assert Client().get("/alerts/").status_code == 302
    assert logged_in(outsider).get("/alerts/").status_code == 403


def test_filters_by_kind_and_server(timeline, operator):
    other = factories.make_server("edge-2")
    HealthTransition.objects.create(server=other, at=timezone.now(), from_health="down", to_health="up")
    client = logged_in(operator)
    assert kinds_of(client.get("/alerts/", {"kind": "health"}).content.decode()) == ["health", "health"]
    assert kinds_of(client.get("/alerts/", {"kind": "stopped"}).content.decode()) == ["stopped"]
    assert kinds_of(client.get("/alerts/", {"kind": "started"}).content.decode()) == ["started", "started"]
    assert kinds_of(client.get("/alerts/", {"kind": "rejected"}).content.decode()) == ["rejected", "rejected"]
    mine = client.get("/alerts/", {"server": timeline["server"].pk}).content.decode()
    assert len(kinds_of(mine)) == 6 and "edge-2</a></td>" not in mine
    theirs = client.get("/alerts/", {"server": other.pk, "kind": "health"}).content.decode()
    assert kinds_of(theirs) == ["health"] and "Down → Up" in theirs
    empty = client.get("/alerts/", {"server": other.pk, "kind": "rejected"}).content.decode()
    assert kinds_of(empty) == [] and "Show all events" in empty
    # an unknown kind is no filter
    assert len(kinds_of(client.get("/alerts/", {"kind": "bogus"}).content.decode())) == 7


def test_empty_state_says_what_comes_here(viewer, admin):
    page = logged_in(viewer).get("/alerts/").content.decode()
    assert "No events yet" in page and "an admin adds them" in page
    assert 'href="/servers/new/"' in logged_in(admin).get("/alerts/").content.decode()


def test_pages_of_fifty_keep_the_filters(viewer):
    server = factories.make_server()
    now = timezone.now()
    HealthTransition.objects.bulk_create(
        HealthTransition(
            server=server, at=now - timedelta(seconds=i), from_health="up", to_health="degraded", reason=f"poll {i}"
        )
        for i in range(120)
    )
    client = logged_in(viewer)
    first = client.get("/alerts/", {"kind": "health"}).content.decode()
    assert len(kinds_of(first)) == 50 and "poll 0<" in first and "poll 50<" not in first
    assert "Page 1 of 3" in first and 'href="?kind=health&amp;page=2"' in first
    last = client.get("/alerts/", {"kind": "health", "page": "3"}).content.decode()
    assert len(kinds_of(last)) == 20 and "poll 119<" in last and 'data-page="3"' in last
    assert len(kinds_of(client.get("/alerts/", {"page": "999999999999999999999999"}).content.decode())) == 20


HOSTILE = [
    {"kind": "\x00"}, {"kind": "health\x00"}, {"server": "\x00"}, {"page": "\x00"},
    {"page": "99999999999999999999999999999"}, {"page": "-1"}, {"page": "0"}, {"page": "1e9"}, {"page": "nan"},
    {"page": "inf"}, {"page": "2.5"}, {"server": "99999999999999999999999"}, {"server": "-3"}, {"server": "1 OR 1=1"},
    {"server": "１"}, {"kind": "health' OR '1'='1"}, {"kind": "x" * 10000}, {"kind": ["health", "stopped"]},
    {"server": "2147483648"}, {"server": "٣"}, {"server": "²"}, {"page": "²"}, {"kind": "²"},
]  # fmt: skip


@pytest.mark.parametrize("params", HOSTILE)
def test_hostile_query_parameters_never_fail(timeline, viewer, params):
    response = logged_in(viewer).get("/alerts/", params)
    assert response.status_code == 200
    assert kinds_of(response.content.decode())


def test_queries_stay_bounded_with_many_events(viewer, django_assert_max_num_queries):
    now = timezone.now()
    for s in range(4):
        server = factories.make_server(f"origin-{s}")
        issued = factories.issue_key(factories.make_application(server), f"Camera {s}")
        HealthTransition.objects.bulk_create(
            HealthTransition(server=server, at=now - timedelta(seconds=4 * i), from_health="up", to_health="down")
            for i in range(40)
        )
        PublishSession.objects.bulk_create(
            PublishSession(
                server=server,
                key=issued.key,
                app_name="live",
                public_name=f"s{i}",
                client_id=str(i),
                started=now - timedelta(seconds=4 * i + 1),
                ended=now - timedelta(seconds=4 * i + 2),
                end_reason="publish_done",
            )
            for i in range(40)
        )
        PublishReject.objects.bulk_create(
            PublishReject(
                server=server,
                key=issued.key,
                addr="198.51.100.9",
                reason="revoked",
                created=now - timedelta(seconds=4 * i + 3),
            )
            for i in range(40)
        )
    client = logged_in(viewer)
    client.get("/alerts/")
    # session, user, role, servers; the alerts' part (open alerts, backlog by status: 3, enabled rules for
    # the empty state, subscriptions, history count); then the feed's count, one page, one query per table
    with django_assert_max_num_queries(16):
        page = client.get("/alerts/").content.decode()
    assert set(kinds_of(page)) == {"health", "started", "stopped", "rejected"} and len(kinds_of(page)) == 50
    with django_assert_max_num_queries(16):
        assert len(kinds_of(client.get("/alerts/", {"page": "5"}).content.decode())) == 50
    with django_assert_max_num_queries(14):
        assert kinds_of(client.get("/alerts/", {"kind": "stopped"}).content.decode()) == ["stopped"] * 50


def test_audit_tokens_and_users_pages_use_time_elements(admin, viewer):
    client = logged_in(admin)
    issued = tokens.issue_token(admin, "ci", "viewer", audit.Actor.system(),
                                timezone.now() + timedelta(days=3))  # fmt: skip
    for i in range(60):
        audit.record(audit.Actor.system(), "poke", object_type="test.thing", object_id=str(i % 2), object_repr="t")
    get_user_model().objects.filter(pk=viewer.pk).update(last_login=timezone.now())

    tokens_page = client.get("/tokens/").content.decode()
    assert f'<time datetime="{issued.token.created.isoformat()}">' in tokens_page
    assert f'<time datetime="{issued.token.expires_at.isoformat()}">' in tokens_page
    viewer.refresh_from_db()
    users_page = client.get("/users/").content.decode()
    assert f'<time datetime="{viewer.last_login.isoformat()}">' in users_page
    entry = AuditEntry.objects.order_by("-created", "-id").first()
    audit_page = client.get("/audit/").content.decode()
    assert f'<time datetime="{entry.created.isoformat()}">' in audit_page
    for page in (tokens_page, users_page, audit_page):
        assert "frontend/pages/base.js" in page  # base.js localizes them in the user's time zone

    # the audit log's pages keep the filter
    filtered = client.get("/audit/", {"object_type": "test.thing", "object_id": "1"}).content.decode()
    assert "Page 1 of 1" in filtered and filtered.count("<tr><td><time") + filtered.count("<tr>\n<td><time") == 30
    filtered = client.get("/audit/", {"action": "poke"}).content.decode()
    assert 'href="?action=poke&amp;page=2"' in filtered
    assert "No entry matches" in client.get("/audit/", {"action": "nothing\x00"}).content.decode()


def test_users_page_queries_do_not_grow_with_users(admin, django_assert_max_num_queries):
    for i in range(30):
        factories.make_user(f"user{i}", ("viewer", "operator", "admin", None)[i % 4])
    client = logged_in(admin)
    client.get("/users/")
    with CaptureQueriesContext(connection) as queries:
        page = client.get("/users/").content.decode()
    assert len(queries.captured_queries) <= 8, [q["sql"][:80] for q in queries.captured_queries]
    rows = dict(re.findall(r"<tr><td>(user\d+)</td><td></td><td>([a-z ]+)</td>", page))
    assert rows["user0"] == "viewer" and rows["user1"] == "operator" and rows["user2"] == "admin"
    assert rows["user3"] == "no access"
