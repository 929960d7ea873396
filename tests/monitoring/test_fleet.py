"""The fleet's live state merges polls with publish callbacks: a start shows before the next poll, a stop at
once; the overview's counts, their stored samples, and each poll's chart figures for stream pages."""

from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring import fleet, history, state
from monitoring.models import FleetSample, Health, ServerStatus, Stream
from streams import sessions
from streams.models import PublishSession
from tests import factories
from tests.monitoring.test_state import at, ok, stream

pytestmark = pytest.mark.django_db


def open_session(app, name="cam", client="5", started=None):
    return PublishSession.objects.create(server=app.server, application=app, app_name=app.name, public_name=name,
                                         client_id=client, started=started or at(-1))  # fmt: skip


def test_an_accepted_publish_is_live_before_any_poll_and_a_callback_stop_ends_it_at_once():
    app = factories.make_application(factories.make_server())
    session = open_session(app)
    assert list(fleet.pending_sessions()) == [session]  # no poll yet: live from the callback
    assert fleet.summary().live_streams == 1
    state.apply_cycle([ok(app.server, at(0), stream(client="5"))], at(0))
    assert list(fleet.pending_sessions()) == []  # the poll took over, with figures
    assert fleet.summary().live_streams == 1
    sessions.close_publish(app.server.pk, "5", PublishSession.EndReason.PUBLISH_DONE, now=at(2))
    cam = Stream.objects.get(name="cam")
    assert not cam.live and cam.last_seen == at(2)
    assert fleet.summary().live_streams == 0


def test_a_poll_read_before_the_callback_stop_does_not_bring_the_stream_back(sent):
    app = factories.make_application(factories.make_server())
    open_session(app)
    state.apply_cycle([ok(app.server, at(0), stream(client="5"))], at(0))
    sessions.close_publish(app.server.pk, "5", PublishSession.EndReason.PUBLISH_DONE, now=at(6))
    sent.clear()
    # This cycle started at 5 s and read /stat before the close at 6 s: the stream is still in it.
    state.apply_cycle([ok(app.server, at(5), stream(client="5"))], at(5))
    assert not Stream.objects.get(name="cam").live
    assert not [m for _, m in sent if m["type"] == "stream.started"]
    # A new publish (a new open session) of the same name is live again at the next poll.
    open_session(app, client="9", started=at(8))
    state.apply_cycle([ok(app.server, at(10), stream(client="9"))], at(10))
    assert Stream.objects.get(name="cam").live


def test_a_second_publisher_keeps_the_stream_live_when_the_first_leaves():
    app = factories.make_application(factories.make_server())
    open_session(app, client="5")
    open_session(app, client="6")
    state.apply_cycle([ok(app.server, at(0), stream(client="5"))], at(0))
    sessions.close_publish(app.server.pk, "5", PublishSession.EndReason.PUBLISH_DONE, now=at(2))
    assert Stream.objects.get(name="cam").live


def test_summary_counts_health_bandwidth_viewers_and_pending_publishes():
    servers = [factories.make_server(f"s{i}") for i in range(5)]
    factories.make_server("off", enabled=False)
    snap = {"bandwidth_in_kbps": 1500.5, "bandwidth_out_kbps": 3000.0}
    ServerStatus.objects.bulk_create([
        ServerStatus(server=servers[0], health=Health.UP, snapshot=snap),
        ServerStatus(server=servers[1], health=Health.UP, snapshot={**snap, "bandwidth_out_kbps": None}),
        ServerStatus(server=servers[2], health=Health.DEGRADED, consecutive_failures=1, snapshot=snap),  # stale
        ServerStatus(server=servers[3], health=Health.DOWN, consecutive_failures=5, snapshot=snap),  # stale
    ])  # fmt: skip
    now = timezone.now()
    for i, viewers in enumerate([3, None, 4]):
        Stream.objects.create(server=servers[0], app="live", name=f"c{i}", live=True, first_seen=now, last_seen=now,
                              latest={"viewers": viewers})  # fmt: skip
    Stream.objects.create(server=servers[0], app="live", name="old", live=False, first_seen=now, last_seen=now,
                          latest={"viewers": 100})  # fmt: skip
    open_session(factories.make_application(servers[1]), name="new")
    assert fleet.summary() == fleet.FleetSummary(
        servers_up=2, servers_degraded=1, servers_down=1, servers_unknown=1, live_streams=4, viewers=7,
        ingest_kbps=3001.0, egress_kbps=3000.0,
    )  # fmt: skip


def test_each_cycle_stores_a_fleet_sample_for_the_sparklines_and_pushes_it(sent):
    server = factories.make_server()
    now = timezone.now()
    for i in range(120):
        FleetSample.objects.create(at=now - timedelta(seconds=10 * (120 - i)), servers_up=1, servers_degraded=0,
                                   servers_down=0, live_streams=i, viewers=0, ingest_kbps=0, egress_kbps=0)  # fmt: skip
    state.apply_cycle([ok(server, now, stream())], now)
    fleet.record(now)
    sample = FleetSample.objects.latest("at")
    assert (sample.at, sample.servers_up, sample.live_streams, sample.ingest_kbps) == (now, 1, 1, 0.0)
    pushed = [m for g, m in sent if g == "fleet" and m["type"] == "fleet.summary"]
    assert pushed[-1]["live_streams"] == 1 and pushed[-1]["at"] == now.isoformat()
    lines = fleet.sparklines(now)
    assert len(lines["live_streams"]) == fleet.SPARK_POINTS  # 30 min hold 121 samples, thinned evenly
    assert lines["live_streams"][-1] == 1.0 and lines["live_streams"][0] < lines["live_streams"][-2]
    assert history.prune(now + timedelta(hours=49))["fleet_samples"] == 121


def test_server_status_carries_each_live_streams_chart_figures(sent):
    server = factories.make_server()
    state.apply_cycle([ok(server, at(0), stream("a", kbps=800.0, fps=25.0, viewers=2), stream("b", client="6"))], at(0))
    status = [m for g, m in sent if m["type"] == "server.status"][-1]
    ids = dict(Stream.objects.values_list("name", "pk"))
    assert status["streams"] == [
        {"stream": ids["a"], "bitrate_in_kbps": 800.0, "bitrate_out_kbps": None, "fps": 25.0, "viewers": 2},
        {"stream": ids["b"], "bitrate_in_kbps": 1000.0, "bitrate_out_kbps": None, "fps": None, "viewers": None},
    ]
