"""Alerts over REST: alerts (list, filter, acknowledge), mutes, rules, notification channels (with test
sends and webhook secrets shown once), deliveries and the send backlog, and each user's subscriptions.

Roles: viewers read alerts, mutes and rules; operators acknowledge alerts and add or end mutes; admins
write rules and own channels and deliveries (reads too: they hold addresses, URLs and secrets). Every
user manages only their own subscriptions. Writes run in one transaction with their audit entry, and a
webhook secret never reaches a read or the audit log.
"""

from __future__ import annotations

import logging
import re
import secrets
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import django_filters
from django.contrib.auth import get_user_model
from django.db import models, transaction
from django.db.models import Case, IntegerField, QuerySet, Value, When
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from console import audit
from console.api import StrictSerializerMixin
from console.roles import Role, request_role
from monitoring import alerting
from monitoring.models import (
    Alert,
    AlertRule,
    Condition,
    Delivery,
    Mute,
    NotificationChannel,
    Stream,
    Subscription,
)
from streams.models import Application, Server, StreamKey

log = logging.getLogger(__name__)

MAX_EMAILS = 50
MAX_WINDOWS = 50
MAX_RULE_CHANNELS = 50
MAX_DURATION_S = 86400
MAX_MUTE = timedelta(days=30)
MAX_MUTE_LEAD = timedelta(days=365)  # how far ahead a mute may start
MAX_KBPS = 10_000_000.0  # 10 Gbit/s: anything above is a typo
MAX_PK = 2**31 - 1
ALERT_DELIVERIES_SHOWN = 200
HHMM = re.compile(r"(?:[01]\d|2[0-3]):[0-5]\d")
NO_STORE = {"Cache-Control": "no-store"}


def _new_secret() -> str:
    return secrets.token_urlsafe(32)


# --- audit helpers ---------------------------------------------------------------------------------------


def _snapshot(instance: models.Model) -> dict[str, Any]:
    """``audit.snapshot`` plus a masked webhook secret and a rule's channel ids."""
    data = audit.snapshot(instance)
    if isinstance(instance, NotificationChannel):
        data["secret"] = audit.MASKED if instance.secret else ""
    if isinstance(instance, AlertRule) and instance.pk is not None:
        data["channels"] = sorted(instance.channels.values_list("pk", flat=True))
    return data


def _save_audited(
    instance: models.Model, actor: audit.Actor, channels: list[NotificationChannel] | None = None
) -> None:
    """Validate, save (with a rule's channels) and audit a create or update, in one transaction."""
    with transaction.atomic():
        is_new = instance._state.adding
        before = None
        if not is_new:
            before = _snapshot(type(instance)._default_manager.select_for_update().get(pk=instance.pk))
        instance.full_clean()
        instance.save()
        if channels is not None and isinstance(instance, AlertRule):
            instance.channels.set(channels)
        after = _snapshot(instance)
        if before is None:
            audit.record(actor, "create", instance, after=after)
        elif before != after:
            audit.record(actor, "update", instance, before=before, after=after,
                         message=", ".join(audit.changed(before, after)))  # fmt: skip


def _delete_audited(instance: models.Model, actor: audit.Actor, message: str = "") -> None:
    with transaction.atomic():
        audit.record(actor, "delete", instance, before=_snapshot(instance), message=message)
        instance.delete()


# --- input helpers ---------------------------------------------------------------------------------------


