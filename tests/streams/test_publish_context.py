"""The publish decision's reads (streams.hotpath) on the real PostgreSQL: the quick read through the
connection's function with its kept plan, the full statement it falls back to, and the decisions that
need the full one (a client id with an open session under another key, a previous secret)."""

import weakref
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from console import audit
from console.tokens import hash_secret
from streams import hotpath, keys
from streams.models import PublishSession
from tests import factories


def publish(server, secret, client_id):
    body = urlencode({"app": "live", "name": secret, "clientid": client_id, "addr": "127.0.0.1", "call": "publish",
                      "flashver": "FMLE/3.0 (compatible; Lavf59.27", "type": "live"})  # fmt: skip
    return Client().post(f"/hooks/nginx-rtmp/{server.pk}/publish?secret={server.hook_secret}", body,
                         content_type="application/x-www-form-urlencoded")  # fmt: skip


def open_session(key, client_id, slot):
    now = timezone.now()
    return PublishSession.objects.create(
        server=key.application.server, application=key.application, key=key, app_name="live",
        public_name=key.public_name, client_id=client_id, started=now, last_update_at=now, publisher_slot=slot,
    )  # fmt: skip


def quick_calls(queries):
    return [q["sql"] for q in queries if q["sql"].startswith("SELECT * FROM pg_temp.tally_publish_context")]


def full_reads(queries):
    return [q["sql"] for q in queries if q["sql"].startswith("SELECT") and "UNION ALL" in q["sql"]]


@pytest.mark.django_db
def test_the_quick_read_finds_what_the_full_statement_finds():
    app = factories.make_application(factories.make_server())
    issued = factories.issue_key(app, max_publishers=3)
    other = factories.issue_key(app, "Other")
    open_session(issued.key, "1", 0)
    open_session(issued.key, "2", 2)
    open_session(other.key, "3", 0)
    digest = hash_secret(issued.secret)
    with CaptureQueriesContext(connection) as queries:
        quick = hotpath.load_publish_context(app.server.pk, digest, "9")
    assert len(quick_calls(queries)) == 1 and not full_reads(queries)
    full = hotpath.load_publish_context(app.server.pk, digest, "9", quick=False)
    assert (quick.server, quick.key) == (full.server, full.key) == (app.server, issued.key)
    assert quick.key.application.name == "live" and quick.key.application.server_id == app.server.pk
    assert sorted(quick.open_sessions) == sorted(full.open_sessions)
    assert {(s.client_id, s.slot) for s in quick.open_sessions} == {("1", 0), ("2", 2)}
    # An unknown server: nothing, in one read.
    with CaptureQueriesContext(connection) as queries:
        assert hotpath.load_publish_context(999_999, digest, "9").server is None
    assert len(quick_calls(queries)) == 1 and not full_reads(queries)


@pytest.mark.django_db
def test_keys_the_quick_read_does_not_find_are_read_in_full():
    app = factories.make_application(factories.make_server())
    issued = factories.issue_key(app)
    with CaptureQueriesContext(connection) as queries:
        unknown = hotpath.load_publish_context(app.server.pk, hash_secret("no-such-key"), "1")
    assert unknown.server == app.server and unknown.key is None
    assert len(quick_calls(queries)) == 1 and len(full_reads(queries)) == 1
    # A previous secret, still valid during its grace period, is found by the full statement only.
    old_secret = issued.secret
    rotated = keys.rotate_key(issued.key, audit.Actor.system(), grace=timedelta(minutes=5))
    assert rotated.secret != old_secret
    response = publish(app.server, old_secret, "1")
    assert response.status_code == 302, response.content
    assert response["Location"] == issued.key.public_name


@pytest.mark.django_db
def test_a_client_id_open_under_another_key_is_replaced_as_stale():
    """nginx restarted and gives client id 5 again: the quick read does not see client 5's session under
    the other key, the INSERT meets it, and the decision reads again in full and replaces it."""
    app = factories.make_application(factories.make_server())
    old, new = factories.issue_key(app, "Old"), factories.issue_key(app, "New")
    assert publish(app.server, old.secret, "5").status_code == 302
    response = publish(app.server, new.secret, "5")
    assert response.status_code == 302 and response["Location"] == new.key.public_name
    stale = PublishSession.objects.get(key=old.key)
    assert stale.end_reason == PublishSession.EndReason.STALE and stale.ended is not None
    assert PublishSession.objects.get(ended__isnull=True).key == new.key


