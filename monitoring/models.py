"""What polling keeps: each server's latest state and health, each stream's identity and latest
figures, and their history (samples at poll resolution, 1-minute rollups).

The latest ``ServerSnapshot`` of a server is stored whole (``ServerStatus.snapshot``, its ``to_json()``)
so pages and the API read one row per server; history keeps only the figures charts plot.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from console.crypto import EncryptedTextField
from streams.models import Application, Server, StreamKey


class Health(models.TextChoices):
    UNKNOWN = "unknown", "Unknown"  # never polled yet
    UP = "up", "Up"
    DEGRADED = "degraded", "Degraded"  # failing polls, not yet down
    DOWN = "down", "Down"


class ServerStatus(models.Model):
    """One row per polled server: its latest snapshot, health and poll counters."""

    server = models.OneToOneField(Server, on_delete=models.CASCADE, related_name="status", primary_key=True)
    health = models.CharField(max_length=10, choices=Health.choices, default=Health.UNKNOWN)
    health_since = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    consecutive_successes = models.PositiveIntegerField(default=0)
    last_poll_at = models.DateTimeField(null=True, blank=True)
    last_ok_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    last_poll_ms = models.FloatField(null=True, blank=True)
    polls_total = models.PositiveBigIntegerField(default=0)
    poll_errors_total = models.PositiveBigIntegerField(default=0)
    snapshot = models.JSONField(null=True, blank=True)  # ServerSnapshot.to_json() of the latest poll
    # nginx-rtmp with worker_processes > 1: /stat answers from one worker at a time (recent pids seen).
    recent_worker_pids = models.JSONField(default=list, blank=True)
    warning = models.CharField(max_length=300, blank=True)

    def __str__(self) -> str:
        return f"{self.server_id}: {self.health}"


class HealthTransition(models.Model):
    server = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="health_transitions")
    at = models.DateTimeField()
    from_health = models.CharField(max_length=10, choices=Health.choices)
    to_health = models.CharField(max_length=10, choices=Health.choices)
    reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["server", "-at"], name="monitoring_transition_server")]

    def __str__(self) -> str:
        return f"{self.server_id}: {self.from_health} -> {self.to_health} at {self.at:%Y-%m-%d %H:%M:%S}"


class Stream(models.Model):
    """A stream name on a server application: a stable id for the API, pages and ``stream.<id>`` groups.

    ``live`` is what the operator sees: set by a publish callback or a poll that shows it publishing,
    cleared by publish_done or by polls that no longer show it (after the reload grace when a callback
    session is still open). ``latest`` is the last polled ``StreamSnapshot.to_json()``.
    """

    server = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="streams")
    app = models.CharField(max_length=64)
    name = models.CharField(max_length=255)
    live = models.BooleanField(default=False)
    live_since = models.DateTimeField(null=True, blank=True)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    missing_since = models.DateTimeField(null=True, blank=True)  # live but absent from the last polls
    latest = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["server_id", "app", "name"]
        constraints = [
            models.UniqueConstraint(fields=["server", "app", "name"], name="monitoring_stream_unique_name"),
        ]
        indexes = [models.Index(fields=["live", "server"], name="monitoring_stream_live")]

    def __str__(self) -> str:
        return f"{self.app}/{self.name} on {self.server_id}"


class StreamSample(models.Model):
    """One poll's figures for one stream (kept TALLY_HISTORY_SAMPLES_HOURS, 48 h by default)."""

    id = models.BigAutoField(primary_key=True)
    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="+", db_index=False)
    at = models.DateTimeField()
    bitrate_in_kbps = models.FloatField(null=True)
    bitrate_out_kbps = models.FloatField(null=True)
    viewers = models.IntegerField(null=True)
    fps = models.FloatField(null=True)
    dropped_frames = models.BigIntegerField(null=True)

    class Meta:
        indexes = [
            models.Index(fields=["stream", "at"], name="monitoring_sample_stream_at"),
            models.Index(fields=["at"], name="monitoring_sample_at"),  # pruning
        ]

    def __str__(self) -> str:
        return f"stream {self.stream_id} at {self.at:%Y-%m-%d %H:%M:%S}"


