"""What a poll cycle changes: server health, the live streams, their history, and the compact updates
pushed to dashboards.

``apply_cycle`` takes the snapshots of one cycle and does everything in a few set-based queries (all
statuses, streams and open sessions of the polled servers are read at once; rows are written in bulk),
so one worker keeps up with hundreds of servers.

Rules:
- **Health** has hysteresis: a failed poll makes an up server *degraded*; HEALTH_DOWN_AFTER failed polls
  in a row make it *down*; a down server is *up* again after HEALTH_UP_AFTER good polls in a row (a
  degraded one at the first). Every change is a ``HealthTransition`` and a ``server.health`` event.
- **Streams** are identified by (server, app, name). A stream publishing in a snapshot is live. A live
  stream absent from a snapshot stops, unless nginx-rtmp's callbacks still hold an open publish session
  for it that was heard from (publish or on_update) within RELOAD_GRACE_S: after a reload, streams on
  the old worker vanish from /stat while they go on (see ../shared/lab/nginx-rtmp/README.md). An
  unreachable snapshot changes no stream: nothing is known.
- **Events without duplicates**: the callbacks already announced a start (``publish.started``) when an
  open session matches the stream's publisher client id, and a stop (``publish.stopped``) when the
  stream's last session was closed by a callback. Polls announce only what callbacks did not:
  ``stream.started`` / ``stream.stopped`` with ``"source": "poll"``.
- **Several nginx workers**: /stat answers from whichever worker took the connection, so the worker
  pid alternates between polls (A, B, A). That is detected and kept as a warning on the server status.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from monitoring import alerting, history, live
from monitoring.models import Health, HealthTransition, ServerSample, ServerStatus, Stream, StreamSample
from monitoring.snapshots import ServerSnapshot, StreamSnapshot
from streams.models import PublishSession

log = logging.getLogger(__name__)

WORKER_PIDS_KEPT = 6
MAX_UPTIME_S = 10 * 365 * 86400.0
# A stream figure must move this much (relative) before a poll pushes it again.
BITRATE_CHANGE = 0.10
CHART_FIELDS = ("bitrate_in_kbps", "bitrate_out_kbps", "fps", "viewers")  # a stream page's live tail
PUSHED_FIELDS = ("bitrate_in_kbps", "bitrate_out_kbps", "viewers", "fps", "width", "height", "video_codec",
                 "audio_codec", "dropped_frames", "avsync_ms")  # fmt: skip


@dataclass
class CycleOutcome:
    """What one cycle did, for logs, metrics and tests."""

    servers: int = 0
    reachable: int = 0
    started: list[int] = field(default_factory=list)  # stream ids
    stopped: list[int] = field(default_factory=list)
    transitions: list[tuple[int, str, str]] = field(default_factory=list)  # (server id, from, to)


def next_health(status: ServerStatus, reachable: bool) -> str:
    """The health after one more poll (``status`` already counts it in its consecutive counters)."""
    current = status.health
    if reachable:
        if current == Health.DOWN and status.consecutive_successes < settings.HEALTH_UP_AFTER:
            return Health.DOWN
        return Health.UP
    if status.consecutive_failures >= settings.HEALTH_DOWN_AFTER:
        return Health.DOWN
    return Health.DOWN if current == Health.DOWN else Health.DEGRADED


def storable(value: Any) -> Any:
    """``value`` with NUL characters removed from every string: PostgreSQL text and jsonb refuse them,
    and a server's answer (a Wowza stream name, say) may carry one."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    return value


def _app(text: str) -> str:
    return storable(text)[: Stream._meta.get_field("app").max_length]


def _name(text: str) -> str:
    return storable(text)[: Stream._meta.get_field("name").max_length]


def multi_worker_warning(pids: Sequence[int]) -> str:
    """A warning when the worker pids of recent polls alternate (A, B, A): more than one nginx worker."""
    seen: list[int] = []
    for pid in pids:
        if seen and pid != seen[-1] and pid in seen:
            return (
                f"/stat answered from {len(set(pids))} different nginx worker processes in the last {len(pids)}"
                " polls: it shows one worker's streams only. Set worker_processes 1 on this server."
            )
        seen.append(pid)
    return ""


def _changed(old: dict[str, Any] | None, new: StreamSnapshot) -> dict[str, Any]:
    """The pushed figures of ``new`` that differ enough from ``old``."""
    changes = {}
    for name in PUSHED_FIELDS:
        value = getattr(new, name)
        before = (old or {}).get(name)
        if value == before:
            continue
        small = isinstance(value, float) and isinstance(before, int | float) and before
        if name.startswith("bitrate") and small and abs(value - before) / before < BITRATE_CHANGE:
            continue
        changes[name] = value
    return changes


