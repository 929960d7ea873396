"""What polling keeps: each server's latest state and health, each stream's identity and latest
figures, and their history (samples at poll resolution, 1-minute rollups).

The latest ``ServerSnapshot`` of a server is stored whole (``ServerStatus.snapshot``, its ``to_json()``)
so pages and the API read one row per server; history keeps only the figures charts plot.
"""

from __future__ import annotations

from django.db import models

from streams.models import Server


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
