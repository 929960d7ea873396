"""Polling a real nginx-rtmp: publish sessions get their byte counts (publish_done carries none), and a
dead server only yields an unreachable snapshot."""

from datetime import timedelta

from django.db import connections
from django.utils import timezone

from monitoring import fanout, polling
from monitoring.models import ServerStatus
from streams.models import PublishSession
from tests import factories
from tests.nginx import free_port, wait_until
from tests.streams.test_publish_control import live_session, origin, start_publisher  # noqa: F401  (fixture)


def test_polls_record_session_bytes(origin, ffmpeg_factory):  # noqa: F811
    issued = factories.issue_key(origin.app, "Bytes")
    publisher = start_publisher(origin, ffmpeg_factory, issued.secret)
    assert wait_until(lambda: live_session(key=issued.key) is not None)
    [result] = fanout.poll_many([origin.server])
    snapshot = result.snapshot
    assert snapshot.reachable and [s.name for s in snapshot.streams] == ["bytes"]
    assert snapshot.streams[0].publisher_client_id == live_session(key=issued.key).client_id
    assert wait_until(lambda: polling.poll_all() == 1 and (live_session(key=issued.key).bytes_in or 0) > 10_000)
    publisher.stop()
    assert wait_until(lambda: live_session(key=issued.key) is None)
    assert PublishSession.objects.get(key=issued.key).bytes_in > 10_000  # kept after the session closed


def test_unreachable_server_gives_an_error_snapshot(db):
    server = factories.make_server(stat_url=f"http://127.0.0.1:{free_port()}/stat")
    [result] = fanout.poll_many([server])
    snapshot = result.snapshot
    assert not snapshot.reachable and "connect" in snapshot.error
    assert polling.poll_all() == 0


def test_each_server_is_polled_at_its_own_interval(db):
    factories.make_server("fast", stat_url=f"http://127.0.0.1:{free_port()}/stat", poll_interval_s=5)
    slow = factories.make_server("slow", stat_url=f"http://127.0.0.1:{free_port()}/stat", poll_interval_s=60)
    factories.make_server("off", enabled=False)
    factories.make_server("proxy", role="proxy", stat_url="")
    now = timezone.now()
    assert {s.name for s in polling.due_servers(now)} == {"fast", "slow"}
    outcome = polling.poll_due(now)
    assert outcome is not None and outcome.servers == 2 and outcome.reachable == 0
    assert [s.name for s in polling.due_servers(now + timedelta(seconds=5))] == ["fast"]
    assert {s.name for s in polling.due_servers(now + timedelta(seconds=60))} == {"fast", "slow"}
    assert ServerStatus.objects.get(server=slow).health == "degraded"


def test_a_cycle_still_running_elsewhere_makes_the_next_one_skip(db):
    factories.make_server(stat_url=f"http://127.0.0.1:{free_port()}/stat")
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [polling.POLL_LOCK])
        assert polling.poll_due() is None
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [polling.POLL_LOCK])
        assert polling.poll_due() is not None
    finally:
        other.close()