class StreamRollup(models.Model):
    """One minute of a stream's samples (kept TALLY_HISTORY_ROLLUP_DAYS, 90 days by default)."""

    id = models.BigAutoField(primary_key=True)
    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="+", db_index=False)
    minute = models.DateTimeField()
    samples = models.PositiveIntegerField()
    bitrate_in_avg = models.FloatField(null=True)
    bitrate_in_min = models.FloatField(null=True)
    bitrate_in_max = models.FloatField(null=True)
    bitrate_out_avg = models.FloatField(null=True)
    viewers_avg = models.FloatField(null=True)
    viewers_max = models.IntegerField(null=True)
    fps_avg = models.FloatField(null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["stream", "minute"], name="monitoring_rollup_stream_minute"),
        ]
        indexes = [models.Index(fields=["minute"], name="monitoring_rollup_minute")]

    def __str__(self) -> str:
        return f"stream {self.stream_id} minute {self.minute:%Y-%m-%d %H:%M}"


class ServerSample(models.Model):
    """One poll's figures for one server (same retention as stream samples)."""

    id = models.BigAutoField(primary_key=True)
    server = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="+", db_index=False)
    at = models.DateTimeField()
    reachable = models.BooleanField()
    connections = models.IntegerField(null=True)
    bandwidth_in_kbps = models.FloatField(null=True)
    bandwidth_out_kbps = models.FloatField(null=True)
    streams = models.IntegerField(null=True)
    poll_ms = models.FloatField(null=True)

    class Meta:
        indexes = [
            models.Index(fields=["server", "at"], name="monitoring_srvsample_server_at"),
            models.Index(fields=["at"], name="monitoring_srvsample_at"),
        ]

    def __str__(self) -> str:
        return f"server {self.server_id} at {self.at:%Y-%m-%d %H:%M:%S}"


class ServerRollup(models.Model):
    """One minute of a server's samples (same retention as stream rollups)."""

    id = models.BigAutoField(primary_key=True)
    server = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="+", db_index=False)
    minute = models.DateTimeField()
    samples = models.PositiveIntegerField()
    reachable_share = models.FloatField()
    connections_avg = models.FloatField(null=True)
    bandwidth_in_avg = models.FloatField(null=True)
    bandwidth_out_avg = models.FloatField(null=True)
    streams_max = models.IntegerField(null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["server", "minute"], name="monitoring_srvrollup_server_minute"),
        ]
        indexes = [models.Index(fields=["minute"], name="monitoring_srvrollup_minute")]

    def __str__(self) -> str:
        return f"server {self.server_id} minute {self.minute:%Y-%m-%d %H:%M}"


class FleetSample(models.Model):
    """The whole fleet after one poll cycle: the overview's sparklines (same retention as samples)."""

    id = models.BigAutoField(primary_key=True)
    at = models.DateTimeField(db_index=True)
    servers_up = models.IntegerField()
    servers_degraded = models.IntegerField()
    servers_down = models.IntegerField()
    live_streams = models.IntegerField()
    viewers = models.IntegerField()
    ingest_kbps = models.FloatField()
    egress_kbps = models.FloatField()

    def __str__(self) -> str:
        return f"fleet at {self.at:%Y-%m-%d %H:%M:%S}"


# --- alerts ----------------------------------------------------------------------------------------------


class Condition(models.TextChoices):
    STREAM_DROPPED = "stream_dropped", "Stream dropped"
    STREAM_UNSTABLE = "stream_unstable", "Stream unstable"
    EXPECTED_LIVE = "expected_live", "Expected live, not live"
    SERVER_DOWN = "server_down", "Server down"
    LOW_BITRATE = "low_bitrate", "Low bitrate"
    NO_VIDEO = "no_video", "No video"
    DEPLOY_FAILED = "deploy_failed", "Config deploy failed"


