"""Monitoring history on PostgreSQL: the cost of writing samples and the speed of a 24-h chart query.

Starts a throwaway PostgreSQL, migrates, creates 1,000 streams on 5 servers (Django runs in this process
with the production settings and one persistent connection), then:
1. stores 24 h of history: 5-s samples for every stream and server, generated server-side with
   generate_series one hour per statement (as a bulk load would: the two secondary sample indexes are
   dropped during the load and rebuilt after it, the foreign key checks skipped), rolled up with
   ``history.roll_up`` (the catch-up path, timed), then ANALYZE;
2. times ``history.stream_history`` over the last 24 h (default step: 1-minute points, from the rollups
   plus the minutes not rolled yet) for CHART_STREAMS random streams, each once after one warm-up query
   on another stream; and over the last hour (5-s points from the samples), as an extra;
3. simulates CYCLES poll cycles back-to-back on top of that history, at simulated 5-s spacing (no
   sleeping): each builds 1,000 StreamSample and 5 ServerSample instances and calls
   ``history.write_samples``; after every 12th cycle (a simulated minute) ``history.roll_up`` runs. The
   CPU time of this process and of its PostgreSQL backend (/proc/<pid>/stat utime+stime) per cycle,
   divided by the 5-s poll interval, is ``write_cpu_share`` (a share of one core).
   ``write_cpu_share_all_pg`` counts every process of the cluster instead of the backend alone
   (checkpointer, WAL writer, autovacuum: the postmaster's reaped-children times included).
Prints one JSON object last: {"streams", "write_cpu_share", "chart_query_ms", ...}.
Targets: write_cpu_share <= 0.10, chart_query_ms <= 100.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import time
from datetime import datetime, timedelta
from pathlib import Path

from _services import console_env, postgres

N_STREAMS = 1_000
N_SERVERS = 5
HOURS = 24
POLL_S = 5
CYCLES = int(os.environ.get("BENCH_CYCLES", "120"))
CHART_STREAMS = 20
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env, DJANGO_SETTINGS_MODULE="console.settings", TALLY_DB_PERSISTENT="1")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def proc_cpu_s(pid: int, children: bool = False) -> float:
    """CPU seconds (user + system) of a process; with ``children``, plus its reaped children's."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLOCK_TICK


def cluster_cpu_s(postmaster: int) -> float:
    """CPU seconds of the whole cluster: the postmaster (with its reaped children) and its live children."""
    total = proc_cpu_s(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) == postmaster:
                total += (int(stat[11]) + int(stat[12])) / CLOCK_TICK
        except (OSError, IndexError):
            continue  # exited meanwhile
    return total


def seed() -> tuple[list[int], list[int]]:
    from django.utils import timezone

    from monitoring.models import Stream
    from streams.models import Server

    servers = [
        Server.objects.create(name=f"bench-{i}", host="127.0.0.1", stat_url="http://127.0.0.1:9/stat")
        for i in range(N_SERVERS)
    ]
    now = timezone.now()
    streams = Stream.objects.bulk_create(
        Stream(server=servers[i % N_SERVERS], app="live", name=f"cam-{i}", live=True, first_seen=now, last_seen=now)
        for i in range(N_STREAMS)
    )
    return [s.pk for s in servers], [s.pk for s in streams]