StreamMessage = tuple[Stream, str, dict[str, Any], bool]  # stream, type, payload, also to fleet + server
Message = tuple[str, str, dict[str, Any]]  # group, type, payload
Result = tuple[int, ServerSnapshot, float]  # server id, snapshot, poll duration in ms


def apply_cycle(results: Sequence[Result], now: datetime) -> CycleOutcome:
    """Apply one poll cycle: ``results`` are (server id, snapshot, poll duration in ms)."""
    return _Cycle(results, now).apply()


class _Cycle:
    """One cycle's reads, decisions and pending writes and messages."""

    def __init__(self, results: Sequence[Result], now: datetime) -> None:
        self.results = results
        self.now = now
        self.outcome = CycleOutcome(servers=len(results))
        server_ids = [server_id for server_id, _, _ in results]
        self.statuses = {s.server_id: s for s in ServerStatus.objects.filter(server_id__in=server_ids)}
        names = {_name(stream.name) for _, snapshot, _ in results for stream in snapshot.streams}
        self.streams: dict[tuple[int, str, str], Stream] = {
            (s.server_id, s.app, s.name): s
            for s in Stream.objects.filter(server_id__in=server_ids).filter(Q(live=True) | Q(name__in=names))
        }
        self.open_sessions = list(
            PublishSession.objects.filter(server_id__in=server_ids, ended__isnull=True).values_list(
                "server_id", "app_name", "public_name", "client_id", "last_update_at", "started", "id", "bytes_in"
            )
        )
        self.sessions_of: dict[int, list[tuple[Any, ...]]] = {}
        for row in self.open_sessions:
            self.sessions_of.setdefault(row[0], []).append(row)
        self.live_of: dict[int, list[Stream]] = {}
        for stream in self.streams.values():
            if stream.live:
                self.live_of.setdefault(stream.server_id, []).append(stream)
        self.new_statuses: list[ServerStatus] = []
        self.new_streams: list[Stream] = []
        self.changed_streams: list[Stream] = []
        self.started: list[Stream] = []
        self.stopped: list[Stream] = []
        self.server_samples: list[ServerSample] = []
        self.stream_samples: list[tuple[Stream, StreamSnapshot]] = []
        self.messages: list[Message] = []
        self.stream_messages: list[StreamMessage] = []

    def apply(self) -> CycleOutcome:
        for server_id, snapshot, duration_ms in self.results:
            status = self.statuses.get(server_id)
            if status is None:
                status = self.statuses[server_id] = ServerStatus(server_id=server_id)
                self.new_statuses.append(status)
            self._health(status, snapshot, duration_ms)
            self.server_samples.append(_server_sample(server_id, snapshot, duration_ms, self.now))
            if snapshot.reachable:
                self.outcome.reachable += 1
                self._streams(server_id, snapshot)
        self._stop_messages()
        self._write()
        for stream in self.stopped:  # polls no longer show it (and no callback session vouches for it)
            alerting.stream_dropped(stream.server_id, stream.app, stream.name, self.now)
        self.outcome.started = [stream.pk for stream in self.started]
        self._chart_figures()
        for group, message_type, payload in self.messages + _stream_messages(self.stream_messages):
            live.publish(group, message_type, payload)
        return self.outcome

    def _chart_figures(self) -> None:
        """Give each ``server.status`` its live streams' chart figures: a stream page appends one point per
        poll from it (one message per server and cycle, instead of one per stream)."""
        figures: dict[int, list[dict[str, Any]]] = {}
        for stream, snap in self.stream_samples:
            figures.setdefault(stream.server_id, []).append(
                {"stream": stream.pk, **{name: getattr(snap, name) for name in CHART_FIELDS}}
            )
        for _, message_type, payload in self.messages:
            if message_type == "server.status" and "error" not in payload:
                payload["streams"] = figures.get(payload["server"], [])

    def _stop_messages(self) -> None:
        """A ``stream.stopped`` per stopped stream, to the fleet too unless a callback closed its session
        since the stream was last seen (``publish.stopped`` went out then): one query for the cycle."""
        if not self.stopped:
            return
        closed = PublishSession.objects.filter(
            server_id__in={s.server_id for s in self.stopped}, ended__gte=min(s.last_seen for s in self.stopped)
        ).values_list("server_id", "app_name", "public_name", "ended")
        last_closed: dict[tuple[int, str, str], datetime] = {}
        for server_id, app, name, ended in closed:
            key = (server_id, app, name)
            if ended is not None and (key not in last_closed or ended > last_closed[key]):
                last_closed[key] = ended
        for stream in self.stopped:
            ended = last_closed.get((stream.server_id, stream.app, stream.name))
            announced = ended is not None and ended >= stream.last_seen
            payload = {"server": stream.server_id, "app": stream.app, "name": stream.name, "source": "poll"}
            self.stream_messages.append((stream, "stream.stopped", payload, not announced))

    def _write(self) -> None:
        errors = {server_id: storable(snapshot.error)[:300] for server_id, snapshot, _ in self.results}
        with transaction.atomic():
            ServerStatus.objects.bulk_create(self.new_statuses)
            ServerStatus.objects.bulk_update(
                [s for s in self.statuses.values() if s not in self.new_statuses],
                ["health", "health_since", "consecutive_failures", "consecutive_successes", "last_poll_at",
                 "last_ok_at", "last_error", "last_poll_ms", "polls_total", "poll_errors_total", "snapshot",
                 "recent_worker_pids", "warning"],
                batch_size=200,
            )  # fmt: skip
            HealthTransition.objects.bulk_create(
                HealthTransition(server_id=sid, at=self.now, from_health=old, to_health=new, reason=errors[sid])
                for sid, old, new in self.outcome.transitions
            )
            Stream.objects.bulk_create(self.new_streams)
            changed = [s for s in dict.fromkeys(self.changed_streams) if s not in self.new_streams]
            Stream.objects.bulk_update(
                changed, ["live", "live_since", "last_seen", "missing_since", "latest"], batch_size=500
            )
            history.write_samples(
                [_stream_sample(stream, snap, self.now) for stream, snap in self.stream_samples], self.server_samples
            )
            _record_session_bytes(self.results, self.open_sessions)

    def _health(self, status: ServerStatus, snapshot: ServerSnapshot, duration_ms: float) -> None:
        now = self.now
        status.polls_total += 1
        status.last_poll_at = now
        status.last_poll_ms = round(duration_ms, 1)
        if snapshot.reachable:
            status.consecutive_successes += 1
            status.consecutive_failures = 0
            status.last_ok_at = now
            status.last_error = ""
            status.snapshot = storable(snapshot.to_json())
            if snapshot.worker_pid is not None:
                status.recent_worker_pids = [*status.recent_worker_pids, snapshot.worker_pid][-WORKER_PIDS_KEPT:]
            status.warning = multi_worker_warning(status.recent_worker_pids)
        else:
            status.consecutive_failures += 1
            status.consecutive_successes = 0
            status.poll_errors_total += 1
            status.last_error = storable(snapshot.error)[:300]
        health = next_health(status, snapshot.reachable)
        server_group = live.server_group(status.server_id)
        if health != status.health:
            self.outcome.transitions.append((status.server_id, status.health, health))
            payload = {"server": status.server_id, "health": health, "previous": status.health,
                       "error": status.last_error or None}  # fmt: skip
            self.messages += [(live.FLEET_GROUP, "server.health", payload), (server_group, "server.health", payload)]
            status.health = health
            status.health_since = now
        update: dict[str, Any] = {"server": status.server_id, "health": status.health, "at": now.isoformat()}
        if snapshot.reachable:
            update.update(connections=snapshot.connections, bandwidth_in_kbps=snapshot.bandwidth_in_kbps,
                          bandwidth_out_kbps=snapshot.bandwidth_out_kbps, warning=status.warning or None)  # fmt: skip
        else:
            update["error"] = snapshot.error
        self.messages.append((server_group, "server.status", update))

    def _streams(self, server_id: int, snapshot: ServerSnapshot) -> None:
        now = self.now
        sessions = self.sessions_of.get(server_id, [])
        open_clients = {row[3] for row in sessions}
        grace_from = now - timedelta(seconds=settings.RELOAD_GRACE_S)
        heard = {(row[1], row[2]) for row in sessions if (row[4] or row[5]) >= grace_from}
        seen: set[tuple[str, str]] = set()
        changes_pushed: list[dict[str, Any]] = []
        for snap in snapshot.streams:
            app, name = _app(snap.app), _name(snap.name)
            if not snap.publishing or (app, name) in seen:
                continue
            seen.add((app, name))
            stream = self.streams.get((server_id, app, name))
            if (
                stream is not None
                and not stream.live
                and stream.last_seen >= now
                and snap.publisher_client_id not in open_clients
            ):
                continue  # a callback closed it while this poll was in flight (fleet.stream_stopped_by_callback)
            if stream is None:
                stream = Stream(server_id=server_id, app=app, name=name, first_seen=now, last_seen=now)
                self.streams[(server_id, app, name)] = stream
                self.new_streams.append(stream)
            self.changed_streams.append(stream)
            changes = _changed(stream.latest if stream.live else None, snap)
            stream.latest = storable(snap.to_json())
            stream.last_seen = now
            stream.missing_since = None
            self.stream_samples.append((stream, snap))
            if not stream.live:
                stream.live = True
                uptime = min(max(snap.uptime_s or 0.0, 0.0), MAX_UPTIME_S)  # a nonsense uptime must not overflow
                stream.live_since = now - timedelta(seconds=uptime)
                payload = {"server": server_id, "app": app, "name": name, "source": "poll",
                           **{field: stream.latest.get(field) for field in PUSHED_FIELDS}}  # fmt: skip
                announced = snap.publisher_client_id in open_clients
                self.stream_messages.append((stream, "stream.started", payload, not announced))
                self.started.append(stream)
            elif changes:
                changes_pushed.append({"stream": stream.pk, **changes})
                self.stream_messages.append((stream, "stream.update", {"server": server_id, **changes}, False))
        for stream in self.live_of.get(server_id, []):
            if (stream.app, stream.name) in seen:
                continue
            self.changed_streams.append(stream)
            if (stream.app, stream.name) in heard:  # callbacks say it goes on: a reload, or another worker
                stream.missing_since = stream.missing_since or now
                continue
            stream.live = False
            stream.missing_since = None
            self.outcome.stopped.append(stream.pk)
            self.stopped.append(stream)
        if changes_pushed:
            update = {"server": server_id, "streams": changes_pushed}
            self.messages += [(live.server_group(server_id), "streams.update", update),
                              (live.FLEET_GROUP, "streams.update", update)]  # fmt: skip


