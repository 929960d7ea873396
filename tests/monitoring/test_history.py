"""Monitoring history on the real PostgreSQL: batched sample writes, 1-minute rollups (idempotent, catching
up), pruning by both retentions, and chart points from samples or rollups."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from monitoring import history
from monitoring.models import Alert, FleetSample, ServerRollup, ServerSample, Stream, StreamRollup, StreamSample
from tests import factories

pytestmark = pytest.mark.django_db

T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)  # minute-aligned


def make_stream(server, name="cam1"):
    return Stream.objects.create(server=server, app="live", name=name, first_seen=T0, last_seen=T0)


def stream_sample(stream, at, bitrate_in=None, bitrate_out=None, viewers=None, fps=None):
    return StreamSample(
        stream=stream, at=at, bitrate_in_kbps=bitrate_in, bitrate_out_kbps=bitrate_out, viewers=viewers, fps=fps
    )


def server_sample(server, at, reachable=True, connections=None, bw_in=None, bw_out=None, streams=None):
    return ServerSample(
        server=server, at=at, reachable=reachable, connections=connections, bandwidth_in_kbps=bw_in,
        bandwidth_out_kbps=bw_out, streams=streams, poll_ms=12.0,
    )  # fmt: skip


def rollup_rows(model=StreamRollup):
    fields = [f.attname for f in model._meta.fields if f.name != "id"]
    return sorted(model.objects.values_list(*fields))


@pytest.fixture
def server():
    return factories.make_server()


# --- writing and rolling up ------------------------------------------------------------------------------


def test_write_samples_is_one_insert_per_table(server, django_assert_num_queries):
    streams = [make_stream(server, f"cam{i}") for i in range(300)]
    with django_assert_num_queries(2):
        history.write_samples(
            [stream_sample(s, T0, 1000.0, 2000.0, 3, 30.0) for s in streams], [server_sample(server, T0)]
        )
    assert StreamSample.objects.count() == 300 and ServerSample.objects.count() == 1
    history.write_samples([], [])  # nothing to write: no error


def test_roll_up_minute_figures(server):
    cam = make_stream(server)
    s = timedelta(seconds=1)
    history.write_samples(
        [
            stream_sample(cam, T0 + 0 * s, 1000.0, 3000.0, 4, 30.0),
            stream_sample(cam, T0 + 20 * s, 2000.0, 5000.0, 10, 29.0),
            stream_sample(cam, T0 + 59 * s, None, 4000.0, 1, 28.0),  # bitrate in unknown: not averaged
            stream_sample(cam, T0 + 60 * s, 500.0, 700.0, 2, 25.0),  # next minute
            stream_sample(cam, T0 + 125 * s, 9.0, 9.0, 9, 9.0),  # minute not complete at `now`
        ],
        [
            server_sample(server, T0, True, 10, 100.0, 200.0, 2),
            server_sample(server, T0 + 30 * s, True, 20, 300.0, 400.0, 3),
            server_sample(server, T0 + 40 * s, False),
            server_sample(server, T0 + 50 * s, True, 30, 200.0, 300.0, 1),
        ],
    )
    written = history.roll_up(now=T0 + 2 * timedelta(minutes=1) + 30 * s)
    assert written == 3  # two stream minutes, one server minute
    first, second = StreamRollup.objects.order_by("minute")
    assert (first.stream_id, first.minute, first.samples) == (cam.pk, T0, 3)
    assert (first.bitrate_in_avg, first.bitrate_in_min, first.bitrate_in_max) == (1500.0, 1000.0, 2000.0)
    assert first.bitrate_out_avg == 4000.0
    assert (first.viewers_avg, first.viewers_max) == (5.0, 10)
    assert first.fps_avg == pytest.approx(29.0)
    assert (second.minute, second.samples, second.bitrate_in_avg, second.viewers_max) == (
        T0 + timedelta(minutes=1), 1, 500.0, 2,
    )  # fmt: skip
    srv = ServerRollup.objects.get()
    assert (srv.server_id, srv.minute, srv.samples, srv.reachable_share) == (server.pk, T0, 4, 0.75)
    assert (srv.connections_avg, srv.bandwidth_in_avg, srv.bandwidth_out_avg, srv.streams_max) == (
        20.0, 200.0, 300.0, 3,
    )  # fmt: skip


def test_roll_up_is_idempotent_and_catches_up(server):
    cam, other = make_stream(server, "cam1"), make_stream(server, "cam2")
    samples = [stream_sample(cam, T0 + timedelta(seconds=5 * i), 100.0 + i, 50.0, i, 30.0) for i in range(12 * 6)]
    samples += [stream_sample(other, T0 + timedelta(minutes=3, seconds=5 * i), 10.0, 5.0, 1, 25.0) for i in range(12)]
    history.write_samples(samples, [])

    assert history.roll_up(now=T0 + timedelta(minutes=1, seconds=10)) == 1  # only the first minute is complete
    assert history.roll_up(now=T0 + timedelta(minutes=1, seconds=50)) == 0
    # Missed runs: a late run rolls every complete minute since.
    assert history.roll_up(now=T0 + timedelta(minutes=6, seconds=1)) == 5 + 1
    rows = rollup_rows()
    assert [r[1] for r in rows if r[0] == cam.pk] == [T0 + timedelta(minutes=m) for m in range(6)]
    assert all(r[2] == 12 for r in rows)
    minute_2 = StreamRollup.objects.get(stream=cam, minute=T0 + timedelta(minutes=2))
    assert minute_2.bitrate_in_avg == pytest.approx(100 + (24 + 35) / 2)  # samples 24..35
    assert (minute_2.viewers_avg, minute_2.viewers_max) == (pytest.approx(29.5), 35)

    assert history.roll_up(now=T0 + timedelta(minutes=6, seconds=1)) == 0  # again: same rows
    assert rollup_rows() == rows

    # A sample of the last rolled minute written late is counted by the next run.
    history.write_samples([stream_sample(cam, T0 + timedelta(minutes=5, seconds=59), 1000.0, 50.0, 500, 30.0)], [])
    assert history.roll_up(now=T0 + timedelta(minutes=7)) == 1
    late = StreamRollup.objects.get(stream=cam, minute=T0 + timedelta(minutes=5))
    assert (late.samples, late.viewers_max) == (13, 500)


def test_roll_up_catches_up_within_sample_retention_only(server, settings):
    settings.HISTORY_SAMPLES_HOURS = 2
    cam = make_stream(server)
    history.write_samples(
        [stream_sample(cam, T0 + timedelta(minutes=m), 100.0, 100.0, 1, 30.0) for m in (0, 30, 100, 170)], []
    )
    now = T0 + timedelta(hours=3)  # the first two minutes are past sample retention
    assert history.roll_up(now=now) == 2
    assert list(StreamRollup.objects.order_by("minute").values_list("minute", flat=True)) == [
        T0 + timedelta(minutes=100), T0 + timedelta(minutes=170),
    ]  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_roll_up_runs_one_at_a_time(server):
    """In autocommit, as the periodic task runs it: a run while another holds the lock does nothing."""
    cam = make_stream(server)
    history.write_samples([stream_sample(cam, T0, 100.0, 100.0, 1, 30.0)], [])
    held, release = threading.Event(), threading.Event()

    def other_run():
        try:
            with history._only_run("roll_up") as running:
                assert running
                held.set()
                release.wait()
        finally:
            held.set()
            connection.close()

    thread = threading.Thread(target=other_run)
    thread.start()
    try:
        held.wait()
        assert history.roll_up(now=T0 + timedelta(minutes=1)) == 0
    finally:
        release.set()
        thread.join()
    assert history.roll_up(now=T0 + timedelta(minutes=1)) == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        assert cursor.fetchone() == (0,)


def test_roll_up_with_nothing_to_do(db):
    assert history.roll_up() == 0


# --- pruning ---------------------------------------------------------------------------------------------


def test_prune_honours_both_retentions(server, settings, monkeypatch):
    settings.HISTORY_SAMPLES_HOURS = 2
    settings.HISTORY_ROLLUP_DAYS = 3
    monkeypatch.setattr(history, "PRUNE_BATCH", 4)  # several batches
    cam = make_stream(server)
    Stream.objects.filter(pk=cam.pk).update(live=True)
    now = T0 + timedelta(days=10)
    old, kept = now - timedelta(hours=2, seconds=1), now - timedelta(hours=1, minutes=59)
    history.write_samples(
        [stream_sample(cam, old - timedelta(seconds=i)) for i in range(9)] + [stream_sample(cam, kept)],
        [server_sample(server, old), server_sample(server, kept)],
    )
    for days in (4, 3.01, 2.99, 0):
        minute = _floor(now - timedelta(days=days))
        StreamRollup.objects.create(stream=cam, minute=minute, samples=1)
        ServerRollup.objects.create(server=server, minute=minute, samples=1, reachable_share=1.0)

    forgotten = make_stream(server, "forgotten")
    Stream.objects.filter(pk=forgotten.pk).update(live=False, last_seen=now - timedelta(days=3, seconds=1))
    for at in (old, kept):
        FleetSample.objects.create(at=at, servers_up=1, servers_degraded=0, servers_down=0, live_streams=1, viewers=0,
                                   ingest_kbps=0, egress_kbps=0)  # fmt: skip
    long_ago = now - timedelta(days=3, seconds=1)
    for state, closed_at in (("closed", long_ago), ("cancelled", long_ago), ("closed", now), ("open", None)):
        Alert.objects.create(condition="server_down", subject=f"server:{server.pk}", server=server, title="t",
                             state=state, started_at=long_ago, closed_at=closed_at)  # fmt: skip
    assert history.prune(now=now) == {
        "stream_samples": 9,
        "server_samples": 1,
        "fleet_samples": 1,
        "stream_rollups": 2,
        "server_rollups": 2,
        "streams": 1,
        "alerts": 2,
    }
    assert Alert.objects.count() == 2  # the open one and the one closed lately
    assert list(Stream.objects.values_list("name", flat=True)) == [cam.name]  # live, or seen lately
    assert list(StreamSample.objects.values_list("at", flat=True)) == [kept]
    assert list(ServerSample.objects.values_list("at", flat=True)) == [kept]
    assert StreamRollup.objects.count() == ServerRollup.objects.count() == 2
    assert min(StreamRollup.objects.values_list("minute", flat=True)) > now - timedelta(days=3)
    assert history.prune(now=now) == dict.fromkeys(
        ["stream_samples", "server_samples", "fleet_samples", "stream_rollups", "server_rollups", "streams", "alerts"],
        0,
    )


def _floor(value):
    return value.replace(second=0, microsecond=0)


# --- chart points ----------------------------------------------------------------------------------------


@pytest.fixture
def recent(server):
    """Two hours ago (hour-aligned): a stream sampled every 5 s for 3 minutes, viewers = sample index,
    bitrate in 1000 + 10 × index; the first two minutes rolled up."""
    base = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    cam = make_stream(server)
    history.write_samples(
        [stream_sample(cam, base + timedelta(seconds=5 * i), 1000.0 + 10 * i, 500.0, i, 30.0) for i in range(36)],
        [server_sample(server, base + timedelta(seconds=5 * i), i % 4 != 0, i, 100.0, 200.0, i % 3) for i in range(36)],
    )
    history.roll_up(now=base + timedelta(minutes=2, seconds=1))
    return cam, base


def iso(value):
    return value.astimezone(UTC).isoformat()


def test_fine_steps_read_the_samples(recent):
    cam, base = recent
    end = base + timedelta(minutes=3)
    assert history.plan_history(base, end) == history.HistoryPlan("samples", 1)
    points = history.stream_history(cam.pk, base, end)
    assert len(points) == 36
    assert points[7] == {"at": iso(base + timedelta(seconds=35)), "bitrate_in_kbps": 1070.0,
                         "bitrate_out_kbps": 500.0, "viewers": 7, "fps": 30.0}  # fmt: skip

    # 30-s buckets of 6 samples: averages of the rates, maximum of the viewers.
    points = history.stream_history(cam.pk, base, end, step_s=30)
    assert [p["at"] for p in points] == [iso(base + timedelta(seconds=30 * k)) for k in range(6)]
    assert points[1] == {"at": iso(base + timedelta(seconds=30)), "bitrate_in_kbps": 1085.0,
                         "bitrate_out_kbps": 500.0, "viewers": 11, "fps": 30.0}  # fmt: skip

    # Only the range asked for.
    points = history.stream_history(cam.pk, base + timedelta(seconds=60), base + timedelta(seconds=90), step_s=10)
    assert [p["viewers"] for p in points] == [13, 15, 17]


def test_minute_steps_read_the_rollups_and_the_minutes_not_rolled_yet(recent):
    cam, base = recent
    end = base + timedelta(minutes=3)
    assert history.plan_history(base, end, step_s=60) == history.HistoryPlan("rollups", 60)
    # Rolled minutes come from the rollups: change one to see it.
    StreamRollup.objects.filter(stream=cam, minute=base).update(bitrate_in_avg=1.0)
    points = history.stream_history(cam.pk, base, end, step_s=60)
    assert points == [
        {"at": iso(base), "bitrate_in_kbps": 1.0, "bitrate_out_kbps": 500.0, "viewers": 11, "fps": 30.0},
        {"at": iso(base + timedelta(minutes=1)), "bitrate_in_kbps": 1175.0, "bitrate_out_kbps": 500.0,
         "viewers": 23, "fps": 30.0},
        # The third minute is not rolled up yet: from its samples.
        {"at": iso(base + timedelta(minutes=2)), "bitrate_in_kbps": 1295.0, "bitrate_out_kbps": 500.0,
         "viewers": 35, "fps": 30.0},
    ]  # fmt: skip


def test_coarse_buckets_weight_rollups_by_their_samples(server):
    cam = make_stream(server)
    base = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    StreamRollup.objects.create(stream=cam, minute=base, samples=3, bitrate_in_avg=100.0, viewers_max=4, fps_avg=None)
    StreamRollup.objects.create(stream=cam, minute=base + timedelta(minutes=1), samples=1, bitrate_in_avg=500.0,
                                viewers_max=9, fps_avg=25.0)  # fmt: skip
    StreamRollup.objects.create(stream=cam, minute=base + timedelta(minutes=2), samples=12, bitrate_in_avg=7.0)
    points = history.stream_history(cam.pk, base, base + timedelta(minutes=4), step_s=120)
    assert points == [
        {"at": iso(base), "bitrate_in_kbps": 200.0, "bitrate_out_kbps": None, "viewers": 9, "fps": 25.0},
        {"at": iso(base + timedelta(minutes=2)), "bitrate_in_kbps": 7.0, "bitrate_out_kbps": None,
         "viewers": None, "fps": None},
    ]  # fmt: skip


def test_server_history(recent, server):
    _, base = recent
    points = history.server_history(server.pk, base, base + timedelta(minutes=3), step_s=60)
    assert [p["at"] for p in points] == [iso(base + timedelta(minutes=m)) for m in range(3)]
    assert points[0] == {"at": iso(base), "reachable_share": 0.75, "connections": 5.5, "bandwidth_in_kbps": 100.0,
                         "bandwidth_out_kbps": 200.0, "streams": 2}  # fmt: skip
    assert points[2]["connections"] == 29.5  # from the samples: not rolled up yet
    fine = history.server_history(server.pk, base, base + timedelta(seconds=20), step_s=5)
    assert [(p["reachable_share"], p["streams"]) for p in fine] == [(0.0, 0), (1.0, 1), (1.0, 2), (1.0, 0)]


def test_source_and_step_choice(settings):
    now = timezone.now()
    day = timedelta(days=1)
    # Past sample retention: rollups even for a fine step.
    settings.HISTORY_SAMPLES_HOURS = 1
    assert history.plan_history(now - timedelta(hours=2), now, step_s=5, now=now) == history.HistoryPlan("rollups", 60)
    settings.HISTORY_SAMPLES_HOURS = 48
    assert history.plan_history(now - timedelta(hours=2), now, step_s=5, now=now) == history.HistoryPlan("samples", 5)
    # 24 h: 1-minute points by default (1,440); a finer step asked for would exceed MAX_POINTS.
    assert history.plan_history(now - day, now, now=now) == history.HistoryPlan("rollups", 60)
    assert history.plan_history(now - day, now, step_s=5, now=now) == history.HistoryPlan("rollups", 60)
    # Rollups are bucketed by whole minutes; coarser steps asked for are kept.
    assert history.plan_history(now - day, now, step_s=90, now=now) == history.HistoryPlan("rollups", 120)
    assert history.plan_history(now - day, now, step_s=3600, now=now) == history.HistoryPlan("rollups", 3600)
    # 90 days: the finest nice step within MAX_POINTS.
    plan = history.plan_history(now - 90 * day, now, now=now)
    assert plan == history.HistoryPlan("rollups", 7200)
    assert 90 * 86400 / plan.step_s + 1 <= history.MAX_POINTS


def test_points_are_capped(server):
    cam = make_stream(server)
    base = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(days=3)
    StreamRollup.objects.bulk_create(
        [
            StreamRollup(stream=cam, minute=base + timedelta(minutes=m), samples=12, viewers_max=m)
            for m in range(3 * 1440)
        ]
    )
    points = history.stream_history(cam.pk, base, base + timedelta(days=3), step_s=60)
    assert len(points) == 3 * 1440 // 5  # 5-minute buckets: 864 points
    assert points[1]["viewers"] == 9


@pytest.mark.parametrize(
    ("start", "end", "step_s", "message"),
    [
        (T0, T0, None, "before"),
        (T0 + timedelta(seconds=1), T0, None, "before"),
        (T0.replace(tzinfo=None), T0 + timedelta(hours=1), None, "time zone"),
        (T0, T0 + timedelta(days=91), None, "90 days"),
        (T0, T0 + timedelta(hours=1), 0, "step_s"),
        (T0, T0 + timedelta(hours=1), -5, "step_s"),
        (T0, T0 + timedelta(hours=1), 86_401, "step_s"),
        (T0, T0 + timedelta(hours=1), 2.5, "step_s"),
        (T0, T0 + timedelta(hours=1), True, "step_s"),
    ],
)
def test_bad_arguments(server, start, end, step_s, message):
    cam = make_stream(server)
    with pytest.raises(ValueError, match=message):
        history.stream_history(cam.pk, start, end, step_s)
    with pytest.raises(ValueError, match=message):
        history.server_history(server.pk, start, end, step_s)