class BoundedListField(serializers.ListField):
    """A list whose length is checked before its items are (a huge list costs nothing)."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, list) and self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return super().to_internal_value(data)


class EmailListField(BoundedListField):
    """A list of at most MAX_EMAILS valid addresses, duplicates dropped (order kept)."""

    child = serializers.EmailField(max_length=254)

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", MAX_EMAILS)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> list[str]:
        return list(dict.fromkeys(super().to_internal_value(data)))


def _window_errors(index: int, window: Any) -> tuple[dict[str, Any] | None, str | None]:
    where = f"Window {index + 1}"
    if not isinstance(window, dict):
        return None, f"{where}: expected an object with days, start and end."
    unknown = sorted(str(key)[:40] for key in set(window) - {"days", "start", "end"})
    if unknown:
        return None, f"{where}: unknown key(s) {', '.join(unknown[:5])}; only days, start and end are allowed."
    days, start, end = window.get("days"), window.get("start"), window.get("end")
    if not isinstance(days, list) or not days or len(days) > 7:
        return None, f"{where}: days must be a list of 1 to 7 weekdays (0 = Monday … 6 = Sunday)."
    if any(type(day) is not int or not 0 <= day <= 6 for day in days):
        return None, f"{where}: days must be whole numbers from 0 (Monday) to 6 (Sunday)."
    if not isinstance(start, str) or not HHMM.fullmatch(start):
        return None, f"{where}: start must be a time HH:MM (00:00 to 23:59)."
    if not isinstance(end, str) or not (HHMM.fullmatch(end) or end == "24:00"):
        return None, f"{where}: end must be a time HH:MM (00:01 to 24:00)."
    if start >= end:
        return None, f"{where}: start must be before end (a window cannot cross midnight: split it in two)."
    return {"days": sorted(set(days)), "start": start, "end": end}, None


def clean_schedule(value: Any) -> list[dict[str, Any]]:
    """A rule's weekly windows, strictly: ``[{"days": [0-6], "start": "HH:MM", "end": "HH:MM"}]`` (UTC)."""
    if not isinstance(value, list):
        raise serializers.ValidationError('Expected a list of windows like {"days": [0, 1], "start": "08:00", '
                                          '"end": "18:00"}.')  # fmt: skip
    if len(value) > MAX_WINDOWS:
        raise serializers.ValidationError(f"At most {MAX_WINDOWS} windows.")
    windows, errors = [], []
    for index, window in enumerate(value):
        cleaned, error = _window_errors(index, window)
        if error:
            errors.append(error)
        else:
            windows.append(cleaned)
    if errors:
        raise serializers.ValidationError(errors[:10])
    return windows  # type: ignore[return-value]


@extend_schema_field({
    "type": "array", "maxItems": MAX_WINDOWS,
    "items": {"type": "object", "required": ["days", "start", "end"], "additionalProperties": False, "properties": {
        "days": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 6}, "minItems": 1},
        "start": {"type": "string", "example": "08:00"}, "end": {"type": "string", "example": "18:00"},
    }},
    "description": "Weekly windows in UTC (Monday = 0); empty: always.",
})  # fmt: skip
class ScheduleField(serializers.Field):  # type: ignore[type-arg]
    """Validated without a JSON round trip, so hostile nesting costs nothing."""

    def to_internal_value(self, data: Any) -> list[dict[str, Any]]:
        return clean_schedule(data)

    def to_representation(self, value: Any) -> Any:
        return value


class ChannelIdsField(BoundedListField):
    """Channel ids in, channel ids out (resolved with one query by the serializer)."""

    child = serializers.IntegerField(min_value=1, max_value=MAX_PK)

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", MAX_RULE_CHANNELS)
        super().__init__(**kwargs)

    def to_representation(self, data: Any) -> list[int]:
        return sorted(channel.pk for channel in data.all())


def _refuse_body(request: Request) -> Response | None:
    """Actions that take no input accept an empty body or ``{}``; anything else gets a 400, not silence."""
    data = request.data  # parsing errors (malformed, too large, too deep) are 400s already
    if isinstance(data, dict) and not data:
        return None
    return Response({"detail": "This action takes no body (send nothing, or {})."}, status=status.HTTP_400_BAD_REQUEST)


def _role(serializer: serializers.BaseSerializer) -> Role:  # type: ignore[type-arg]
    request = serializer.context.get("request")
    return request_role(request) if request is not None else Role.NONE


# --- alerts ----------------------------------------------------------------------------------------------


def _shown_target(delivery: Delivery, admin: bool) -> str:
    """Admins see a webhook's whole URL; others only its origin (a path often carries a credential)."""
    if admin or delivery.kind != NotificationChannel.Kind.WEBHOOK:
        return delivery.target
    try:
        parts = urlsplit(delivery.target)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(webhook)"
    return f"{parts.scheme}://{parts.hostname or ''}{port}/…"


class AlertDeliverySerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """A notice of an alert as its page shows it (the payload and secrets stay out)."""

    target = serializers.SerializerMethodField()
    kind = serializers.CharField(read_only=True, help_text="email or webhook")
    channel_name = serializers.CharField(source="channel.name", read_only=True, default=None)

    class Meta:
        model = Delivery
        fields = ["id", "event", "kind", "channel", "channel_name", "target", "status", "attempts", "last_error",
                  "last_status_code", "latency_ms", "created", "next_attempt_at", "sent_at"]  # fmt: skip
        read_only_fields = fields

    def get_target(self, obj: Delivery) -> str:
        return _shown_target(obj, _role(self) >= Role.ADMIN)


class AlertSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    server_name = serializers.CharField(source="server.name", read_only=True)
    rule_name = serializers.CharField(source="rule.name", read_only=True, default=None)
    acknowledged_by = serializers.CharField(source="acknowledged_by.username", read_only=True, default=None)
    active = serializers.SerializerMethodField()

    class Meta:
        model = Alert
        fields = ["id", "condition", "state", "active", "subject", "title", "detail", "server", "server_name",
                  "stream", "rule", "rule_name", "started_at", "due_at", "opened_at", "closed_at", "close_reason",
                  "acknowledged_at", "acknowledged_by", "reminders_sent", "next_reminder_at"]  # fmt: skip
        read_only_fields = fields

    def get_active(self, obj: Alert) -> bool:
        return obj.state in (Alert.State.PENDING, Alert.State.OPEN)


class AlertDetailSerializer(AlertSerializer):
    """An alert with its latest notices (``deliveries_count`` counts them all)."""

    deliveries = serializers.SerializerMethodField()
    deliveries_count = serializers.SerializerMethodField()

    class Meta(AlertSerializer.Meta):
        fields = [*AlertSerializer.Meta.fields, "deliveries_count", "deliveries"]
        read_only_fields = fields

    def get_deliveries_count(self, obj: Alert) -> int:
        return obj.deliveries.count()

    @extend_schema_field(AlertDeliverySerializer(many=True))
    def get_deliveries(self, obj: Alert) -> Any:
        rows = obj.deliveries.select_related("channel").order_by("-created", "-id")[:ALERT_DELIVERIES_SHOWN]
        return AlertDeliverySerializer(rows, many=True, context=self.context).data


ACTIVE_STATES = (Alert.State.PENDING, Alert.State.OPEN)
STATE_FILTER_CHOICES = [("active", "Active (pending or open)"), *Alert.State.choices]


class AlertFilter(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(choices=STATE_FILTER_CHOICES, method="filter_state")
    condition = django_filters.ChoiceFilter(choices=Condition.choices)
    subject = django_filters.CharFilter(max_length=400)
    acknowledged = django_filters.BooleanFilter(field_name="acknowledged_at", lookup_expr="isnull", exclude=True)
    since = django_filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="gte")

    class Meta:
        model = Alert
        fields = ["state", "condition", "server", "stream", "subject", "acknowledged", "since"]

    def filter_state(self, queryset: QuerySet[Alert], name: str, value: str) -> QuerySet[Alert]:
        if value == "active":
            return queryset.filter(state__in=ACTIVE_STATES)
        return queryset.filter(state=value)


