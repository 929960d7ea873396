"""What a poll cycle does to the stored state, driven with hand-made snapshots (the parsers have their own
tests on real captures): health hysteresis and transitions, stream starts and stops, the reload grace,
callback/poll event merging, several nginx workers, history samples and pushed messages."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from monitoring import state
from monitoring.models import HealthTransition, ServerSample, ServerStatus, Stream, StreamSample
from monitoring.snapshots import ServerSnapshot, StreamSnapshot
from streams.models import PublishSession
from tests import factories

pytestmark = pytest.mark.django_db
T0 = timezone.now().replace(microsecond=0)


def stream(name="cam", client="5", kbps=1000.0, **fields):
    return StreamSnapshot(app="live", name=name, publishing=True, active=True, bitrate_in_kbps=kbps,
                          publisher_client_id=client, uptime_s=10, **fields)  # fmt: skip


def ok(server, at, *streams, pid=100):
    return (server.pk, ServerSnapshot(server_id=server.pk, taken_at=at, reachable=True, worker_pid=pid,
                                      connections=len(streams), streams=tuple(streams)), 12.0)  # fmt: skip


def failed(server, at, reason="connection refused"):
    return (server.pk, ServerSnapshot.unreachable(server.pk, at, reason), 3000.0)


def at(seconds):
    return T0 + timedelta(seconds=seconds)


@override_settings(HEALTH_DOWN_AFTER=3, HEALTH_UP_AFTER=2)
def test_health_hysteresis_and_transitions(sent):
    server = factories.make_server()
    healths = []
    for i, result in enumerate([ok, failed, failed, failed, failed, ok, ok, ok]):
        state.apply_cycle([result(server, at(5 * i))], at(5 * i))
        healths.append(ServerStatus.objects.get(server=server).health)
    assert healths == ["up", "degraded", "degraded", "down", "down", "down", "up", "up"]
    transitions = list(HealthTransition.objects.order_by("at").values_list("from_health", "to_health", "reason"))
    assert transitions == [
        ("unknown", "up", ""), ("up", "degraded", "connection refused"), ("degraded", "down", "connection refused"),
        ("down", "up", ""),
    ]  # fmt: skip
    fleet = [m for g, m in sent if g == "fleet" and m["type"] == "server.health"]
    assert [m["health"] for m in fleet] == ["up", "degraded", "down", "up"]
    status = ServerStatus.objects.get(server=server)
    assert (status.polls_total, status.poll_errors_total) == (8, 4)


def test_streams_start_update_and_stop_with_history(sent):
    server = factories.make_server()
    state.apply_cycle([ok(server, at(0), stream(kbps=1000.0, viewers=1))], at(0))
    cam = Stream.objects.get(server=server, name="cam")
    assert cam.live and cam.latest["bitrate_in_kbps"] == 1000.0 and cam.live_since == at(-10)
    started = [m for g, m in sent if m["type"] == "stream.started"]
    assert {g for g, m in sent if m["type"] == "stream.started"} == {"fleet", f"server.{server.pk}", f"stream.{cam.pk}"}
    assert started[0]["stream"] == cam.pk and started[0]["source"] == "poll"
    sent.clear()
    # a 5 % bitrate wobble is not pushed; a viewer joining is, to the stream's group only
    state.apply_cycle([ok(server, at(5), stream(kbps=1050.0, viewers=2))], at(5))
    updates = [(g, m) for g, m in sent if m["type"] == "stream.update"]
    assert updates == [(f"stream.{cam.pk}", {"type": "stream.update", "server": server.pk, "viewers": 2,
                                             "stream": cam.pk})]  # fmt: skip
    sent.clear()
    state.apply_cycle([ok(server, at(10))], at(10))
    cam.refresh_from_db()
    assert not cam.live
    assert [m["type"] for g, m in sent if g == "fleet" and m["type"].startswith("stream.")] == ["stream.stopped"]
    assert StreamSample.objects.filter(stream=cam).count() == 2
    assert ServerSample.objects.filter(server=server).count() == 3


def test_unreachable_poll_changes_no_stream():
    server = factories.make_server()
    state.apply_cycle([ok(server, at(0), stream())], at(0))
    state.apply_cycle([failed(server, at(5))], at(5))
    assert Stream.objects.get(name="cam").live


@override_settings(RELOAD_GRACE_S=30)
def test_reload_grace_keeps_a_stream_its_callback_session_vouches_for():
    """After a reload the old worker's streams vanish from /stat while they go on: an open callback
    session heard from lately keeps the stream live; once it goes quiet the stream stops."""
    app = factories.make_application(factories.make_server())
    server = app.server
    session = PublishSession.objects.create(server=server, application=app, app_name="live", public_name="cam",
                                            client_id="5", started=at(-10), last_update_at=at(0))  # fmt: skip
    state.apply_cycle([ok(server, at(0), stream())], at(0))
    state.apply_cycle([ok(server, at(5), pid=200)], at(5))  # reloaded: new worker, empty stat
    cam = Stream.objects.get(name="cam")
    assert cam.live and cam.missing_since == at(5)
    state.apply_cycle([ok(server, at(40), pid=200)], at(40))  # no on_update for 40 s: gone
    cam.refresh_from_db()
    assert not cam.live
    session.refresh_from_db()
    assert session.ended is None  # sessions are the callbacks' business


def test_callback_announced_starts_and_stops_are_not_repeated(sent):
    app = factories.make_application(factories.make_server())
    server = app.server
    session = PublishSession.objects.create(server=server, application=app, app_name="live", public_name="cam",
                                            client_id="5", started=at(-1), last_update_at=at(-1))  # fmt: skip
    state.apply_cycle([ok(server, at(0), stream(client="5"))], at(0))
    cam = Stream.objects.get(name="cam")
    # publish.started went out from the callback: the poll tells only the stream's own group
    assert [g for g, m in sent if m["type"] == "stream.started"] == [f"stream.{cam.pk}"]
    sent.clear()
    PublishSession.objects.filter(pk=session.pk).update(ended=at(3), end_reason="publish_done")
    state.apply_cycle([ok(server, at(5))], at(5))
    assert [g for g, m in sent if m["type"] == "stream.stopped"] == [f"stream.{cam.pk}"]


def test_alternating_worker_pids_warn_about_several_workers():
    server = factories.make_server()
    for i, pid in enumerate([100, 100, 200, 200]):  # a reload: one change of pid, no warning
        state.apply_cycle([ok(server, at(5 * i), pid=pid)], at(5 * i))
    assert ServerStatus.objects.get(server=server).warning == ""
    for i, pid in enumerate([100, 200], start=4):  # back to an earlier worker: several answer
        state.apply_cycle([ok(server, at(5 * i), pid=pid)], at(5 * i))
    assert "worker_processes 1" in ServerStatus.objects.get(server=server).warning


def test_one_cycle_many_servers_in_few_queries(django_assert_max_num_queries):
    servers = [factories.make_server(f"edge-{i}") for i in range(20)]
    results = [ok(s, at(0), *(stream(f"cam{j}", client=str(j)) for j in range(5))) for s in servers]
    with django_assert_max_num_queries(20):
        state.apply_cycle(results, at(0))
    assert Stream.objects.filter(live=True).count() == 100
    results = [ok(s, at(5), *(stream(f"cam{j}", client=str(j), kbps=2000.0) for j in range(5))) for s in servers]
    with django_assert_max_num_queries(20):
        state.apply_cycle(results, at(5))
    assert StreamSample.objects.count() == 200


def test_nonsense_from_one_server_is_stored_safely_and_spares_the_others():
    """A server's answer may carry anything its parser let through: overlong or NUL-bearing names, numbers
    no column holds, an absurd uptime. The cycle stores what fits and the other servers are unaffected."""
    hostile, fine = factories.make_server("hostile"), factories.make_server("fine")
    odd = StreamSnapshot(app="a" * 500, name="cam\x00" + "x" * 10_000, publishing=True, active=True,
                         viewers=2**40, dropped_frames=2**70, uptime_s=1e300, video_codec="H\x00264",
                         bytes_in=2**80, publisher_client_id="9")  # fmt: skip
    snapshot = ServerSnapshot(server_id=hostile.pk, taken_at=at(0), reachable=True, connections=2**45,
                              version="nginx/\x001.0", streams=(odd,))  # fmt: skip
    state.apply_cycle([(hostile.pk, snapshot, 1.0), ok(fine, at(0), stream())], at(0))
    weird = Stream.objects.get(server=hostile)
    assert weird.live and weird.app == "a" * 64 and weird.name.startswith("camx") and len(weird.name) == 255
    assert weird.latest["video_codec"] == "H264" and weird.live_since is not None
    sample = StreamSample.objects.get(stream=weird)
    assert sample.viewers is None and sample.dropped_frames is None
    assert ServerSample.objects.get(server=hostile).connections is None
    assert ServerStatus.objects.get(server=hostile).snapshot["version"] == "nginx/1.0"
    assert Stream.objects.get(server=fine).live
