"""The fleet at a glance: what is live now (polls merged with publish callbacks), the overview's counts,
and their history for sparklines.

A stream is live for the operator from the callback that accepted it, not from the next poll:
``pending_sessions`` are the accepted publishes no poll has shown yet (or that a reload hid from
``/stat``), and a callback that closes a session takes its stream off the live list at once
(``stream_stopped_by_callback``). Polls then confirm, with figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Exists, FloatField, IntegerField, Max, OuterRef, Q, QuerySet, Sum
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.utils import timezone

from monitoring import live
from monitoring.models import FleetSample, Health, ServerStatus, Stream
from streams.models import ConfigRevision, PublishSession, Server

RELOADED = (ConfigRevision.Status.APPLIED, ConfigRevision.Status.ROLLBACK)

SPARK_MINUTES = 30
SPARK_POINTS = 90


@dataclass(frozen=True)
class FleetSummary:
    """The overview's counts. Bandwidth sums the servers whose last poll answered; viewers sum the live
    streams' latest polled figures; ``live_streams`` includes the publishes no poll has shown yet."""

    servers_up: int
    servers_degraded: int
    servers_down: int
    servers_unknown: int
    live_streams: int
    viewers: int
    ingest_kbps: float
    egress_kbps: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


SPARK_FIELDS = ("servers_up", "servers_degraded", "servers_down", "live_streams", "viewers", "ingest_kbps",
                "egress_kbps")  # fmt: skip


def pending_sessions() -> QuerySet[PublishSession]:
    """Open publish sessions whose stream is not live in the polled state: accepted by a callback and not
    polled yet, or hidden from ``/stat`` after a reload (the publisher goes on in the old worker)."""
    polled_live = Stream.objects.filter(
        server_id=OuterRef("server_id"), app=OuterRef("app_name"), name=OuterRef("public_name"), live=True
    )
    return PublishSession.objects.open().exclude(Exists(polled_live))


def unhealthy_streams() -> QuerySet[Stream]:
    """Live streams in trouble: gone from the last polls (reload grace), no video (0 fps) or no input."""
    return Stream.objects.filter(live=True).filter(
        Q(missing_since__isnull=False) | Q(latest__fps=0) | Q(latest__bitrate_in_kbps=0)
    )


PRE_RELOAD = "pre-reload (on the old worker)"


def last_reloads(server_ids: Iterable[int]) -> dict[int, datetime]:
    """When each server's config was last reloaded by a deploy or a rollback (one query)."""
    rows = (
        ConfigRevision.objects.filter(server_id__in=set(server_ids), status__in=RELOADED)
        .values("server_id")
        .annotate(at=Max("created"))
        .order_by()
    )
    return {row["server_id"]: row["at"] for row in rows}


def stream_health(stream: Stream, reloads: dict[int, datetime]) -> str:
    """``ok``, or why a live stream is unhealthy (the same conditions as ``unhealthy_streams``).

    A stream missing from /stat that went live before its server's last reload (``reloads``, from
    ``last_reloads``) is *pre-reload*: still publishing to the old nginx worker (graceful mode), which
    /stat and /control no longer see, not dropped."""
    latest = stream.latest or {}
    if stream.missing_since is not None:
        reloaded = reloads.get(stream.server_id)
        if reloaded is not None and stream.live_since is not None and stream.live_since <= reloaded:
            return PRE_RELOAD
        return "missing from /stat"
    if latest.get("fps") == 0:
        return "no video"
    if latest.get("bitrate_in_kbps") == 0:
        return "no input"
    return "ok"


def with_health(streams: list[Stream]) -> list[tuple[Stream, str]]:
    """Each stream with its ``stream_health``; the reloads of the servers of missing ones in one query."""
    missing = [stream.server_id for stream in streams if stream.missing_since is not None]
    reloads = last_reloads(missing) if missing else {}
    return [(stream, stream_health(stream, reloads)) for stream in streams]


def summary() -> FleetSummary:
    """The fleet now: four aggregate queries, whatever its size."""
    health = dict(
        ServerStatus.objects.filter(server__enabled=True).values_list("health").annotate(n=Count("pk")).order_by()
    )
    enabled = Server.objects.filter(enabled=True).count()
    answered = ServerStatus.objects.filter(server__enabled=True, consecutive_failures=0).aggregate(
        ingest=Sum(Cast(KeyTextTransform("bandwidth_in_kbps", "snapshot"), FloatField())),
        egress=Sum(Cast(KeyTextTransform("bandwidth_out_kbps", "snapshot"), FloatField())),
    )
    streams = Stream.objects.filter(live=True).aggregate(
        n=Count("pk"), viewers=Sum(Cast(KeyTextTransform("viewers", "latest"), IntegerField()))
    )
    up, degraded, down = (health.get(h, 0) for h in (Health.UP, Health.DEGRADED, Health.DOWN))
    return FleetSummary(
        servers_up=up,
        servers_degraded=degraded,
        servers_down=down,
        servers_unknown=max(enabled - up - degraded - down, 0),
        live_streams=streams["n"] + pending_sessions().count(),
        viewers=streams["viewers"] or 0,
        ingest_kbps=round(answered["ingest"] or 0.0, 1),
        egress_kbps=round(answered["egress"] or 0.0, 1),
    )


def record(now: datetime | None = None) -> FleetSummary:
    """Store the fleet's figures after a poll cycle and push them (``fleet.summary``) to every page."""
    now = now or timezone.now()
    current = summary()
    values = current.to_json()
    values.pop("servers_unknown")
    FleetSample.objects.create(at=now, **values)
    live.publish(live.FLEET_GROUP, "fleet.summary", {"at": now.isoformat(), **current.to_json()})
    return current


def sparklines(now: datetime | None = None, minutes: int = SPARK_MINUTES) -> dict[str, list[float]]:
    """Each summary figure over the last ``minutes``, oldest first, at most SPARK_POINTS values each
    (the samples of a cycle are evenly thinned, keeping the newest)."""
    now = now or timezone.now()
    rows = list(
        FleetSample.objects.filter(at__gte=now - timedelta(minutes=minutes)).order_by("at").values_list(*SPARK_FIELDS)
    )
    if len(rows) > SPARK_POINTS:
        step = len(rows) / SPARK_POINTS
        rows = [rows[len(rows) - 1 - int(i * step)] for i in range(SPARK_POINTS)][::-1]
    return {name: [float(row[index]) for row in rows] for index, name in enumerate(SPARK_FIELDS)}


def stream_stopped_by_callback(sender: Any, session: PublishSession, **kwargs: Any) -> None:
    """``streams.events.publish_stopped`` receiver: the session's stream leaves the live list now, unless
    another session still publishes it. ``last_seen`` takes the close time, so a poll that read ``/stat``
    just before the close does not bring the stream back (see ``monitoring.state``)."""
    still_open = PublishSession.objects.filter(
        server_id=session.server_id, app_name=session.app_name, public_name=session.public_name, ended__isnull=True
    )
    if still_open.exists():
        return
    Stream.objects.filter(
        server_id=session.server_id, app=session.app_name, name=session.public_name, live=True
    ).update(live=False, missing_since=None, last_seen=session.ended or timezone.now())
