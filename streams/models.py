"""Inventory: servers, their applications, and the publish keys of each application."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from console.crypto import EncryptedTextField
from console.roles import Role as UserRole
from console.roles import role_of
from streams import validators
from streams.app_settings import clean_app_settings, default_app_settings

HOOK_SECRET_GRACE = timedelta(hours=24)


def address_in_networks(address: str | None, cidrs: list[str]) -> bool:
    """True when ``cidrs`` is empty or ``address`` is inside one of them."""
    if not cidrs:
        return True
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def new_hook_secret() -> str:
    return secrets.token_urlsafe(24)


class ServerQuerySet(models.QuerySet["Server"]):
    def visible_to(self, user: Any) -> ServerQuerySet:
        """Every server for any role; nothing for users without a role."""
        return self if role_of(user) >= UserRole.VIEWER else self.none()


class Server(models.Model):
    """One nginx-rtmp or Wowza Streaming Engine host that Tally monitors and configures."""

    class Kind(models.TextChoices):
        NGINX_RTMP = "nginx-rtmp", "nginx-rtmp"
        WOWZA = "wowza", "Wowza Streaming Engine"

    class Role(models.TextChoices):
        ORIGIN = "origin", "Origin"
        EDGE = "edge", "Edge"
        PROXY = "proxy", "TCP proxy"

    class AuthMethod(models.TextChoices):
        BASIC = "basic", "Basic"
        DIGEST = "digest", "Digest"

    class ReloadMode(models.TextChoices):
        GRACEFUL = "graceful", "Graceful (live sessions stay on the old worker)"
        RECONNECT = "reconnect", "Reconnect (end the old worker after a delay)"

    class ProxyMethod(models.TextChoices):
        ROUND_ROBIN = "round_robin", "Round robin"
        LEAST_CONN = "least_conn", "Least connections"
        HASH = "hash", "Client IP hash"

    AUDIT_MASKED_FIELDS = ("wowza_username", "wowza_password", "hook_secret", "hook_secret_previous", "agent_token")

    name = models.CharField(max_length=64, unique=True, validators=[validators.name_validator])
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.NGINX_RTMP)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ORIGIN)
    host = models.CharField(max_length=253, validators=[validators.validate_host])
    rtmp_port = models.PositiveIntegerField(default=1935, validators=[MinValueValidator(1), MaxValueValidator(65535)])
    enabled = models.BooleanField(default=True)
    # Seconds between polls of this server (the beat checks every TALLY_POLL_INTERVAL_S).
    poll_interval_s = models.PositiveIntegerField(
        "poll interval (s)", default=5, validators=[MinValueValidator(1), MaxValueValidator(3600)]
    )
    tags = models.JSONField(default=list, blank=True, validators=[validators.validate_tags])
    notes = models.TextField(blank=True, max_length=5000)
    # nginx-rtmp endpoints.
    stat_url = models.CharField(max_length=500, blank=True, validators=[validators.validate_http_url])
    control_url = models.CharField(max_length=500, blank=True, validators=[validators.validate_http_url])
    # Wowza Streaming Engine REST API.
    wowza_api_url = models.CharField(max_length=500, blank=True, validators=[validators.validate_http_url])
    wowza_username = EncryptedTextField(blank=True, max_length=200)
    wowza_password = EncryptedTextField(blank=True, max_length=500)
    wowza_auth = models.CharField(max_length=8, choices=AuthMethod.choices, default=AuthMethod.DIGEST)
    # Authenticates nginx-rtmp's callbacks (carried in the rendered callback URLs); rotatable. The
    # previous secret stays valid for HOOK_SECRET_GRACE after a rotation, until the new config is live.
    hook_secret = models.CharField(max_length=64, default=new_hook_secret, editable=False)
    hook_secret_previous = models.CharField(max_length=64, blank=True, editable=False)
    hook_secret_rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    hook_allowed_cidrs = models.JSONField(default=list, blank=True, validators=[validators.validate_cidrs])
    # Config deploys, through tally-agent on the host (deploy/agent/).
    agent_url = models.CharField(max_length=500, blank=True, validators=[validators.validate_http_url])
    agent_token = EncryptedTextField(blank=True)
    agent_ca = models.TextField(blank=True, max_length=20000)  # PEM to trust for an https agent (self-signed)
    nginx_prefix_paths = models.BooleanField(default=False)  # pid/logs relative to `nginx -p PREFIX`
    reload_mode = models.CharField(max_length=10, choices=ReloadMode.choices, default=ReloadMode.GRACEFUL)
    reconnect_delay_s = models.PositiveIntegerField(default=10, validators=[MaxValueValidator(600)])
    proxy_method = models.CharField(max_length=12, choices=ProxyMethod.choices, default=ProxyMethod.LEAST_CONN)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    objects = ServerQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.kind == self.Kind.NGINX_RTMP and self.role != self.Role.PROXY and not self.stat_url:
            errors["stat_url"] = "An nginx-rtmp origin or edge needs its stat URL (the rtmp_stat location)."
        if self.kind == self.Kind.WOWZA:
            if self.role == self.Role.PROXY:
                errors["role"] = "A Wowza server cannot be a TCP proxy."
            if not self.wowza_api_url:
                errors["wowza_api_url"] = "A Wowza server needs its REST API base URL."
        if errors:
            raise ValidationError(errors)

    def hook_secret_matches(self, candidate: str, now: datetime | None = None) -> bool:
        """Constant-time check of a callback's secret (the previous one counts during the grace)."""
        if hmac.compare_digest(self.hook_secret.encode(), candidate.encode()):
            return True
        now = now or timezone.now()
        return bool(
            self.hook_secret_previous
            and self.hook_secret_rotated_at
            and now - self.hook_secret_rotated_at < HOOK_SECRET_GRACE
            and hmac.compare_digest(self.hook_secret_previous.encode(), candidate.encode())
        )

    def hook_source_allowed(self, address: str | None) -> bool:
        """True when no networks are set, or the callback came from one of them."""
        return address_in_networks(address, self.hook_allowed_cidrs)

    @property
    def rtmp_base_url(self) -> str:
        return f"rtmp://{self.rtmp_authority}"

    @property
    def rtmp_authority(self) -> str:
        """host[:port] of the RTMP listener (port left out when it is 1935)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.rtmp_port == 1935 else f":{self.rtmp_port}"
        return f"{host}{port}"


class ApplicationQuerySet(models.QuerySet["Application"]):
    def visible_to(self, user: Any) -> ApplicationQuerySet:
        return self if role_of(user) >= UserRole.VIEWER else self.none()


class Application(models.Model):
    """An RTMP application on a server (``live`` in rtmp://host/live/name), with render settings."""

    class Kind(models.TextChoices):
        LIVE = "live", "Live"
        VOD = "vod", "VOD"

    server = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="applications")
    name = models.CharField(max_length=64, validators=[validators.name_validator])
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.LIVE)
    settings = models.JSONField(default=default_app_settings, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    objects = ApplicationQuerySet.as_manager()

    class Meta:
        ordering = ["server__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["server", "name"], name="%(app_label)s_%(class)s_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.server.name}/{self.name}" if self.server_id else self.name

    def clean(self) -> None:
        self.settings = clean_app_settings(self.settings)

    @property
    def publish_base_url(self) -> str:
        """OBS's "Server" field: rtmp://host[:port]/app."""
        return f"{self.server.rtmp_base_url}/{self.name}"


class StreamKeyQuerySet(models.QuerySet["StreamKey"]):
    def visible_to(self, user: Any) -> StreamKeyQuerySet:
        return self if role_of(user) >= UserRole.VIEWER else self.none()

    def with_state(self, state: str, now: datetime | None = None) -> StreamKeyQuerySet:
        now = now or timezone.now()
        if state == "revoked":
            return self.filter(revoked_at__isnull=False)
        if state == "expired":
            return self.filter(revoked_at__isnull=True, expires_at__lte=now)
        if state == "active":
            return self.filter(revoked_at__isnull=True).filter(
                models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
            )
        return self.none()

    def with_last_used(self) -> StreamKeyQuerySet:
        """Annotate ``last_used_at`` (the latest publish session's start) in the same query."""
        latest = PublishSession.objects.filter(key=models.OuterRef("pk")).order_by("-started").values("started")[:1]
        return self.annotate(last_used_at=models.Subquery(latest))  # type: ignore[no-redef]  # sets the property


class StreamKey(models.Model):
    """A publish key: a secret the encoder sends, mapped to a public stream name viewers use.

    Only the SHA-256 of the secret and a short visible prefix are stored; the secret is shown once.
    """

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        EXPIRED = "expired", "Expired"
        REVOKED = "revoked", "Revoked"

    AUDIT_EXCLUDED_FIELDS = ("secret_hash", "previous_secret_hash", "wowza_secret")

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="keys")
    label = models.CharField(max_length=100)
    public_name = models.CharField(max_length=128, validators=[validators.public_name_validator])
    prefix = models.CharField(max_length=16)
    # The publish callback's lookup: one indexed equality on the hash.
    secret_hash = models.CharField(max_length=64, unique=True)
    # After a rotation the old secret keeps working until previous_valid_until (publish lookup, indexed).
    previous_secret_hash = models.CharField(max_length=64, blank=True, db_index=True)
    previous_valid_until = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    revoke_reason = models.CharField(max_length=200, blank=True)
    max_publishers = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(100)]
    )
    allowed_cidrs = models.JSONField(default=list, blank=True, validators=[validators.validate_cidrs])
    # Wowza only: the secret itself (encrypted), so its publisher entry can be re-created when Wowza lost it.
    # Cleared on revoke. nginx-rtmp keys never store it: their callbacks check the hash.
    wowza_secret = EncryptedTextField(blank=True, editable=False)

    objects = StreamKeyQuerySet.as_manager()

    class Meta:
        ordering = ["application", "public_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["application", "public_name"], name="%(app_label)s_%(class)s_unique_public_name"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.public_name})"

    @property
    def last_used_at(self) -> datetime | None:
        """When a publish with this key last started: read from its sessions (the publish path writes no
        key row), annotated by ``StreamKeyQuerySet.with_last_used`` or looked up once on first use."""
        if "_last_used_at" not in self.__dict__:
            latest = self.sessions.order_by("-started").values_list("started", flat=True).first() if self.pk else None
            self.__dict__["_last_used_at"] = latest
        return self.__dict__["_last_used_at"]

    @last_used_at.setter
    def last_used_at(self, value: datetime | None) -> None:
        self.__dict__["_last_used_at"] = value

    def state(self, now: datetime | None = None) -> str:
        now = now or timezone.now()
        if self.revoked_at:
            return self.State.REVOKED
        if self.expires_at and self.expires_at <= now:
            return self.State.EXPIRED
        return self.State.ACTIVE

    def is_usable(self, now: datetime | None = None) -> bool:
        return self.state(now) == self.State.ACTIVE

    def address_allowed(self, address: str | None) -> bool:
        """True when no networks are set, or ``address`` falls in one of them."""
        return address_in_networks(address, self.allowed_cidrs)

    def secret_hash_valid(self, digest: str, now: datetime | None = None) -> bool:
        """Is ``digest`` the current secret's hash, or the previous one's within its rotation grace?"""
        if hmac.compare_digest(self.secret_hash, digest):
            return True
        now = now or timezone.now()
        return bool(
            self.previous_secret_hash
            and self.previous_valid_until
            and self.previous_valid_until > now
            and hmac.compare_digest(self.previous_secret_hash, digest)
        )

    @property
    def wowza_publisher(self) -> str:
        """The Wowza publisher (source account) name of this key: the encoder's username on Wowza."""
        return f"tally-{self.pk}"

    def publish_url(self, secret: str) -> str:
        """The full URL an encoder publishes to (only ever built at issue time). On Wowza the secret is the
        password of the key's publisher entry and the stream name is the public name."""
        if self.application.server.kind == Server.Kind.WOWZA:
            server = self.application.server
            credentials = f"{quote(self.wowza_publisher, safe='')}:{quote(secret, safe='')}"
            return f"rtmp://{credentials}@{server.rtmp_authority}/{self.application.name}/{self.public_name}"
        return f"{self.application.publish_base_url}/{quote(secret, safe='')}"


class PublishSessionQuerySet(models.QuerySet["PublishSession"]):
    def visible_to(self, user: Any) -> PublishSessionQuerySet:
        return self if role_of(user) >= UserRole.VIEWER else self.none()

    def open(self) -> PublishSessionQuerySet:
        """Open (live) sessions. ``server IS NOT NULL`` is always true; saying it lets PostgreSQL read
        them through the one_open_per_client index, whose condition carries it, instead of walking an
        index of every session (see the constraint)."""
        return self.filter(ended__isnull=True, server__isnull=False)


class PublishSession(models.Model):
    """One accepted publish on one server, from on_publish to on_publish_done (or a drop).

    Matched by server + nginx client id, never by name: names repeat across renames and duplicate
    publishes. At most one open session per (server, client id).
    """

    class EndReason(models.TextChoices):
        PUBLISH_DONE = "publish_done", "Publisher stopped"
        DISCONNECT = "disconnect", "Publisher disconnected"
        REVOKED = "revoked", "Key revoked"
        KICKED = "kicked", "Kicked by an operator"
        REFUSED_UPDATE = "refused_update", "Refused at on_update"
        STALE = "stale", "Replaced (nginx restarted)"

    server = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="publish_sessions")
    application = models.ForeignKey(
        Application, on_delete=models.SET_NULL, null=True, blank=True, related_name="publish_sessions"
    )
    # No index of its own: the two (key, …) indexes below start with it.
    key = models.ForeignKey(
        StreamKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="sessions", db_index=False
    )
    app_name = models.CharField(max_length=64)
    public_name = models.CharField(max_length=128)
    client_id = models.CharField(max_length=32)
    publisher_addr = models.CharField(max_length=64, blank=True)
    encoder = models.CharField(max_length=64, blank=True)  # nginx's flashver, e.g. "FMLE/3.0 (compatible; Lavf59.27"
    secret_hash_used = models.CharField(max_length=64, blank=True)  # current or previous secret (rotation)
    started = models.DateTimeField(default=timezone.now)
    last_update_at = models.DateTimeField(null=True, blank=True)
    ended = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=16, choices=EndReason.choices, blank=True)
    bytes_in = models.BigIntegerField(null=True, blank=True)
    # Which of the key's max_publishers places this open session holds (0 ..< max); unique among open
    # sessions, so two concurrent publishes cannot both take the last place. None for a session adopted
    # from a publisher already live on nginx (it counts towards the limit without holding a place).
    publisher_slot = models.PositiveSmallIntegerField(null=True, blank=True, editable=False)
    viewers = models.PositiveIntegerField(default=0)
    peak_viewers = models.PositiveIntegerField(default=0)

    objects = PublishSessionQuerySet.as_manager()

    class Meta:
        ordering = ["-started"]
        constraints = [
            models.UniqueConstraint(
                fields=["server", "client_id"],
                # server is never NULL: the second condition only keeps the planner from reading every
                # open session through this index for "open sessions of a key" (a lookup without a
                # server), which it did in a plan made while the table was nearly empty and kept
                # (streams.hotpath's cached publish context plan). Lookups by server still use it, and
                # so do lookups of every open session through ``PublishSession.objects.open()``.
                condition=models.Q(ended__isnull=True, server__isnull=False),
                name="%(app_label)s_%(class)s_one_open_per_client",
            ),
            models.UniqueConstraint(
                fields=["key", "publisher_slot"],
                # Not usable for "open sessions of …" lookups (the indexes below serve them), so the
                # planner never picks it for those while its statistics lag behind a fast-growing table.
                condition=models.Q(ended__isnull=True, publisher_slot__isnull=False),
                name="%(app_label)s_%(class)s_one_open_per_slot",
            ),
        ]
        indexes = [
            # Concurrent-publisher count and "kick every live publisher of this key".
            models.Index(fields=["key", "ended"], name="streams_session_key_open"),
            # Per-key publish history, newest first.
            models.Index(fields=["key", "-started"], name="streams_session_key_started"),
        ]

    def __str__(self) -> str:
        return f"{self.app_name}/{self.public_name} on {self.server_id} (client {self.client_id})"

    @property
    def is_live(self) -> bool:
        return self.ended is None

    @property
    def duration_s(self) -> float:
        return ((self.ended or timezone.now()) - self.started).total_seconds()


