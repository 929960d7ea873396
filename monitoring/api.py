"""Live state over REST: streams (live list, detail, history), server status and history, and Prometheus
metrics. Read-only: every role from viewer up may read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import django_filters
from django.db.models import QuerySet
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.views import APIView

from console.roles import Role
from console.tokens import BearerTokenAuthentication
from monitoring import alerts_api, history, metrics
from monitoring.models import Health, ServerStatus, Stream
from streams.models import Server

# Figures of the latest StreamSnapshot the API shows (units in the names; null = unknown).
STREAM_FIGURES = ("bitrate_in_kbps", "bitrate_out_kbps", "video_kbps", "audio_kbps", "viewers", "video_codec",
                  "video_profile", "audio_codec", "width", "height", "fps", "publisher_address", "dropped_frames",
                  "avsync_ms")  # fmt: skip
DEFAULT_HISTORY = timedelta(hours=1)
HISTORY_PARAMETERS = [
    OpenApiParameter("from", OpenApiTypes.DATETIME, description="ISO 8601 (default: `to` minus 1 h)"),
    OpenApiParameter("to", OpenApiTypes.DATETIME, description="ISO 8601 (default: now)"),
    OpenApiParameter("step", OpenApiTypes.INT, description="seconds per point (default: automatic)"),
]


def _health(server: Server) -> str:
    status = getattr(server, "status", None)
    return status.health if status is not None else Health.UNKNOWN


class StreamSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    server_name = serializers.CharField(source="server.name", read_only=True)
    health = serializers.SerializerMethodField()
    uptime_s = serializers.SerializerMethodField()
    figures = serializers.SerializerMethodField()

    class Meta:
        model = Stream
        fields = ["id", "server", "server_name", "app", "name", "live", "live_since", "uptime_s", "health",
                  "first_seen", "last_seen", "missing_since", "figures"]  # fmt: skip
        read_only_fields = fields

    def get_health(self, obj: Stream) -> str:
        return _health(obj.server)

    def get_uptime_s(self, obj: Stream) -> float | None:
        if not obj.live or obj.live_since is None:
            return None
        return round((timezone.now() - obj.live_since).total_seconds(), 1)

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_figures(self, obj: Stream) -> dict[str, Any]:
        latest = obj.latest or {}
        return {name: latest.get(name) for name in STREAM_FIGURES}


class StreamFilter(django_filters.FilterSet):
    class Meta:
        model = Stream
        fields = ["live", "server", "app", "name"]


def _history_range(request: Request) -> tuple[datetime, datetime, int | None]:
    """``from``, ``to`` (ISO 8601) and ``step`` (seconds) of a history request; 400 when malformed."""

    def moment(name: str, default: datetime) -> datetime:
        raw = request.query_params.get(name)
        if not raw:
            return default
        try:
            value = parse_datetime(raw)
        except ValueError:
            value = None
        if value is None:
            raise ValidationError({name: "Expected an ISO 8601 date and time, e.g. 2026-11-25T10:00:00Z."})
        return value if timezone.is_aware(value) else timezone.make_aware(value, UTC)

    end = moment("to", timezone.now())
    start = moment("from", end - DEFAULT_HISTORY)
    raw_step = request.query_params.get("step")
    if not raw_step:
        return start, end, None
    if not raw_step.isdigit() or len(raw_step) > 9:
        raise ValidationError({"step": "Expected a whole number of seconds."})
    return start, end, int(raw_step)


def _history_response(points_of: Any, object_id: int, request: Request) -> Response:
    start, end, step = _history_range(request)
    try:
        points = points_of(object_id, start, end, step)
    except ValueError as exc:
        raise ValidationError({"detail": str(exc)}) from exc
    return Response({"from": start.isoformat(), "to": end.isoformat(), "step": step, "points": points})


class StreamViewSet(viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    """Streams seen on the fleet: ``?live=true`` for the live ones, with their latest polled figures."""

    serializer_class = StreamSerializer
    filterset_class = StreamFilter
    ordering_fields = ["name", "live_since", "last_seen"]
    search_fields = ["name", "app"]
    action_roles = {"history": Role.VIEWER}

    def get_queryset(self) -> QuerySet[Stream]:
        return Stream.objects.select_related("server", "server__status").order_by("server_id", "app", "name")

    @extend_schema(parameters=HISTORY_PARAMETERS, responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def history(self, request: Request, pk: str | None = None) -> Response:
        """Chart points: raw samples for recent ranges, 1-minute rollups for longer ones."""
        return _history_response(history.stream_history, self.get_object().pk, request)


class ServerStatusView(APIView):
    """``GET /servers/{id}/status/``: health, the latest poll and what it saw."""

    action_roles = {"get": Role.VIEWER}

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, pk: int) -> Response:
        server = get_object_or_404(Server, pk=pk)
        status = ServerStatus.objects.filter(server=server).first()
        live = Stream.objects.filter(server=server, live=True).count()
        if status is None:
            return Response({"server": server.pk, "name": server.name, "health": Health.UNKNOWN, "live_streams": live})
        snapshot = dict(status.snapshot or {})
        snapshot.pop("streams", None)
        return Response({
            "server": server.pk, "name": server.name, "health": status.health, "health_since": status.health_since,
            "last_poll_at": status.last_poll_at, "last_ok_at": status.last_ok_at, "last_error": status.last_error,
            "last_poll_ms": status.last_poll_ms, "consecutive_failures": status.consecutive_failures,
            "warning": status.warning, "live_streams": live, "latest": snapshot,
            "transitions": [
                {"at": t.at, "from": t.from_health, "to": t.to_health, "reason": t.reason}
                for t in server.health_transitions.all()[:20]
            ],
        })  # fmt: skip


class ServerHistoryView(APIView):
    """``GET /servers/{id}/history/?from=&to=&step=``: the server's chart points."""

    action_roles = {"get": Role.VIEWER}

    @extend_schema(parameters=HISTORY_PARAMETERS, responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, pk: int) -> Response:
        server = get_object_or_404(Server, pk=pk)
        return _history_response(history.server_history, server.pk, request)


class PrometheusRenderer(BaseRenderer):
    media_type = "text/plain"
    format = "prometheus"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return data.encode() if isinstance(data, str) else str(data).encode()


class MetricsView(APIView):
    """``GET /metrics``: Prometheus text format, for a bearer API token (any role)."""

    authentication_classes = [BearerTokenAuthentication]
    renderer_classes = [PrometheusRenderer]
    action_roles = {"get": Role.VIEWER}

    @extend_schema(responses={(200, "text/plain"): OpenApiTypes.STR})
    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8")


router = SimpleRouter()
router.register("streams", StreamViewSet, basename="stream")
router.register("alerts", alerts_api.AlertViewSet, basename="alert")
router.register("mutes", alerts_api.MuteViewSet, basename="mute")
router.register("alert-rules", alerts_api.AlertRuleViewSet, basename="alert-rule")
router.register("alert-channels", alerts_api.ChannelViewSet, basename="alert-channel")
router.register("alert-deliveries", alerts_api.DeliveryViewSet, basename="alert-delivery")
router.register("subscriptions", alerts_api.SubscriptionViewSet, basename="subscription")
urlpatterns = [
    path("servers/<int:pk>/status/", ServerStatusView.as_view(), name="server-status"),
    path("servers/<int:pk>/history/", ServerHistoryView.as_view(), name="server-history"),
    *router.urls,
]