def _server_sample(server_id: int, snapshot: ServerSnapshot, duration_ms: float, now: datetime) -> ServerSample:
    return ServerSample(
        server_id=server_id, at=now, reachable=snapshot.reachable, connections=_fits(snapshot.connections, 32),
        bandwidth_in_kbps=snapshot.bandwidth_in_kbps, bandwidth_out_kbps=snapshot.bandwidth_out_kbps,
        streams=sum(1 for s in snapshot.streams if s.publishing) if snapshot.reachable else None, poll_ms=duration_ms,
    )  # fmt: skip


def _stream_messages(stream_messages: list[StreamMessage]) -> list[Message]:
    """Each stream message for the stream's group, and for the fleet and server groups when flagged (a
    change no callback announced). Resolved after the writes: a new stream has its id only then."""
    out: list[Message] = []
    for stream, message_type, payload, to_fleet in stream_messages:
        groups = [live.stream_group(stream.pk)]
        if to_fleet:
            groups += [live.FLEET_GROUP, live.server_group(stream.server_id)]
        out.extend((group, message_type, {**payload, "stream": stream.pk}) for group in groups)
    return out


def _stream_sample(stream: Stream, snap: StreamSnapshot, now: datetime) -> StreamSample:
    return StreamSample(
        stream=stream, at=now, bitrate_in_kbps=snap.bitrate_in_kbps, bitrate_out_kbps=snap.bitrate_out_kbps,
        viewers=_fits(snap.viewers, 32), fps=snap.fps, dropped_frames=_fits(snap.dropped_frames, 64),
    )  # fmt: skip


def _fits(value: int | None, bits: int) -> int | None:
    """``value`` if a signed ``bits``-bit column holds it, else None (a server reported nonsense)."""
    return value if value is None or -(2 ** (bits - 1)) <= value < 2 ** (bits - 1) else None


def _record_session_bytes(
    results: Sequence[tuple[int, ServerSnapshot, float]], open_sessions: list[tuple[Any, ...]]
) -> None:
    """Store each live publisher's byte count on its open session (nginx's callbacks carry none), matched
    by server + nginx client id, in one bulk update."""
    by_client = {(row[0], row[3]): (row[6], row[7]) for row in open_sessions}
    updates = []
    for server_id, snapshot, _ in results:
        for stream in snapshot.streams:
            found = by_client.get((server_id, stream.publisher_client_id or ""))
            received = _fits(stream.bytes_in, 64)
            if found and received is not None and received != found[1]:
                updates.append(PublishSession(pk=found[0], bytes_in=received))
    PublishSession.objects.bulk_update(updates, ["bytes_in"], batch_size=500)
