"""Polling a real nginx-rtmp: publish sessions get their byte counts (publish_done carries none), and a
dead server only yields an unreachable snapshot."""

from monitoring import polling
from streams.models import PublishSession
from tests import factories
from tests.nginx import free_port, wait_until
from tests.streams.test_publish_control import live_session, origin, start_publisher  # noqa: F401  (fixture)


def test_polls_record_session_bytes(origin, ffmpeg_factory):  # noqa: F811
    issued = factories.issue_key(origin.app, "Bytes")
    publisher = start_publisher(origin, ffmpeg_factory, issued.secret)
    assert wait_until(lambda: live_session(key=issued.key) is not None)
    snapshot = polling.poll_server(origin.server)
    assert snapshot.reachable and [s.name for s in snapshot.streams] == ["bytes"]
    assert snapshot.streams[0].publisher_client_id == live_session(key=issued.key).client_id
    assert wait_until(lambda: polling.poll_all() == 1 and (live_session(key=issued.key).bytes_in or 0) > 10_000)
    publisher.stop()
    assert wait_until(lambda: live_session(key=issued.key) is None)
    assert PublishSession.objects.get(key=issued.key).bytes_in > 10_000  # kept after the session closed


def test_unreachable_server_gives_an_error_snapshot(db):
    server = factories.make_server(stat_url=f"http://127.0.0.1:{free_port()}/stat")
    snapshot = polling.poll_server(server)
    assert not snapshot.reachable and "connect" in snapshot.error
    assert polling.poll_all() == 0