class PlaySession(models.Model):
    """One player on one server (on_play to on_play_done/on_done); counted into its publish session."""

    server = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="play_sessions")
    publish_session = models.ForeignKey(
        PublishSession, on_delete=models.SET_NULL, null=True, blank=True, related_name="plays"
    )
    client_id = models.CharField(max_length=32)
    app_name = models.CharField(max_length=64)
    name = models.CharField(max_length=128)
    addr = models.CharField(max_length=64, blank=True)
    started = models.DateTimeField(default=timezone.now)
    ended = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started"]
        constraints = [
            models.UniqueConstraint(
                fields=["server", "client_id"],
                condition=models.Q(ended__isnull=True),
                name="%(app_label)s_%(class)s_one_open_per_client",
            ),
        ]

    def __str__(self) -> str:
        return f"player {self.client_id} of {self.app_name}/{self.name}"


class PublishReject(models.Model):
    """A refused publish: why, from where, for which key prefix (never the secret)."""

    created = models.DateTimeField(default=timezone.now, db_index=True)
    server = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="publish_rejects")
    app_name = models.CharField(max_length=64, blank=True)
    addr = models.CharField(max_length=64, blank=True)
    key = models.ForeignKey(StreamKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="rejects")
    reason = models.CharField(max_length=32)
    detail = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.created:%H:%M:%S} {self.addr} {self.reason}"