class NotificationChannel(models.Model):
    """Where alert notices go: an e-mail list, or a webhook signed with the channel's secret (HMAC-SHA256).

    A webhook that fails permanently (HTTP 4xx other than 408/429) ``DISABLE_AFTER`` times in a row is
    disabled, with the reason kept in ``disabled_reason``; enabling it again resets the count.
    """

    class Kind(models.TextChoices):
        EMAIL = "email", "E-mail"
        WEBHOOK = "webhook", "Webhook"

    DISABLE_AFTER = 5
    AUDIT_MASKED_FIELDS = ("secret",)

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    enabled = models.BooleanField(default=True)
    emails = models.JSONField(default=list, blank=True)  # e-mail: the recipients
    url = models.URLField(max_length=500, blank=True)  # webhook: where to POST
    secret = EncryptedTextField(blank=True)  # webhook: the HMAC key (generated, shown once)
    consecutive_failures = models.PositiveIntegerField(default=0)
    disabled_reason = models.CharField(max_length=300, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class AlertRule(models.Model):
    """A condition to watch, globally or for one server, application or publish key (the most specific
    enabled rule of a condition applies to a subject), and who hears about it.

    ``duration_s``: how long the condition must hold before an alert opens (for a dropped stream, the
    grace period in which a return cancels it). ``threshold_kbps`` / ``threshold_pct``: low bitrate below
    an absolute figure, or below a share of the stream's own median of the last 10 minutes.
    ``schedule``: for "expected live", weekly windows ``[{"days": [0-6, Monday=0], "start": "HH:MM",
    "end": "HH:MM"}]`` in the server's time zone (UTC); empty means always.
    """

    name = models.CharField(max_length=100)
    condition = models.CharField(max_length=20, choices=Condition.choices)
    enabled = models.BooleanField(default=True)
    server = models.ForeignKey(Server, on_delete=models.CASCADE, null=True, blank=True, related_name="alert_rules")
    application = models.ForeignKey(
        Application, on_delete=models.CASCADE, null=True, blank=True, related_name="alert_rules"
    )
    key = models.ForeignKey(StreamKey, on_delete=models.CASCADE, null=True, blank=True, related_name="alert_rules")
    duration_s = models.PositiveIntegerField(default=15)
    threshold_kbps = models.FloatField(null=True, blank=True)
    threshold_pct = models.FloatField(null=True, blank=True)
    schedule = models.JSONField(default=list, blank=True)
    channels = models.ManyToManyField(NotificationChannel, blank=True, related_name="rules")
    emails = models.JSONField(default=list, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["condition", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.condition})"

    @property
    def scope(self) -> str:
        if self.key_id:
            return f"key {self.key_id}"
        if self.application_id:
            return f"application {self.application_id}"
        if self.server_id:
            return f"server {self.server_id}"
        return "global"


class Alert(models.Model):
    """One occurrence of a condition on a subject (``server:<id>`` or ``stream:<server id>:<app>/<name>``).

    ``pending`` while the condition has not held for the rule's duration (a dropped stream in its grace
    period), then ``open`` (notices go out), then ``closed`` (a recovery notice goes out); ``cancelled``
    when it ended while pending (the stream came back in time). At most one pending or open alert per
    (condition, subject).
    """

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"
        CANCELLED = "cancelled", "Cancelled"

    rule = models.ForeignKey(AlertRule, on_delete=models.SET_NULL, null=True, blank=True, related_name="alerts")
    condition = models.CharField(max_length=20, choices=Condition.choices)
    subject = models.CharField(max_length=400)
    server = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="alerts")
    stream = models.ForeignKey(Stream, on_delete=models.SET_NULL, null=True, blank=True, related_name="alerts")
    title = models.CharField(max_length=300)
    detail = models.TextField(blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    started_at = models.DateTimeField()  # when the condition began
    due_at = models.DateTimeField(null=True, blank=True)  # pending: opens then if the condition still holds
    opened_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    close_reason = models.CharField(max_length=200, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reminders_sent = models.PositiveIntegerField(default=0)
    next_reminder_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["condition", "subject"],
                condition=models.Q(state__in=["pending", "open"]),
                name="monitoring_alert_one_active_per_subject",
            ),
        ]
        indexes = [
            models.Index(fields=["state", "due_at"], name="monitoring_alert_state_due"),
            models.Index(fields=["subject", "started_at"], name="monitoring_alert_subject"),
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.state})"