def store_history(t0: datetime) -> dict[str, float]:
    """24 h of 5-s samples ending at t0, generated server-side, then rolled up; returns timings."""
    from django.db import connection

    from monitoring import history
    from monitoring.models import ServerSample, StreamSample

    started = time.monotonic()
    with connection.schema_editor() as editor:
        for index in StreamSample._meta.indexes:
            editor.remove_index(StreamSample, index)
    with connection.cursor() as cursor:
        # The generated rows reference existing streams and servers: skip the per-row foreign key checks.
        cursor.execute("SET session_replication_role = replica")
        for hour in range(HOURS):
            begin = t0 - timedelta(hours=HOURS - hour)
            last = begin + timedelta(hours=1) - timedelta(seconds=POLL_S)
            # Per stream a base bitrate of 1.5 to 7 Mb/s with noise, a viewer count, 25/30/60 fps.
            cursor.execute(
                """
                INSERT INTO monitoring_streamsample
                    (stream_id, at, bitrate_in_kbps, bitrate_out_kbps, viewers, fps, dropped_frames)
                SELECT s.id, t, b.rate, b.rate * b.viewers, b.viewers, (ARRAY[25, 30, 60])[1 + s.id %% 3], 0
                FROM generate_series(%s::timestamptz, %s::timestamptz, interval '5 seconds') AS t
                CROSS JOIN monitoring_stream AS s
                CROSS JOIN LATERAL (
                    SELECT 1500 + (s.id %% 12) * 500 + random() * 300 AS rate,
                           (s.id %% 200 + floor(random() * 20))::int AS viewers
                    WHERE t IS NOT NULL
                ) AS b
                """,
                [begin, last],
            )
            cursor.execute(
                """
                INSERT INTO monitoring_serversample
                    (server_id, at, reachable, connections, bandwidth_in_kbps, bandwidth_out_kbps, streams, poll_ms)
                SELECT v.id, t, true, 4000 + floor(random() * 100)::int, 800000 + random() * 1000,
                       4e7 + random() * 1e5, 200, 20 + random() * 10
                FROM generate_series(%s::timestamptz, %s::timestamptz, interval '5 seconds') AS t
                CROSS JOIN streams_server AS v
                """,
                [begin, last],
            )
            print(f"  generated hour {hour + 1}/{HOURS} ({time.monotonic() - started:.0f} s)", flush=True)
        cursor.execute("RESET session_replication_role")
    loaded = time.monotonic()
    with connection.schema_editor() as editor:
        for index in StreamSample._meta.indexes:
            editor.add_index(StreamSample, index)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE monitoring_streamsample")
        cursor.execute("ANALYZE monitoring_serversample")
    indexed = time.monotonic()
    rollups = history.roll_up(now=t0)
    rolled = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE monitoring_streamrollup")
        cursor.execute("VACUUM ANALYZE monitoring_serverrollup")
        cursor.execute("SELECT pg_total_relation_size('monitoring_streamsample')")
        (samples_bytes,) = cursor.fetchone()
        cursor.execute("SELECT pg_total_relation_size('monitoring_streamrollup')")
        (rollups_bytes,) = cursor.fetchone()
    return {
        "stream_samples": StreamSample.objects.count(),
        "server_samples": ServerSample.objects.count(),
        "rollup_rows_written": rollups,
        "generate_s": round(loaded - started, 1),
        "index_s": round(indexed - loaded, 1),
        "roll_up_catch_up_s": round(rolled - indexed, 1),
        "samples_mb": round(samples_bytes / 2**20),
        "rollups_mb": round(rollups_bytes / 2**20),
    }


def chart_queries(stream_ids: list[int], t0: datetime, span: timedelta) -> tuple[list[float], int]:
    """Milliseconds of each ``stream_history(stream, t0 - span, t0)`` (default step), and the points of one."""
    from monitoring import history

    picked = random.Random(7).sample(stream_ids, CHART_STREAMS + 1)
    history.stream_history(picked[0], t0 - span, t0)  # warm-up: this process's first query of the kind
    timings, points = [], 0
    for stream_id in picked[1:]:
        started = time.perf_counter()
        result = history.stream_history(stream_id, t0 - span, t0)
        timings.append((time.perf_counter() - started) * 1000)
        points = len(result)
    return timings, points