class ProxyMember(models.Model):
    """An origin behind a TCP proxy (``stream {}`` upstream server) with its balancing options."""

    proxy = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="proxy_members")
    origin = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="behind_proxies")
    weight = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1), MaxValueValidator(100)])
    backup = models.BooleanField(default=False)
    max_fails = models.PositiveIntegerField(default=1, validators=[MaxValueValidator(100)])
    fail_timeout_s = models.PositiveIntegerField(default=10, validators=[MinValueValidator(1), MaxValueValidator(3600)])

    class Meta:
        ordering = ["proxy_id", "origin__name"]
        constraints = [models.UniqueConstraint(fields=["proxy", "origin"], name="streams_proxymember_unique")]

    def __str__(self) -> str:
        return f"{self.origin_id} behind {self.proxy_id}"


class ConfigRevision(models.Model):
    """One deploy attempt of a server's config: the text, its hash, who, when, what came of it, and the
    diff to the config that was live before (what the agent reported)."""

    class Status(models.TextChoices):
        APPLIED = "applied", "Applied"
        INVALID = "invalid", "Refused by nginx -t"
        ROLLED_BACK = "rolled_back", "Rolled back (unhealthy after reload)"
        FAILED = "failed", "Failed (agent error)"
        ROLLBACK = "rollback", "Rollback to the previous config"

    server = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="config_revisions")
    number = models.PositiveIntegerField()
    text = models.TextField()
    sha256 = models.CharField(max_length=64)
    previous_sha256 = models.CharField(max_length=64, blank=True)
    diff = models.TextField(blank=True)
    status = models.CharField(max_length=12, choices=Status.choices)
    mode = models.CharField(max_length=10, choices=Server.ReloadMode.choices, default=Server.ReloadMode.GRACEFUL)
    output = models.TextField(blank=True)  # nginx -t's text, or the agent's error
    result = models.JSONField(default=dict, blank=True)  # the agent's answer (pids, duration)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                               related_name="+")  # fmt: skip
    author_name = models.CharField(max_length=150, blank=True)  # a user or an API token
    created = models.DateTimeField(auto_now_add=True)
    duration_ms = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["server_id", "-number"]
        constraints = [models.UniqueConstraint(fields=["server", "number"], name="streams_configrevision_number")]

    def __str__(self) -> str:
        return f"{self.server_id} r{self.number} ({self.status})"


