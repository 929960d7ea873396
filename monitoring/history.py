"""Monitoring history: poll samples, their 1-minute rollups, pruning, and chart points.

* ``write_samples`` stores one poll cycle: one bulk insert per table.
* ``roll_up`` aggregates every complete minute of samples not yet rolled up into ``StreamRollup`` and
  ``ServerRollup`` with set-based ``INSERT … SELECT … GROUP BY … ON CONFLICT`` statements (run every
  minute by beat; idempotent; a late run catches up on every complete minute still within sample
  retention, an hour of minutes per statement; on PostgreSQL an advisory lock keeps runs from
  overlapping). It redoes the last REDO_MINUTES rolled minutes too, so samples written a little after
  their minute ended are counted (a rollup row is rewritten only if its sample count changed); a sample
  written later than that is kept as a sample but not rolled up.
* ``prune`` deletes samples older than ``HISTORY_SAMPLES_HOURS`` and rollups older than
  ``HISTORY_ROLLUP_DAYS``, ``PRUNE_BATCH`` rows per statement (each its own transaction in autocommit).
* ``stream_history`` / ``server_history`` return chart points, see ``plan_history`` for how the source
  and the step are chosen.

Bucketing and minute truncation are the only SQL that differs between PostgreSQL and SQLite (the
embedded dev mode); both are in ``_Dialect``. bench/history.py measures the write cost and a 24-h chart
query with 1,000 streams' history stored.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, Min, Model
from django.utils import timezone

from monitoring.models import Alert, FleetSample, ServerRollup, ServerSample, Stream, StreamRollup, StreamSample

MAX_POINTS = 2_000  # most points a history query returns (the step is made coarser to fit)
MIN_STEP_S = 1
MAX_STEP_S = 86_400
ROLLUP_STEP_S = 60  # resolution of the rollups
# Steps chosen when none is given or the one given would exceed MAX_POINTS: the finest that fits.
NICE_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
ROLL_UP_CHUNK = timedelta(hours=1)  # minutes aggregated per statement when catching up
REDO_MINUTES = 2  # last rolled minutes aggregated again (samples written late)
PRUNE_BATCH = 20_000  # rows deleted per statement

Source = Literal["samples", "rollups"]


# --- writing -------------------------------------------------------------------------------------------


def write_samples(stream_samples: Sequence[StreamSample], server_samples: Sequence[ServerSample]) -> None:
    """Store one poll cycle's samples (unsaved instances): one bulk insert per table, in one transaction
    (the caller's, if it has one). SQLite splits a bulk insert at its parameter limit."""
    with transaction.atomic(savepoint=False):
        if stream_samples:
            StreamSample.objects.bulk_create(stream_samples)
        if server_samples:
            ServerSample.objects.bulk_create(server_samples)


# --- rolling up ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RollupSpec:
    sample: type[Model]
    rollup: type[Model]
    key: str  # the owner's column, e.g. "stream_id"
    columns: tuple[tuple[str, str], ...]  # (rollup column, aggregate over sample columns), after key and minute


_STREAM_ROLLUP = _RollupSpec(
    StreamSample,
    StreamRollup,
    "stream_id",
    (
        ("samples", "count(*)"),
        ("bitrate_in_avg", "avg(bitrate_in_kbps)"),
        ("bitrate_in_min", "min(bitrate_in_kbps)"),
        ("bitrate_in_max", "max(bitrate_in_kbps)"),
        ("bitrate_out_avg", "avg(bitrate_out_kbps)"),
        ("viewers_avg", "avg(viewers)"),
        ("viewers_max", "max(viewers)"),
        ("fps_avg", "avg(fps)"),
    ),
)
_SERVER_ROLLUP = _RollupSpec(
    ServerSample,
    ServerRollup,
    "server_id",
    (
        ("samples", "count(*)"),
        ("reachable_share", "avg(CASE WHEN reachable THEN 1.0 ELSE 0.0 END)"),
        ("connections_avg", "avg(connections)"),
        ("bandwidth_in_avg", "avg(bandwidth_in_kbps)"),
        ("bandwidth_out_avg", "avg(bandwidth_out_kbps)"),
        ("streams_max", "max(streams)"),
    ),
)


def roll_up(now: datetime | None = None) -> int:
    """Aggregate every complete minute (ended by ``now``) of samples not yet rolled up; return the rollup
    rows written (inserted or updated). Running it again changes nothing. On PostgreSQL one run at a time:
    a run that starts while another is catching up returns 0 at once."""
    now = now or timezone.now()
    with _only_run("roll_up") as running:
        return _roll_up(now) if running else 0


def _roll_up(now: datetime) -> int:
    end = _floor_minute(now)
    earliest = _floor_minute(now - timedelta(hours=settings.HISTORY_SAMPLES_HOURS))
    written = 0
    for spec in (_STREAM_ROLLUP, _SERVER_ROLLUP):
        last = spec.rollup._default_manager.aggregate(last=Max("minute"))["last"]
        if last is not None:
            start = last - timedelta(minutes=REDO_MINUTES - 1)
        else:
            first = spec.sample._default_manager.filter(at__gte=earliest).aggregate(first=Min("at"))["first"]
            if first is None:
                continue
            start = _floor_minute(first)
        start = max(start, earliest)
        while start < end:
            chunk_end = min(end, start + ROLL_UP_CHUNK)
            written += _roll_up_window(spec, start, chunk_end)
            start = chunk_end
    return written


def _roll_up_window(spec: _RollupSpec, start: datetime, end: datetime) -> int:
    dialect = _Dialect.current()
    qn = connection.ops.quote_name
    rollup_table, sample_table = qn(spec.rollup._meta.db_table), qn(spec.sample._meta.db_table)
    names = [spec.key, "minute", *(name for name, _ in spec.columns)]
    minute, at = dialect.minute(qn("at")), qn("at")
    sets = ", ".join(f"{qn(name)} = excluded.{qn(name)}" for name, _ in spec.columns)
    sql = (
        f"INSERT INTO {rollup_table} ({', '.join(qn(n) for n in names)}) "  # noqa: S608 (names from the models)
        f"SELECT {qn(spec.key)}, {minute}, {', '.join(aggregate for _, aggregate in spec.columns)} "
        f"FROM {sample_table} WHERE {at} >= %s AND {at} < %s "
        f"GROUP BY {qn(spec.key)}, {minute} "
        f"ON CONFLICT ({qn(spec.key)}, {qn('minute')}) DO UPDATE SET {sets} "
        f"WHERE {rollup_table}.{qn('samples')} <> excluded.{qn('samples')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [_db_datetime(start), _db_datetime(end)])
        return max(cursor.rowcount, 0)


# --- pruning ---------------------------------------------------------------------------------------------


def prune(now: datetime | None = None) -> dict[str, int]:
    """Delete samples older than HISTORY_SAMPLES_HOURS and rollups older than HISTORY_ROLLUP_DAYS,
    PRUNE_BATCH rows per statement, then the streams not live and not seen for HISTORY_ROLLUP_DAYS (their
    history is gone by then) and the alerts ended that long ago; return the rows deleted per table."""
    now = now or timezone.now()
    samples_cutoff = now - timedelta(hours=settings.HISTORY_SAMPLES_HOURS)
    rollups_cutoff = now - timedelta(days=settings.HISTORY_ROLLUP_DAYS)
    deleted = {
        "stream_samples": _delete_before(StreamSample, "at", samples_cutoff),
        "server_samples": _delete_before(ServerSample, "at", samples_cutoff),
        "fleet_samples": _delete_before(FleetSample, "at", samples_cutoff),
        "stream_rollups": _delete_before(StreamRollup, "minute", rollups_cutoff),
        "server_rollups": _delete_before(ServerRollup, "minute", rollups_cutoff),
    }
    gone = Stream.objects.filter(live=False, last_seen__lt=rollups_cutoff)
    deleted["streams"] = gone.delete()[1].get(Stream._meta.label, 0)
    ended = Alert.objects.filter(state__in=[Alert.State.CLOSED, Alert.State.CANCELLED], closed_at__lt=rollups_cutoff)
    deleted["alerts"] = ended.delete()[1].get(Alert._meta.label, 0)  # their notices go with them
    return deleted


def _delete_before(model: type[Model], field: str, cutoff: datetime) -> int:
    manager = model._default_manager
    total = 0
    while True:
        batch = manager.filter(**{f"{field}__lt": cutoff}).values("pk")[:PRUNE_BATCH]
        deleted, _ = manager.filter(pk__in=batch).delete()
        total += deleted
        if deleted < PRUNE_BATCH:
            return total


# --- chart points ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryPlan:
    """Where a history query reads and how coarse its points are."""

    source: Source
    step_s: int


def plan_history(
    start: datetime, end: datetime, step_s: int | None = None, *, now: datetime | None = None
) -> HistoryPlan:
    """Validate a history query and choose its source and step.

    * The step: ``step_s`` if given, else the finest of NICE_STEPS_S; in both cases made coarser (the
      finest of NICE_STEPS_S that fits) if the range would need more than MAX_POINTS points.
    * The source: the raw samples if the step is under 60 s and ``start`` is within sample retention,
      else the 1-minute rollups (the step then rounded up to a whole number of minutes).

    Raises ``ValueError`` for naive datetimes, ``start >= end``, a range longer than rollup retention, or
    a step that is not a whole number of seconds in [MIN_STEP_S, MAX_STEP_S].
    """
    if timezone.is_naive(start) or timezone.is_naive(end):
        raise ValueError("start and end must carry a time zone.")
    if start >= end:
        raise ValueError("start must be before end.")
    span_s = (end - start).total_seconds()
    max_days = settings.HISTORY_ROLLUP_DAYS
    if span_s > max_days * 86_400:
        raise ValueError(f"The range cannot exceed {max_days} days (rollup retention).")
    if step_s is not None and (
        isinstance(step_s, bool) or not isinstance(step_s, int) or not MIN_STEP_S <= step_s <= MAX_STEP_S
    ):
        raise ValueError(f"step_s must be a whole number of seconds from {MIN_STEP_S} to {MAX_STEP_S}.")
    # Buckets are aligned on the epoch, so a range of span_s covers at most ceil(span_s / step) + 1 of them.
    finest = next(s for s in NICE_STEPS_S if math.ceil(span_s / s) + 1 <= MAX_POINTS)
    step = max(step_s or 0, finest)
    now = now or timezone.now()
    if step < ROLLUP_STEP_S and start >= now - timedelta(hours=settings.HISTORY_SAMPLES_HOURS):
        return HistoryPlan("samples", step)
    return HistoryPlan("rollups", math.ceil(step / ROLLUP_STEP_S) * ROLLUP_STEP_S)


@dataclass(frozen=True)
class _Figure:
    name: str  # the point's key
    how: Literal["avg", "max"]
    rollup: str  # SQL over the rollup's columns
    sample: str  # SQL over the sample's columns


@dataclass(frozen=True)
class _HistorySpec:
    sample: type[Model]
    rollup: type[Model]
    key: str
    figures: tuple[_Figure, ...]


_STREAM_HISTORY = _HistorySpec(
    StreamSample,
    StreamRollup,
    "stream_id",
    (
        _Figure("bitrate_in_kbps", "avg", "bitrate_in_avg", "bitrate_in_kbps"),
        _Figure("bitrate_out_kbps", "avg", "bitrate_out_avg", "bitrate_out_kbps"),
        _Figure("viewers", "max", "viewers_max", "viewers"),
        _Figure("fps", "avg", "fps_avg", "fps"),
    ),
)
_SERVER_HISTORY = _HistorySpec(
    ServerSample,
    ServerRollup,
    "server_id",
    (
        _Figure("reachable_share", "avg", "reachable_share", "CASE WHEN reachable THEN 1.0 ELSE 0.0 END"),
        _Figure("connections", "avg", "connections_avg", "connections"),
        _Figure("bandwidth_in_kbps", "avg", "bandwidth_in_avg", "bandwidth_in_kbps"),
        _Figure("bandwidth_out_kbps", "avg", "bandwidth_out_avg", "bandwidth_out_kbps"),
        _Figure("streams", "max", "streams_max", "streams"),
    ),
)


def stream_history(stream_id: int, start: datetime, end: datetime, step_s: int | None = None) -> list[dict[str, Any]]:
    """A stream's chart points in [start, end), oldest first: ``{"at": ISO 8601 start of the bucket,
    "bitrate_in_kbps", "bitrate_out_kbps", "fps": averages, "viewers": maximum}``. Only buckets holding
    data are returned (a gap in the data is a gap in the points); see ``plan_history`` for the step."""
    return _history(_STREAM_HISTORY, stream_id, start, end, step_s)


def server_history(server_id: int, start: datetime, end: datetime, step_s: int | None = None) -> list[dict[str, Any]]:
    """A server's chart points in [start, end), oldest first: ``{"at", "reachable_share" (0 to 1),
    "connections", "bandwidth_in_kbps", "bandwidth_out_kbps": averages, "streams": maximum}``."""
    return _history(_SERVER_HISTORY, server_id, start, end, step_s)


def _history(
    spec: _HistorySpec, owner_id: int, start: datetime, end: datetime, step_s: int | None
) -> list[dict[str, Any]]:
    """Buckets of ``plan.step_s`` seconds aligned on the epoch. Averages are weighted by sample count, so
    a bucket of rollups averages like the samples it stands for. Reading rollups, the samples after the
    owner's last rollup (minutes not rolled up yet) are added, so a chart reaches the present."""
    plan = plan_history(start, end, step_s)
    dialect = _Dialect.current()
    qn = connection.ops.quote_name
    parts, params = [], []
    samples_from = start
    if plan.source == "rollups":
        cols = ", ".join(f"{f.rollup} AS {qn(f.name)}" for f in spec.figures)
        parts.append(
            f"SELECT {dialect.bucket(qn('minute'))} AS b, {qn('samples')} AS w, {cols} "  # noqa: S608
            f"FROM {qn(spec.rollup._meta.db_table)} WHERE {qn(spec.key)} = %s AND {qn('minute')} >= %s "
            f"AND {qn('minute')} < %s"
        )
        params += [plan.step_s, owner_id, _db_datetime(start), _db_datetime(end)]
        last = (
            spec.rollup._default_manager.filter(**{spec.key: owner_id, "minute__lt": end})
            .aggregate(last=Max("minute"))
            .get("last")
        )
        if last is not None:
            samples_from = max(start, last + timedelta(seconds=ROLLUP_STEP_S))
    if samples_from < end:
        cols = ", ".join(f"{f.sample} AS {qn(f.name)}" for f in spec.figures)
        parts.append(
            f"SELECT {dialect.bucket(qn('at'))} AS b, 1 AS w, {cols} "  # noqa: S608
            f"FROM {qn(spec.sample._meta.db_table)} WHERE {qn(spec.key)} = %s AND {qn('at')} >= %s AND {qn('at')} < %s"
        )
        params += [plan.step_s, owner_id, _db_datetime(samples_from), _db_datetime(end)]
    outer = []
    for f in spec.figures:
        name = qn(f.name)
        if f.how == "max":
            outer.append(f"max({name})")
        else:
            outer.append(f"sum({name} * w) / sum(CASE WHEN {name} IS NOT NULL THEN w END)")
    sql = f"SELECT b, {', '.join(outer)} FROM ({' UNION ALL '.join(parts)}) AS p GROUP BY b ORDER BY b"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    points = []
    for bucket, *values in rows:
        point: dict[str, Any] = {"at": datetime.fromtimestamp(int(bucket) * plan.step_s, tz=UTC).isoformat()}
        for f, value in zip(spec.figures, values, strict=True):
            point[f.name] = value if value is None or f.how == "max" else round(float(value), 3)
        points.append(point)
    return points


# --- SQL dialects ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dialect:
    minute_sql: str  # {col} truncated to its minute, as the column's own type
    bucket_sql: str  # the epoch second of {col} divided by a step parameter (%s), floored, as an integer

    @staticmethod
    def current() -> _Dialect:
        return _SQLITE if connection.vendor == "sqlite" else _POSTGRES

    def minute(self, column: str) -> str:
        return self.minute_sql.format(col=column)

    def bucket(self, column: str) -> str:
        return self.bucket_sql.format(col=column)


_POSTGRES = _Dialect(
    minute_sql="date_trunc('minute', {col})",  # in the session's time zone, UTC under Django
    bucket_sql="floor(extract(epoch FROM {col}) / %s)::bigint",
)
# SQLite stores datetimes as UTC text "YYYY-MM-DD HH:MM:SS[.ffffff]" ("%%": the driver's placeholders).
_SQLITE = _Dialect(
    minute_sql="strftime('%%Y-%%m-%%d %%H:%%M:00', {col})",
    bucket_sql="(CAST(strftime('%%s', {col}) AS INTEGER) / %s)",
)


@contextmanager
def _only_run(name: str) -> Iterator[bool]:
    """Whether this is the only run of ``name`` (a PostgreSQL advisory lock, held until the transaction
    ends inside an atomic block, else until the block exits); always true on SQLite (one process)."""
    if connection.vendor != "postgresql":
        yield True
        return
    key = int.from_bytes(hashlib.sha256(f"tally.history.{name}".encode()).digest()[:8], "big", signed=True)
    scope = "_xact" if connection.in_atomic_block else ""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_try_advisory{scope}_lock(%s)", [key])
        (locked,) = cursor.fetchone()
    try:
        yield bool(locked)
    finally:
        if locked and not scope:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


def _floor_minute(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)


def _db_datetime(value: datetime) -> Any:
    """A datetime as a raw query parameter (SQLite compares UTC text)."""
    return connection.ops.adapt_datetimefield_value(value)