def sustained_writes(server_ids: list[int], stream_ids: list[int], t0: datetime) -> dict[str, float]:
    from django.db import connection

    from monitoring import history
    from monitoring.models import ServerSample, StreamSample

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (backend,) = cursor.fetchone()
    postmaster = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
    rng = random.Random(1)
    rates = {sid: 1500 + (sid % 12) * 500 for sid in stream_ids}
    walls, rollups = [], 0
    py0, pg0, all0 = time.process_time(), proc_cpu_s(backend), cluster_cpu_s(postmaster)
    for cycle in range(CYCLES):
        started = time.perf_counter()
        at = t0 + timedelta(seconds=POLL_S * cycle)
        stream_samples = []
        for sid in stream_ids:
            rate, viewers = rates[sid] + rng.random() * 300, sid % 200 + rng.randrange(20)
            stream_samples.append(
                StreamSample(stream_id=sid, at=at, bitrate_in_kbps=rate, bitrate_out_kbps=rate * viewers,
                             viewers=viewers, fps=30.0, dropped_frames=0)
            )  # fmt: skip
        server_samples = [
            ServerSample(server_id=sid, at=at, reachable=True, connections=4000, bandwidth_in_kbps=8e5,
                         bandwidth_out_kbps=4e7, streams=200, poll_ms=25.0)
            for sid in server_ids
        ]  # fmt: skip
        history.write_samples(stream_samples, server_samples)
        if (cycle + 1) % (60 // POLL_S) == 0:
            rollups += history.roll_up(now=at + timedelta(seconds=POLL_S))
        walls.append((time.perf_counter() - started) * 1000)
    py_s = time.process_time() - py0
    pg_s = proc_cpu_s(backend) - pg0
    all_s = cluster_cpu_s(postmaster) - all0
    return {
        "cycles": CYCLES,
        "python_cpu_ms_per_cycle": round(py_s / CYCLES * 1000, 1),
        "backend_cpu_ms_per_cycle": round(pg_s / CYCLES * 1000, 1),
        "write_cpu_share": round((py_s + pg_s) / CYCLES / POLL_S, 4),
        "write_cpu_share_all_pg": round((py_s + all_s) / CYCLES / POLL_S, 4),
        "cycle_wall_ms_median": round(statistics.median(walls), 1),
        "cycle_wall_ms_max": round(max(walls), 1),
        "roll_ups": CYCLES // (60 // POLL_S),
        "rollup_rows_written_while_writing": rollups,
    }


def main() -> None:
    with postgres() as database_url, console_env(database_url) as env:
        setup_django(env)
        from django.db import connection
        from django.utils import timezone

        server_ids, stream_ids = seed()
        t0 = timezone.now().replace(second=0, microsecond=0)
        print(f"{N_STREAMS} streams on {N_SERVERS} servers; storing {HOURS} h of 5-s samples ending {t0:%H:%M} UTC")
        stored = store_history(t0)
        print(f"stored {stored['stream_samples']:,} stream samples ({stored['samples_mb']} MB with indexes) and "
              f"{stored['server_samples']:,} server samples in {stored['generate_s']} s (+{stored['index_s']} s "
              f"indexing); roll_up caught up {stored['rollup_rows_written']:,} rollup rows in "
              f"{stored['roll_up_catch_up_s']} s ({stored['rollups_mb']} MB)")  # fmt: skip
        day_ms, day_points = chart_queries(stream_ids, t0, timedelta(hours=24))
        hour_ms, hour_points = chart_queries(stream_ids, t0, timedelta(hours=1))
        print(f"24-h chart ({day_points} points) over {CHART_STREAMS} streams: "
              f"median {statistics.median(day_ms):.1f} ms, max {max(day_ms):.1f} ms")  # fmt: skip
        print(f"1-h chart ({hour_points} points, from samples): median {statistics.median(hour_ms):.1f} ms, "
              f"max {max(hour_ms):.1f} ms")  # fmt: skip
        writes = sustained_writes(server_ids, stream_ids, t0)
        print(f"{CYCLES} poll cycles of {N_STREAMS} stream + {N_SERVERS} server samples, roll_up every 12: "
              f"python {writes['python_cpu_ms_per_cycle']} ms + backend {writes['backend_cpu_ms_per_cycle']} ms CPU "
              f"per cycle = {writes['write_cpu_share']:.3f} of a core per 5-s interval "
              f"({writes['write_cpu_share_all_pg']:.3f} counting every PostgreSQL process); wall per cycle "
              f"median {writes['cycle_wall_ms_median']} ms, max {writes['cycle_wall_ms_max']} ms")  # fmt: skip
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            (pg_version,) = cursor.fetchone()
        connection.close()
    print(json.dumps({
        "streams": N_STREAMS,
        "write_cpu_share": writes["write_cpu_share"],
        "chart_query_ms": round(statistics.median(day_ms), 2),
        "chart_query_ms_max": round(max(day_ms), 2),
        "chart_points": day_points,
        "chart_streams_timed": CHART_STREAMS,
        "chart_1h_ms": round(statistics.median(hour_ms), 2),
        "chart_1h_points": hour_points,
        "servers": N_SERVERS,
        "history_hours": HOURS,
        "sample_interval_s": POLL_S,
        **stored,
        **{k: v for k, v in writes.items() if k != "write_cpu_share"},
        "postgres": pg_version, "cpus": os.cpu_count(), "machine": platform.machine(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