class DeployJob(models.Model):
    """A deploy to several servers, run by a worker one server at a time: origins first, then proxies, so
    a proxy never points at an origin that is not ready. Progress is in its steps."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    mode = models.CharField(max_length=10, choices=Server.ReloadMode.choices, blank=True)  # blank: each server's
    stop_on_failure = models.BooleanField(default=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                               related_name="+")  # fmt: skip
    author_name = models.CharField(max_length=150, blank=True)
    message = models.CharField(max_length=500, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)  # the runner's last sign of life

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["status", "created"], name="streams_deployjob_status")]

    def __str__(self) -> str:
        return f"deploy job {self.pk} ({self.status})"

    @property
    def done(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED, self.Status.CANCELLED)


class DeployStep(models.Model):
    """One server of a deploy job: pending until the runner reaches it, then its outcome."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        APPLIED = "applied", "Applied"
        UNCHANGED = "unchanged", "Unchanged"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    job = models.ForeignKey(DeployJob, on_delete=models.CASCADE, related_name="steps")
    server = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    revision = models.ForeignKey(ConfigRevision, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    message = models.TextField(blank=True, max_length=5000)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job_id", "position"]
        constraints = [models.UniqueConstraint(fields=["job", "position"], name="streams_deploystep_position")]

    def __str__(self) -> str:
        return f"job {self.job_id} step {self.position} ({self.status})"
