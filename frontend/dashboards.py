"""Live dashboards: the fleet overview, the live streams table and a stream's page."""

from __future__ import annotations

from urllib.parse import urlencode

from django.core.paginator import Paginator
from django.db.models import F, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone

from console.models import AuditEntry
from console.roles import Role, request_role
from frontend.views import RoleView
from monitoring import fleet
from monitoring.models import Alert, Health, ServerStatus, Stream
from streams.models import Application, PublishSession, Server, StreamKey


class HomeView(RoleView):
    """The fleet overview: counts with sparklines, problems first, what is live now."""

    LIVE_NOW = 10
    PROBLEMS = 20

    def get(self, request: HttpRequest) -> HttpResponse:
        now = timezone.now()
        unhealthy = fleet.unhealthy_streams().select_related("server").order_by("server__name", "app", "name")
        context = {
            "summary": fleet.summary(),
            "sparks": fleet.sparklines(now),
            "servers": Server.objects.visible_to(request.user).count(),
            "applications": Application.objects.visible_to(request.user).count(),
            "active_keys": StreamKey.objects.visible_to(request.user).with_state("active", now).count(),
            "bad_servers": ServerStatus.objects.filter(server__enabled=True)
            .filter(Q(health__in=[Health.DOWN, Health.DEGRADED]) | ~Q(warning=""))
            .select_related("server")
            .order_by("-health", "server__name")[: self.PROBLEMS],
            "bad_streams": fleet.with_health(list(unhealthy[: self.PROBLEMS])),
            "open_alerts": Alert.objects.filter(state=Alert.State.OPEN).select_related("server")[: self.PROBLEMS],
            "live_now": Stream.objects.filter(live=True)
            .select_related("server")
            .order_by("-live_since")[: self.LIVE_NOW],
            "pending": fleet.pending_sessions().select_related("server").order_by("-started")[: self.LIVE_NOW],
            "recent": AuditEntry.objects.all()[:10] if request_role(request) >= Role.ADMIN else [],
        }
        return render(request, "frontend/home.html", context)


class StreamListView(RoleView):
    """Live streams across the fleet, from the latest polls: search, filters, sorting, 50 a page."""

    PER_PAGE = 50
    SORTS = {
        "name": ("name", "server__name"),
        "server": ("server__name", "app", "name"),
        "-bitrate": (F("latest__bitrate_in_kbps").desc(nulls_last=True), "name"),
        "-viewers": (F("latest__viewers").desc(nulls_last=True), "name"),
        "uptime": (F("live_since").asc(nulls_last=True), "name"),
    }

    def get(self, request: HttpRequest) -> HttpResponse:
        streams = Stream.objects.filter(live=True).select_related("server", "server__status")
        pending = fleet.pending_sessions().select_related("server", "server__status")
        # NUL cannot reach PostgreSQL; nothing stored contains one (monitoring.state strips them).
        query = request.GET.get("q", "").replace("\x00", "").strip()[:100]
        if query:
            streams = streams.filter(Q(name__icontains=query) | Q(app__icontains=query))
            pending = pending.filter(Q(public_name__icontains=query) | Q(app_name__icontains=query))
        server = request.GET.get("server", "")
        if server.isascii() and server.isdigit() and len(server) < 12:
            streams = streams.filter(server_id=int(server))
            pending = pending.filter(server_id=int(server))
        app = request.GET.get("app", "").replace("\x00", "").strip()[:64]
        if app:
            streams = streams.filter(app=app)
            pending = pending.filter(app_name=app)
        health = request.GET.get("health", "")
        if health == "problem":
            streams = streams.filter(pk__in=fleet.unhealthy_streams().values("pk"))
            pending = pending.none()
        elif health == Health.UNKNOWN:
            streams = streams.filter(Q(server__status__isnull=True) | Q(server__status__health=health))
            pending = pending.filter(Q(server__status__isnull=True) | Q(server__status__health=health))
        elif health in Health.values:
            streams = streams.filter(server__status__health=health)
            pending = pending.filter(server__status__health=health)
        sort = request.GET.get("sort", "name")
        streams = streams.order_by(*self.SORTS.get(sort, self.SORTS["name"]))
        page = Paginator(streams, self.PER_PAGE).get_page(request.GET.get("page"))
        rows = fleet.with_health(list(page.object_list))
        filters = {"q": query, "server": server, "app": app, "health": health, "sort": sort}
        pending_rows = list(pending.order_by("-started")[: self.PER_PAGE]) if page.number == 1 else []
        context = {
            "page": page, "rows": rows, "filters": filters, "sorts": list(self.SORTS), "pending": pending_rows,
            "total": page.paginator.count + len(pending_rows),
            "healths": [("problem", "stream problems"), *((v, f"server {v}") for v in Health.values)],
            "servers": Server.objects.order_by("name").values_list("pk", "name"),
            "query_string": urlencode({k: v for k, v in filters.items() if v}),
        }  # fmt: skip
        return render(request, "frontend/stream_list.html", context)


class StreamDetailView(RoleView):
    """One stream: its live figures, history charts, publisher, key and session history."""

    SESSIONS = 20

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        stream = get_object_or_404(Stream.objects.select_related("server", "server__status"), pk=pk)
        sessions = list(
            PublishSession.objects.filter(server=stream.server, app_name=stream.app, public_name=stream.name)
            .select_related("key")
            .order_by("-started")[: self.SESSIONS]
        )
        current = next((s for s in sessions if s.ended is None), None)
        key = current.key if current else next((s.key for s in sessions if s.key_id), None)
        context = {"stream": stream, "sessions": sessions, "current": current, "key": key, "now": timezone.now(),
                   "health": fleet.with_health([stream])[0][1]}  # fmt: skip
        return render(request, "frontend/stream_detail.html", context)