@pytest.mark.django_db
def test_without_session_state_only_the_full_statement_runs(settings):
    settings.DB_SESSION_STATE = False  # TALLY_DB_PREPARE=0, behind PgBouncer in transaction mode
    app = factories.make_application(factories.make_server())
    issued = factories.issue_key(app)
    with CaptureQueriesContext(connection) as queries:
        assert publish(app.server, issued.secret, "1")["Location"] == issued.key.public_name
    assert not any("pg_temp" in q["sql"] for q in queries)


@pytest.mark.django_db(transaction=True)
def test_a_connection_that_cannot_create_the_function_decides_without_it(monkeypatch):
    monkeypatch.setattr(hotpath, "_QUICK_CONTEXT_FUNCTION", "CREATE FUNCTION pg_temp.broken(")  # refused
    # As on a new connection. (Closing this one is not enough: the test settings' pool hands it out again.)
    monkeypatch.setattr(hotpath, "_with_function", weakref.WeakSet())
    monkeypatch.setattr(hotpath, "_without_function", weakref.WeakSet())
    app = factories.make_application(factories.make_server())
    issued = factories.issue_key(app, max_publishers=2)
    assert publish(app.server, issued.secret, "1")["Location"] == issued.key.public_name
    assert connection.connection in hotpath._without_function  # refused once, then not tried again
    with CaptureQueriesContext(connection) as queries:
        assert publish(app.server, issued.secret, "2")["Location"] == issued.key.public_name
    assert not any("pg_temp" in q["sql"] for q in queries)  # not tried again on this connection
    assert PublishSession.objects.filter(ended__isnull=True).count() == 2


@pytest.mark.django_db(transaction=True)
def test_the_kept_plan_reads_the_open_sessions_of_the_key_only_after_the_table_grew():
    """The function's plan is made at its first call, here on an empty sessions table whose statistics
    say so, and kept: after 5,000 open sessions arrive it must still read only the key's."""
    app = factories.make_application(factories.make_server())
    issued = factories.issue_key(app, max_publishers=10)
    others = [factories.issue_key(app, f"Other {i}").key for i in range(5)]
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE streams_publishsession")
    digest = hash_secret(issued.secret)
    assert hotpath.load_publish_context(app.server.pk, digest, "1").open_sessions == []  # plans and keeps
    assert connection.connection in hotpath._with_function
    now = timezone.now()
    PublishSession.objects.bulk_create(
        [PublishSession(server=app.server, application=app, key=others[i % 5], app_name="live", public_name="x",
                        client_id=str(1000 + i), started=now, publisher_slot=i // 5) for i in range(5000)]
        + [PublishSession(server=app.server, application=app, key=issued.key, app_name="live", public_name="y",
                          client_id="1", started=now, publisher_slot=0)],
        batch_size=1000,
    )  # fmt: skip
    with transaction.atomic():  # the counters below are this transaction's
        context = hotpath.load_publish_context(app.server.pk, digest, "2")
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT seq_scan, idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = 'streams_publishsession'"
            )
            seq_scans, fetched = cursor.fetchone()
    assert [s.client_id for s in context.open_sessions] == ["1"]
    # The key has one open session; a plan that walks every open session reads 5,001. (A few more than
    # one can be read when the plan is remade meanwhile: the planner probes index bounds.)
    assert seq_scans == 0 and fetched < 50, f"{seq_scans} sequential scans, {fetched} sessions read"


@pytest.mark.django_db
def test_every_open_session_is_read_through_the_open_sessions_index():
    """The condition that keeps the publish read off one_open_per_client must not keep the fleet-wide
    "every open session" lookups (overview, API ?live=true) off it: ``open()`` says it too."""
    app = factories.make_application(factories.make_server())
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO streams_publishsession (server_id, application_id, app_name, public_name, client_id,"
            " publisher_addr, encoder, secret_hash_used, started, ended, end_reason, viewers, peak_viewers)"
            " SELECT %s, %s, 'live', 'n', i::text, '', '', '', now(), CASE WHEN i <= 50 THEN NULL ELSE now() END,"
            " '', 0, 0 FROM generate_series(1, 50000) i",
            [app.server.pk, app.pk],
        )
        cursor.execute("ANALYZE streams_publishsession")
    assert PublishSession.objects.open().count() == 50
    assert "one_open_per_client" in PublishSession.objects.open().explain()
    assert "one_open_per_client" in app.publish_sessions.open().explain()