class Delivery(models.Model):
    """One notice to one recipient (an e-mail address or a webhook channel), stored before it is sent.

    Sent at least once: a worker claims it for ``TALLY_DELIVERY_LEASE_S`` (``sending``); if the worker dies
    the claim expires and another sends it again, with the same ``idempotency_key``. Failures are retried
    with exponential backoff; an alert's e-mail never gives up, a webhook does after ``MAX_WEBHOOK_ATTEMPTS``
    and a test send after ``MAX_TEST_ATTEMPTS``.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed (gave up)"

    class Event(models.TextChoices):
        OPENED = "opened", "Alert"
        RECOVERED = "recovered", "Recovered"
        REMINDER = "reminder", "Reminder"
        TEST = "test", "Test"

    MAX_WEBHOOK_ATTEMPTS = 10
    MAX_TEST_ATTEMPTS = 3

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, null=True, blank=True, related_name="deliveries")
    channel = models.ForeignKey(
        NotificationChannel, on_delete=models.SET_NULL, null=True, blank=True, related_name="deliveries"
    )
    kind = models.CharField(max_length=10, choices=NotificationChannel.Kind.choices)
    target = models.CharField(max_length=500)  # the e-mail address or the webhook URL
    event = models.CharField(max_length=10, choices=Event.choices)
    idempotency_key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    created = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="monitoring_delivery_due")]

    def __str__(self) -> str:
        return f"{self.event} to {self.target} ({self.status})"


class Mute(models.Model):
    """No alerts for a server or a stream between ``starts_at`` and ``ends_at``: a mute, or a planned
    maintenance window. Alerts already open stay open (and quiet: no reminders while muted)."""

    server = models.ForeignKey(Server, on_delete=models.CASCADE, null=True, blank=True, related_name="mutes")
    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, null=True, blank=True, related_name="mutes")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    reason = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-starts_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(server__isnull=False) | models.Q(stream__isnull=False),
                name="monitoring_mute_subject",
            ),
            models.CheckConstraint(condition=models.Q(ends_at__gt=models.F("starts_at")), name="monitoring_mute_span"),
        ]

    def __str__(self) -> str:
        return f"mute {self.server_id or ''}{self.stream_id or ''} until {self.ends_at:%Y-%m-%d %H:%M}"


class Subscription(models.Model):
    """A user gets the alert e-mails of a server or an application (at the address of their account)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="alert_subscriptions")
    server = models.ForeignKey(Server, on_delete=models.CASCADE, null=True, blank=True, related_name="subscriptions")
    application = models.ForeignKey(
        Application, on_delete=models.CASCADE, null=True, blank=True, related_name="subscriptions"
    )

    class Meta:
        constraints = [
            # One per (user, server) and per (user, application): the other column is NULL, and NULLs are
            # distinct in a plain unique constraint.
            models.UniqueConstraint(
                fields=["user", "server"],
                condition=models.Q(server__isnull=False),
                name="monitoring_subscription_server_unique",
            ),
            models.UniqueConstraint(
                fields=["user", "application"],
                condition=models.Q(application__isnull=False),
                name="monitoring_subscription_app_unique",
            ),
            models.CheckConstraint(
                condition=models.Q(server__isnull=False) | models.Q(application__isnull=False),
                name="monitoring_subscription_subject",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} -> {self.server_id or ''}{self.application_id or ''}"