class AlertViewSet(viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    """Alerts, active (pending or open) first, then newest first. Operators acknowledge open ones."""

    filterset_class = AlertFilter
    ordering_fields = ["started_at", "opened_at", "closed_at", "id"]
    search_fields = ["title", "subject"]
    action_roles = {"acknowledge": Role.OPERATOR}

    def get_queryset(self) -> QuerySet[Alert]:
        inactive = Case(When(state__in=ACTIVE_STATES, then=Value(0)), default=Value(1), output_field=IntegerField())
        return (
            Alert.objects.select_related("server", "rule", "acknowledged_by")
            .annotate(inactive=inactive)
            .order_by("inactive", "-started_at", "-id")
        )

    def get_serializer_class(self) -> Any:
        return AlertDetailSerializer if self.action == "retrieve" else AlertSerializer

    @extend_schema(request=None, responses={200: AlertSerializer, 409: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def acknowledge(self, request: Request, pk: str | None = None) -> Response:
        """Seen: no more reminders. 409 when the alert is not open or already acknowledged."""
        alert = self.get_object()
        if refused := _refuse_body(request):
            return refused
        with transaction.atomic():
            done = alerting.acknowledge(alert, request.user)
            if done:
                audit.record(audit.Actor.from_request(request), "acknowledge", alert,
                             before={"acknowledged_at": None, "acknowledged_by": None},
                             after={"acknowledged_at": alert.acknowledged_at.isoformat() if alert.acknowledged_at
                                    else None, "acknowledged_by": request.user.get_username()})  # fmt: skip
        alert = self.get_queryset().get(pk=alert.pk)
        if not done:
            if alert.state != Alert.State.OPEN:
                detail = f"This alert is {alert.state}: only an open alert can be acknowledged."
            else:
                who = alert.acknowledged_by.get_username() if alert.acknowledged_by else "someone"
                when = alert.acknowledged_at.isoformat() if alert.acknowledged_at else "earlier"
                detail = f"This alert was already acknowledged by {who} at {when}."
            return Response({"detail": detail}, status=status.HTTP_409_CONFLICT)
        return Response(AlertSerializer(alert, context=self.get_serializer_context()).data)


# --- mutes -----------------------------------------------------------------------------------------------


class MuteSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    server_name = serializers.CharField(source="server.name", read_only=True, default=None)
    stream_label = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None)  # type: ignore[assignment]
    active = serializers.SerializerMethodField()

    class Meta:
        model = Mute
        fields = ["id", "server", "server_name", "stream", "stream_label", "starts_at", "ends_at", "reason",
                  "active", "created_by", "created"]  # fmt: skip
        read_only_fields = fields

    def get_stream_label(self, obj: Mute) -> str | None:
        stream = obj.stream
        return f"{stream.server.name}: {stream.app}/{stream.name}" if stream is not None else None

    def get_active(self, obj: Mute) -> bool:
        return obj.starts_at <= timezone.now() < obj.ends_at


class MuteCreateSerializer(StrictSerializerMixin, serializers.Serializer):  # type: ignore[type-arg]
    """Input of POST /mutes/: one subject, a start (default now) and an end or a duration."""

    server = serializers.PrimaryKeyRelatedField(queryset=Server.objects.all(), required=False, allow_null=True)
    stream = serializers.PrimaryKeyRelatedField(
        queryset=Stream.objects.select_related("server"), required=False, allow_null=True
    )
    starts_at = serializers.DateTimeField(required=False, allow_null=True, help_text="default: now")
    ends_at = serializers.DateTimeField(required=False, allow_null=True)
    duration_s = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                          max_value=int(MAX_MUTE.total_seconds()))  # fmt: skip
    reason = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        server, stream = attrs.get("server"), attrs.get("stream")
        if (server is None) == (stream is None):
            raise serializers.ValidationError({"non_field_errors": ["Give exactly one of server or stream."]})
        now = timezone.now()
        starts: datetime = attrs.get("starts_at") or now
        if starts > now + MAX_MUTE_LEAD:
            raise serializers.ValidationError({"starts_at": ["A mute may start at most 365 days from now."]})
        ends, duration = attrs.get("ends_at"), attrs.get("duration_s")
        if (ends is None) == (duration is None):
            raise serializers.ValidationError({"ends_at": ["Give exactly one of ends_at or duration_s."]})
        if ends is None:
            ends = starts + timedelta(seconds=int(duration or 0))
        if ends <= starts:
            raise serializers.ValidationError({"ends_at": ["The end must be after the start."]})
        if ends - starts > MAX_MUTE:
            raise serializers.ValidationError({"ends_at": ["A mute lasts at most 30 days."]})
        if ends <= now:
            raise serializers.ValidationError({"ends_at": ["The end must be in the future."]})
        return {"server": server, "stream": stream, "starts_at": starts, "ends_at": ends, "reason": attrs["reason"]}


class MuteFilter(django_filters.FilterSet):
    active = django_filters.BooleanFilter(method="filter_active", label="in force now")

    class Meta:
        model = Mute
        fields = ["server", "stream", "active"]

    def filter_active(self, queryset: QuerySet[Mute], name: str, value: bool) -> QuerySet[Mute]:
        now = timezone.now()
        in_force = models.Q(starts_at__lte=now, ends_at__gt=now)
        return queryset.filter(in_force) if value else queryset.exclude(in_force)


class MuteViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,  # type: ignore[type-arg]
):
    """Mutes and maintenance windows: no alerts for a server or a stream from ``starts_at`` to ``ends_at``.
    Delete one to end it early."""

    serializer_class = MuteSerializer
    filterset_class = MuteFilter
    ordering_fields = ["starts_at", "ends_at", "created"]
    action_roles = {"create": Role.OPERATOR, "destroy": Role.OPERATOR}

    def get_queryset(self) -> QuerySet[Mute]:
        return Mute.objects.select_related("server", "stream__server", "created_by").order_by("-starts_at", "-id")

    @extend_schema(request=MuteCreateSerializer, responses={201: MuteSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = MuteCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        user: Any = request.user
        mute = Mute(**body.validated_data, created_by=user)
        _save_audited(mute, audit.Actor.from_request(request))
        return Response(MuteSerializer(mute, context=self.get_serializer_context()).data,
                        status=status.HTTP_201_CREATED)  # fmt: skip

    def perform_destroy(self, instance: Mute) -> None:
        _delete_audited(instance, audit.Actor.from_request(self.request))


# --- rules -----------------------------------------------------------------------------------------------


class AlertRuleSerializer(StrictSerializerMixin, serializers.ModelSerializer):  # type: ignore[type-arg]
    server = serializers.PrimaryKeyRelatedField(queryset=Server.objects.all(), required=False, allow_null=True)
    application = serializers.PrimaryKeyRelatedField(
        queryset=Application.objects.all(), required=False, allow_null=True
    )
    key = serializers.PrimaryKeyRelatedField(queryset=StreamKey.objects.all(), required=False, allow_null=True)
    duration_s = serializers.IntegerField(min_value=0, max_value=MAX_DURATION_S, required=False)
    threshold_kbps = serializers.FloatField(required=False, allow_null=True)
    threshold_pct = serializers.FloatField(required=False, allow_null=True)
    schedule = ScheduleField(required=False)
    emails = EmailListField(required=False)
    channels = ChannelIdsField(required=False)
    scope = serializers.CharField(read_only=True)

    class Meta:
        model = AlertRule
        fields = ["id", "name", "condition", "enabled", "scope", "server", "application", "key", "duration_s",
                  "threshold_kbps", "threshold_pct", "schedule", "channels", "emails", "created"]  # fmt: skip
        read_only_fields = ["id", "scope", "created"]

    def validate_threshold_kbps(self, value: float | None) -> float | None:
        if value is not None and not 0 < value <= MAX_KBPS:
            raise serializers.ValidationError(f"Must be above 0 and at most {MAX_KBPS:.0f} kbps.")
        return value

    def validate_threshold_pct(self, value: float | None) -> float | None:
        if value is not None and not 0 < value <= 100:
            raise serializers.ValidationError("Must be above 0 and at most 100 (%).")
        return value

    def validate_channels(self, value: list[int]) -> list[NotificationChannel]:
        ids = list(dict.fromkeys(value))
        found = NotificationChannel.objects.in_bulk(ids)
        missing = [str(pk) for pk in ids if pk not in found]
        if missing:
            raise serializers.ValidationError(f"Unknown channel id(s): {', '.join(missing[:10])}.")
        return [found[pk] for pk in ids]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        instance = self.instance
        defaults: dict[str, Any] = {"server": None, "application": None, "key": None, "threshold_kbps": None,
                    "threshold_pct": None, "schedule": []}  # fmt: skip

        def current(name: str) -> Any:
            if name in attrs:
                return attrs[name]
            return getattr(instance, name) if instance is not None else defaults.get(name)

        errors: dict[str, list[str]] = {}
        scopes = [name for name in ("server", "application", "key") if current(name) is not None]
        if len(scopes) > 1:
            errors["non_field_errors"] = [f"Set at most one scope of server, application and key (got "
                                          f"{' and '.join(scopes)}); none at all makes a global rule."]  # fmt: skip
        condition = current("condition")
        if condition == Condition.STREAM_UNSTABLE:
            errors["condition"] = ["'Stream unstable' alerts follow the stream_dropped rule of the stream; "
                                   "make a stream_dropped rule instead."]  # fmt: skip
        if condition == Condition.DEPLOY_FAILED:
            errors["condition"] = ["'Config deploy failed' alerts are raised by deploys and notify like the "
                                   "server's server_down rule; make a server_down rule instead."]  # fmt: skip
        if condition == Condition.EXPECTED_LIVE and current("key") is None:
            errors["key"] = ["An expected_live rule needs the publish key expected to be live."]
        if condition == Condition.SERVER_DOWN and (current("application") is not None or current("key") is not None):
            errors.setdefault("non_field_errors", []).append(
                "A server_down rule is global or for one server, not for an application or a key."
            )
        if condition == Condition.LOW_BITRATE:
            if current("threshold_kbps") is None and current("threshold_pct") is None:
                errors["threshold_kbps"] = ["A low_bitrate rule needs threshold_kbps or threshold_pct (or both)."]
        else:
            for name in ("threshold_kbps", "threshold_pct"):
                if current(name) is not None:
                    errors[name] = ["Only low_bitrate rules have a threshold: leave it null."]
        if condition != Condition.EXPECTED_LIVE and current("schedule"):
            errors["schedule"] = ["Only expected_live rules have a schedule: leave it empty."]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class AlertRuleFilter(django_filters.FilterSet):
    condition = django_filters.ChoiceFilter(choices=Condition.choices)

    class Meta:
        model = AlertRule
        fields = ["condition", "enabled", "server", "application", "key"]


class AlertRuleViewSet(viewsets.ModelViewSet):  # type: ignore[type-arg]
    """Alert rules: a condition, globally or for one server, application or key, and who hears about it."""

    serializer_class = AlertRuleSerializer
    filterset_class = AlertRuleFilter
    ordering_fields = ["name", "condition", "created"]
    search_fields = ["name"]

    def get_queryset(self) -> QuerySet[AlertRule]:
        return AlertRule.objects.prefetch_related("channels").order_by("condition", "name", "id")

    def perform_create(self, serializer: Any) -> None:
        self._save(serializer, AlertRule())

    def perform_update(self, serializer: Any) -> None:
        self._save(serializer, serializer.instance)

    def _save(self, serializer: Any, rule: AlertRule) -> None:
        data = dict(serializer.validated_data)
        channels = data.pop("channels", None)
        for name, value in data.items():
            setattr(rule, name, value)
        _save_audited(rule, audit.Actor.from_request(self.request), channels=channels)
        serializer.instance = AlertRule.objects.prefetch_related("channels").get(pk=rule.pk)

    def perform_destroy(self, instance: AlertRule) -> None:
        _delete_audited(instance, audit.Actor.from_request(self.request))


# --- notification channels -------------------------------------------------------------------------------


class ChannelSerializer(StrictSerializerMixin, serializers.ModelSerializer):  # type: ignore[type-arg]
    """A channel as admins read and write it: never its secret (only whether it has one)."""

    emails = EmailListField(required=False, help_text="e-mail channels: the recipients (1 to 50)")
    url = serializers.URLField(max_length=500, required=False, allow_blank=True,
                               help_text="webhook channels: where to POST (http or https)")  # fmt: skip
    has_secret = serializers.SerializerMethodField()

    class Meta:
        model = NotificationChannel
        fields = ["id", "name", "kind", "enabled", "emails", "url", "has_secret", "consecutive_failures",
                  "disabled_reason", "created"]  # fmt: skip
        read_only_fields = ["id", "has_secret", "consecutive_failures", "disabled_reason", "created"]

    def get_has_secret(self, obj: NotificationChannel) -> bool:
        return bool(obj.secret)

    def validate_url(self, value: str) -> str:
        if not value:
            return value
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError when out of range
        except ValueError:
            raise serializers.ValidationError("Enter a valid URL (the port must be 1 to 65535).") from None
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise serializers.ValidationError("A webhook URL must be http:// or https:// with a host.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        instance = self.instance
        kind = attrs.get("kind", instance.kind if instance else None)
        if instance is not None and "kind" in attrs and attrs["kind"] != instance.kind:
            raise serializers.ValidationError({"kind": ["The kind of a channel cannot change: make a new channel."]})
        emails = attrs.get("emails", instance.emails if instance else [])
        url = attrs.get("url", instance.url if instance else "")
        errors: dict[str, list[str]] = {}
        if kind == NotificationChannel.Kind.EMAIL:
            if not emails:
                errors["emails"] = ["An e-mail channel needs at least one address."]
            if url:
                errors["url"] = ["Only webhook channels have a URL: leave it empty."]
        elif kind == NotificationChannel.Kind.WEBHOOK:
            if not url:
                errors["url"] = ["A webhook channel needs a URL."]
            if emails:
                errors["emails"] = ["Only e-mail channels have addresses: leave it empty."]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class IssuedChannelSerializer(ChannelSerializer):
    """A channel and its webhook secret, returned this once (on create and on rotate)."""

    kind = serializers.CharField(read_only=True, help_text="email or webhook")
    secret = serializers.SerializerMethodField()

    class Meta(ChannelSerializer.Meta):
        fields = [*ChannelSerializer.Meta.fields, "secret"]
        read_only_fields = fields

    def get_secret(self, obj: NotificationChannel) -> str | None:
        return obj.secret or None


class TestAddressSerializer(StrictSerializerMixin, serializers.Serializer):  # type: ignore[type-arg]
    email = serializers.EmailField(max_length=254)


TEST_RESULT = inline_serializer(
    "TestSendResult",
    {
        "delivery": serializers.IntegerField(),
        "sent": serializers.BooleanField(),
        "status": serializers.ChoiceField(choices=Delivery.Status.choices),
        "target": serializers.CharField(),
        "last_error": serializers.CharField(),
        "last_status_code": serializers.IntegerField(allow_null=True),
        "latency_ms": serializers.FloatField(allow_null=True),
        "detail": serializers.CharField(),
    },
)


def _test_send(request: Request, channel: NotificationChannel | None, email: str = "") -> Response:
    """Queue a test notice (audited), then try it at once, outside the transaction."""
    try:
        with transaction.atomic():
            delivery = alerting.queue_test(channel=channel, email=email)
            audit.record(audit.Actor.from_request(request), "test", channel or delivery,
                         object_type="" if channel else "monitoring.delivery",
                         message=f"test notice {delivery.pk} to {delivery.target}")  # fmt: skip
    except ValueError as exc:
        return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
    error = ""
    try:
        alerting.send_now(delivery)
    except Exception as exc:  # the send must not turn into a 500: the notice stays queued
        log.exception("test notice %s raised", delivery.pk)
        error = f"{type(exc).__name__}: {exc}"[:500]
    delivery.refresh_from_db()
    sent = delivery.status == Delivery.Status.SENT
    last_error = delivery.last_error or error
    if sent:
        detail = "The test notice was sent."
    elif delivery.status == Delivery.Status.FAILED:
        detail = f"The test notice could not be sent and will not be retried: {last_error}"
    else:
        detail = f"The test notice could not be sent now ({last_error}); it stays queued and will be retried."
    return Response({
        "delivery": delivery.pk, "sent": sent, "status": delivery.status, "target": delivery.target,
        "last_error": last_error, "last_status_code": delivery.last_status_code,
        "latency_ms": delivery.latency_ms, "detail": detail,
    })  # fmt: skip


class ChannelViewSet(viewsets.ModelViewSet):  # type: ignore[type-arg]
    """Notification channels (admins only: they hold addresses, URLs and secrets). A webhook's signing
    secret is generated here and shown once, on create and on rotate-secret."""

    serializer_class = ChannelSerializer
    filterset_fields = ["kind", "enabled"]
    ordering_fields = ["name", "created"]
    search_fields = ["name"]
    action_roles = {
        "list": Role.ADMIN, "retrieve": Role.ADMIN, "create": Role.ADMIN, "update": Role.ADMIN,
        "partial_update": Role.ADMIN, "destroy": Role.ADMIN, "rotate_secret": Role.ADMIN, "test": Role.ADMIN,
        "test_address": Role.ADMIN,
    }  # fmt: skip

    def get_queryset(self) -> QuerySet[NotificationChannel]:
        return NotificationChannel.objects.order_by("name", "id")

    @extend_schema(request=ChannelSerializer, responses={201: IssuedChannelSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Add a channel. A webhook's answer carries its signing secret: this once only."""
        body = ChannelSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        channel = NotificationChannel(**body.validated_data)
        if channel.kind == NotificationChannel.Kind.WEBHOOK:
            channel.secret = _new_secret()
        _save_audited(channel, audit.Actor.from_request(request))
        return Response(IssuedChannelSerializer(channel).data, status=status.HTTP_201_CREATED, headers=NO_STORE)

    def perform_update(self, serializer: Any) -> None:
        channel: NotificationChannel = serializer.instance
        data = dict(serializer.validated_data)
        if data.get("enabled") is True and not channel.enabled:
            channel.consecutive_failures, channel.disabled_reason = 0, ""
        for name, value in data.items():
            setattr(channel, name, value)
        _save_audited(channel, audit.Actor.from_request(self.request))

    def perform_destroy(self, instance: NotificationChannel) -> None:
        rules = instance.rules.count()
        _delete_audited(instance, audit.Actor.from_request(self.request),
                        message=f"removed from {rules} rule(s)" if rules else "")  # fmt: skip

    @extend_schema(request=None, responses={200: IssuedChannelSerializer})
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request: Request, pk: str | None = None) -> Response:
        """A new signing secret for a webhook, shown this once; the old one stops working now."""
        channel = self.get_object()
        if refused := _refuse_body(request):
            return refused
        if channel.kind != NotificationChannel.Kind.WEBHOOK:
            return Response({"detail": "Only webhook channels have a secret."}, status=status.HTTP_400_BAD_REQUEST)
        with transaction.atomic():
            channel.secret = _new_secret()
            channel.save(update_fields=["secret"])
            audit.record(audit.Actor.from_request(request), "rotate_secret", channel, message="webhook secret rotated")
        return Response(IssuedChannelSerializer(channel).data, headers=NO_STORE)

    @extend_schema(request=None, responses={200: TEST_RESULT}, operation_id="alert_channels_test")
    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str | None = None) -> Response:
        """Send a test notice to this channel now (its first address, or the webhook). 200 even when the send
        failed: ``status`` and ``last_error`` tell, and the notice stays queued for retries."""
        channel = self.get_object()
        return _refuse_body(request) or _test_send(request, channel)

    @extend_schema(
        request=TestAddressSerializer, responses={200: TEST_RESULT}, operation_id="alert_channels_test_address"
    )
    @action(detail=False, methods=["post"], url_path="test", url_name="test-address")
    def test_address(self, request: Request) -> Response:
        """Send a test e-mail to one address now (``{"email": "…"}``)."""
        body = TestAddressSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return _test_send(request, None, email=body.validated_data["email"])


# --- deliveries ------------------------------------------------------------------------------------------


class DeliverySerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    kind = serializers.CharField(read_only=True, help_text="email or webhook")
    channel_name = serializers.CharField(source="channel.name", read_only=True, default=None)

    class Meta:
        model = Delivery
        fields = ["id", "alert", "channel", "channel_name", "kind", "target", "event", "idempotency_key", "status",
                  "attempts", "next_attempt_at", "last_error", "last_status_code", "latency_ms", "created",
                  "sent_at", "payload"]  # fmt: skip
        read_only_fields = fields


class DeliveryViewSet(viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    """Every notice, stored before it is sent (admins): what went where, how many attempts, why it failed."""

    serializer_class = DeliverySerializer
    filterset_fields = ["status", "alert", "channel", "kind", "event"]
    ordering_fields = ["created", "next_attempt_at", "sent_at"]
    action_roles = {"list": Role.ADMIN, "retrieve": Role.ADMIN, "backlog": Role.ADMIN}

    def get_queryset(self) -> QuerySet[Delivery]:
        return Delivery.objects.select_related("channel").order_by("-created", "-id")

    @extend_schema(responses={200: inline_serializer("DeliveryBacklog", {
        "pending": serializers.IntegerField(), "sending": serializers.IntegerField(),
        "failed": serializers.IntegerField()})})  # fmt: skip
    @action(detail=False, methods=["get"])
    def backlog(self, request: Request) -> Response:
        """Notices not sent yet, by status: nothing is dropped silently."""
        return Response(alerting.backlog())


# --- subscriptions ---------------------------------------------------------------------------------------


class SubscriptionSerializer(StrictSerializerMixin, serializers.ModelSerializer):  # type: ignore[type-arg]
    server = serializers.PrimaryKeyRelatedField(queryset=Server.objects.all(), required=False, allow_null=True)
    application = serializers.PrimaryKeyRelatedField(
        queryset=Application.objects.select_related("server"), required=False, allow_null=True
    )
    server_name = serializers.CharField(source="server.name", read_only=True, default=None)
    application_label = serializers.SerializerMethodField()
    email = serializers.SerializerMethodField()

    class Meta:
        model = Subscription
        fields = ["id", "server", "server_name", "application", "application_label", "email"]
        read_only_fields = ["id", "server_name", "application_label", "email"]

    def get_application_label(self, obj: Subscription) -> str | None:
        app = obj.application
        return f"{app.server.name}/{app.name}" if app is not None else None

    def get_email(self, obj: Subscription) -> str | None:
        """Where the alert e-mails go (the account's address); null: the account has none."""
        return obj.user.email or None

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if (attrs.get("server") is None) == (attrs.get("application") is None):
            raise serializers.ValidationError({"non_field_errors": ["Give exactly one of server or application."]})
        return attrs


class SubscriptionViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,  # type: ignore[type-arg]
):
    """Your own subscriptions: the alert e-mails of a server or an application reach your account's address.
    Everyone sees and manages only their own."""

    serializer_class = SubscriptionSerializer
    filterset_fields = ["server", "application"]
    action_roles = {"list": Role.VIEWER, "retrieve": Role.VIEWER, "create": Role.VIEWER, "destroy": Role.VIEWER}

    def get_queryset(self) -> QuerySet[Subscription]:
        if getattr(self, "swagger_fake_view", False):
            return Subscription.objects.none()
        return (
            Subscription.objects.filter(user=self._user())
            .select_related("user", "server", "application__server")
            .order_by("id")
        )

    def _user(self) -> Any:
        return self.request.user

    def perform_create(self, serializer: Any) -> None:
        user = self._user()
        data = serializer.validated_data
        with transaction.atomic():
            # One subscription per subject: the database cannot tell (NULL columns), so creates of one user
            # are serialized on their user row.
            get_user_model().objects.select_for_update().get(pk=user.pk)
            existing = Subscription.objects.filter(user=user, server=data.get("server"),
                                                   application=data.get("application"))  # fmt: skip
            if existing.exists():
                what = "server" if data.get("server") is not None else "application"
                raise serializers.ValidationError({"non_field_errors": [f"You are already subscribed to this {what}."]})
            subscription = Subscription(user=user, server=data.get("server"), application=data.get("application"))
            audit.save_audited(subscription, audit.Actor.from_request(self.request))
        serializer.instance = subscription

    def perform_destroy(self, instance: Subscription) -> None:
        audit.delete_audited(instance, audit.Actor.from_request(self.request))
