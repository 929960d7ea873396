"""Server pages: the fleet's servers with their health and live figures, and one server's page."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.db.models.fields.json import KeyTransform
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from frontend.views import RoleView
from monitoring import fleet, polling
from monitoring.models import Health, ServerStatus, Stream
from streams import rendering
from streams.models import Server

# The figures of a server's latest snapshot that the pages show, read out of the JSON in the database
# (the stored snapshot also lists every stream, which these pages do not need whole).
FIGURES = ("version", "uptime_s", "taken_at", "connections", "bandwidth_in_kbps", "bandwidth_out_kbps")
HEALTH_ORDER = {Health.DOWN: 0, Health.DEGRADED: 1, Health.UNKNOWN: 2, Health.UP: 3}


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class ServerRow:
    """One server with its health and the figures of its latest poll (``None`` = unknown).

    Figures are shown only while the last poll answered: a failing server's old figures would mislead.
    ``up_since`` is when the answering process started (the page ticks the uptime from it).
    """

    server: Server
    status: ServerStatus | None
    live_streams: int
    version: str | None = None
    up_since: datetime | None = None
    connections: float | None = None
    bandwidth_in_kbps: float | None = None
    bandwidth_out_kbps: float | None = None

    @property
    def health(self) -> str:
        return self.status.health if self.status else Health.UNKNOWN

    @property
    def pollable(self) -> bool:
        """Does polling read this server (enabled or not)?"""
        return polling.has_something_to_poll(self.server)

    @property
    def bandwidth_kbps(self) -> float | None:
        if self.bandwidth_in_kbps is None and self.bandwidth_out_kbps is None:
            return None
        return (self.bandwidth_in_kbps or 0) + (self.bandwidth_out_kbps or 0)


def with_figures(servers: QuerySet[Server]) -> QuerySet[Server]:
    """``servers`` with their status in the same query and the snapshot figures as ``fig_*`` attributes."""
    figures = {f"fig_{name}": KeyTransform(name, "status__snapshot") for name in FIGURES}
    return servers.select_related("status").defer("status__snapshot").annotate(**figures)


def _status(server: Server) -> ServerStatus | None:
    try:
        return server.status
    except ServerStatus.DoesNotExist:
        return None


def server_row(server: Server, live_streams: int) -> ServerRow:
    """The row of a server fetched through ``with_figures``."""
    status = _status(server)
    version = getattr(server, "fig_version", None)
    version = version if isinstance(version, str) else None
    if not (server.enabled and status and status.last_ok_at and status.consecutive_failures == 0):
        return ServerRow(server, status, live_streams, version=version)
    up_since = None
    uptime_s, taken_at = _number(getattr(server, "fig_uptime_s", None)), getattr(server, "fig_taken_at", None)
    if uptime_s is not None and isinstance(taken_at, str):
        with contextlib.suppress(ValueError, OverflowError):
            up_since = datetime.fromisoformat(taken_at) - timedelta(seconds=uptime_s)
    return ServerRow(
        server, status, live_streams, version=version, up_since=up_since,
        connections=_number(getattr(server, "fig_connections", None)),
        bandwidth_in_kbps=_number(getattr(server, "fig_bandwidth_in_kbps", None)),
        bandwidth_out_kbps=_number(getattr(server, "fig_bandwidth_out_kbps", None)),
    )  # fmt: skip


def live_counts() -> dict[int, int]:
    """Live streams per server, as the overview counts them: polled live streams plus accepted publishes
    no poll has shown yet. Two aggregate queries, whatever the number of servers."""
    counts: dict[int, int] = {}
    for rows in (Stream.objects.filter(live=True), fleet.pending_sessions()):
        for server_id, n in rows.values_list("server_id").annotate(n=Count("pk")).order_by():
            counts[server_id] = counts.get(server_id, 0) + n
    return counts


def config_revision(server: Server) -> tuple[str, str]:
    """(revision, error): the first 12 hex digits of the sha256 of the config a deploy would write on this
    nginx server now (``render_server_config``: origin, edge or proxy), or why it cannot be rendered."""
    if server.kind != Server.Kind.NGINX_RTMP:
        return "", ""
    try:
        text = rendering.render_server_config(server, callback_base_url=settings.CALLBACK_BASE_URL)
    except ValueError as exc:
        return "", str(exc)
    return hashlib.sha256(text.encode()).hexdigest()[:12], ""


def _clean(value: str, limit: int) -> str:
    return value.replace("\x00", "").strip()[:limit]  # NUL cannot reach PostgreSQL


class ServerListView(RoleView):
    """Every server with its health, kind and role, version, uptime, live streams, bandwidth and last poll
    error: a fixed number of queries whatever the fleet size; search, health and kind filters, sorting."""

    SORTS = {
        "name": lambda row: (row.server.name,),
        "health": lambda row: (HEALTH_ORDER.get(row.health, 2) if row.server.enabled else 4, row.server.name),
        "-bandwidth": lambda row: (row.bandwidth_kbps is None, -(row.bandwidth_kbps or 0), row.server.name),
        "-streams": lambda row: (-row.live_streams, row.server.name),
    }
    SORT_LABELS = {"name": "name", "health": "health (problems first)", "-bandwidth": "bandwidth (highest)",
                   "-streams": "live streams (most)"}  # fmt: skip
    HEALTHS = {"problem": "problems", **{value: label.lower() for value, label in Health.choices}}

    def get(self, request: HttpRequest) -> HttpResponse:
        servers = with_figures(Server.objects.visible_to(request.user))
        query = _clean(request.GET.get("q", ""), 100)
        if query:
            servers = servers.filter(Q(name__icontains=query) | Q(host__icontains=query))
        kind = request.GET.get("kind", "")
        kind = kind if kind in Server.Kind.values else ""
        if kind:
            servers = servers.filter(kind=kind)
        health = request.GET.get("health", "")
        if health == "problem":
            servers = servers.filter(enabled=True, status__isnull=False).filter(
                Q(status__health__in=[Health.DOWN, Health.DEGRADED]) | ~Q(status__warning="")
            )
        elif health == Health.UNKNOWN:
            servers = servers.filter(Q(status__isnull=True) | Q(status__health=health))
        elif health in Health.values:
            servers = servers.filter(status__health=health)
        else:
            health = ""
        sort = request.GET.get("sort", "")
        sort = sort if sort in self.SORTS else "name"
        found = list(servers)
        counts = live_counts() if found else {}
        rows = sorted((server_row(s, counts.get(s.pk, 0)) for s in found), key=self.SORTS[sort])
        context = {
            "rows": rows,
            "filters": {"q": query, "kind": kind, "health": health, "sort": sort},
            "filtered": bool(query or health or kind),
            "kinds": Server.Kind.choices,
            "healths": self.HEALTHS.items(),
            "sorts": self.SORT_LABELS.items(),
        }
        return render(request, "frontend/server_list.html", context)


class ServerDetailView(RoleView):
    """One server: health and live figures, bandwidth and connection charts, its applications and live
    streams, poll errors and health transitions, and the revision of the config Tally renders for it."""

    STREAMS = 100
    TRANSITIONS = 20

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        server = get_object_or_404(with_figures(Server.objects.visible_to(request.user)), pk=pk)
        live_by_app = dict(
            Stream.objects.filter(server=server, live=True).values_list("app").annotate(n=Count("pk")).order_by()
        )
        apps = server.applications.annotate(n_keys=Count("keys", filter=Q(keys__revoked_at__isnull=True))).order_by(
            "name"
        )
        pending = list(fleet.pending_sessions().filter(server=server).order_by("-started")[: self.STREAMS])
        streams = list(Stream.objects.filter(server=server, live=True).order_by("app", "name")[: self.STREAMS])
        n_live = sum(live_by_app.values())
        revision, revision_error = config_revision(server)
        context = {
            "server": server,
            "row": server_row(server, n_live + len(pending)),
            "apps": [(app, live_by_app.get(app.name, 0)) for app in apps],
            "streams": fleet.with_health(streams),
            "pending": pending,
            "more_streams": max(n_live - len(streams), 0),
            "transitions": server.health_transitions.all()[: self.TRANSITIONS],
            "revision": revision,
            "revision_error": revision_error,
            "deployed": server.config_revisions.filter(status__in=["applied", "rollback"]).order_by("-number").first(),
        }
        return render(request, "frontend/server_detail.html", context)
