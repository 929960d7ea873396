"""Publish keys: issue, revoke, and find by secret."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from console import audit
from console.tokens import hash_secret
from streams import hooks, sessions, wowza
from streams.models import Application, PublishSession, Server, StreamKey

SECRET_BYTES = 24  # 192 bits; token_urlsafe gives 32 URL-safe characters
VISIBLE_PREFIX_LEN = 6


@dataclass(frozen=True)
class IssuedKey:
    """A freshly issued key and its secret: the only time the secret exists outside the encoder."""

    key: StreamKey
    secret: str
    wowza: wowza.KeyOutcome | None = None  # what writing the Wowza publisher entry did (Wowza servers only)

    @property
    def obs_server_url(self) -> str:
        return self.key.application.publish_base_url

    @property
    def on_wowza(self) -> bool:
        return _on_wowza(self.key.application)

    @property
    def obs_stream_key(self) -> str:
        """nginx-rtmp: the secret (on_publish renames it to the public name). Wowza: the public name, with
        ``username``/the secret as the publisher credentials."""
        return self.key.public_name if self.on_wowza else self.secret

    @property
    def username(self) -> str:
        return self.key.wowza_publisher if self.on_wowza else ""

    @property
    def publish_url(self) -> str:
        return self.key.publish_url(self.secret)


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def default_public_name(application: Application, label: str) -> str:
    """A readable, unused public name derived from the label."""
    base = (slugify(label)[:40] or "stream").strip("-_.") or "stream"
    taken = set(application.keys.values_list("public_name", flat=True))
    if base not in taken:
        return base
    while True:
        candidate = f"{base}-{secrets.token_hex(3)}"
        if candidate not in taken:
            return candidate


def _on_wowza(application: Application) -> bool:
    return application.server.kind == Server.Kind.WOWZA


def issue_key(
    application: Application,
    *,
    label: str,
    actor: audit.Actor,
    public_name: str = "",
    expires_at: datetime | None = None,
    max_publishers: int = 1,
    allowed_cidrs: list[str] | None = None,
) -> IssuedKey:
    """Create a key with a fresh secret; raises ValidationError naming the bad field. On a Wowza server the
    key's publisher entry is written once the key is stored."""
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "The expiry must be in the future."})
    secret = new_secret()
    with transaction.atomic():
        key = StreamKey(
            application=application,
            label=label,
            public_name=public_name or default_public_name(application, label),
            prefix=secret[:VISIBLE_PREFIX_LEN],
            secret_hash=hash_secret(secret),
            created_by=actor.user,
            expires_at=expires_at,
            max_publishers=max_publishers,
            allowed_cidrs=allowed_cidrs or [],
            wowza_secret=secret if _on_wowza(application) else "",
        )
        key.full_clean()
        key.save()
        audit.record(actor, "issue", key, after=audit.snapshot(key))
    return _with_wowza(IssuedKey(key=key, secret=secret))


def _with_wowza(issued: IssuedKey) -> IssuedKey:
    """On a Wowza server, write the key's publisher entry now (after the commit) and say how it went."""
    if not _on_wowza(issued.key.application):
        return issued
    return IssuedKey(issued.key, issued.secret, wowza.key_issued(issued.key, issued.secret))


@dataclass(frozen=True)
class RevokeResult:
    """A revocation and what happened to the key's live publishers (one kick result each)."""

    key: StreamKey
    was_already_revoked: bool
    kicks: list[sessions.KickResult] = field(default_factory=list)
    wowza: wowza.KeyOutcome | None = None  # Wowza only: publisher entry deleted, stream disconnected


def revoke_key(key: StreamKey, actor: audit.Actor, reason: str = "") -> RevokeResult:
    """Revoke a key now and drop its live publishers through the control module.

    Idempotent: revoking a revoked key changes nothing (but still drops any session left live).
    Each drop's outcome (dropped, not_live, unreachable, no_control) is returned and audited.
    """
    with transaction.atomic():
        locked = StreamKey.objects.select_for_update().select_related("application__server").get(pk=key.pk)
        already = locked.revoked_at is not None
        if not already:
            before = audit.snapshot(locked)
            locked.revoked_at = timezone.now()
            locked.revoked_by = actor.user
            locked.revoke_reason = reason[:200]
            locked.wowza_secret = ""
            locked.save(update_fields=["revoked_at", "revoked_by", "revoke_reason", "wowza_secret", "updated"])
            audit.record(actor, "revoke", locked, before=before, after=audit.snapshot(locked), message=reason[:500])
    hooks.recent_keys.forget_hashes({locked.secret_hash, locked.previous_secret_hash})
    kicks = sessions.kick_key_sessions(locked.pk, actor, PublishSession.EndReason.REVOKED)
    outcome = None
    if _on_wowza(locked.application):
        outcome = wowza.key_revoked(locked)
        audit.record(actor, "kick", locked, message=outcome.text[:500])
    return RevokeResult(key=locked, was_already_revoked=already, kicks=kicks, wowza=outcome)


MAX_ROTATION_GRACE = timedelta(days=7)


def rotate_key(key: StreamKey, actor: audit.Actor, grace: timedelta = timedelta(hours=1)) -> IssuedKey:
    """Give the key a new secret for the same public name; the old secret keeps working for ``grace``.

    Live publishers on the old secret keep streaming until the grace ends; then their next on_update
    refuses them, so encoders must be switched to the new secret within the grace. On Wowza, a publisher
    entry has one password: the new secret replaces the old one at once (no grace); a live encoder keeps
    streaming until it reconnects.
    """
    if not timedelta(0) <= grace <= MAX_ROTATION_GRACE:
        raise ValidationError({"grace_s": f"The grace must be between 0 and {MAX_ROTATION_GRACE.days} days."})
    with transaction.atomic():
        locked = StreamKey.objects.select_for_update().select_related("application__server").get(pk=key.pk)
        if locked.state() != StreamKey.State.ACTIVE:
            raise ValidationError({"detail": f"Only an active key can be rotated (this one is {locked.state()})."})
        secret = new_secret()
        locked.previous_secret_hash = locked.secret_hash
        locked.secret_hash = hash_secret(secret)
        locked.prefix = secret[:VISIBLE_PREFIX_LEN]
        if _on_wowza(locked.application):
            locked.wowza_secret = secret
            grace = timedelta(0)  # one password per Wowza publisher: the new one replaces it at once
        locked.previous_valid_until = timezone.now() + grace
        locked.save(update_fields=["previous_secret_hash", "previous_valid_until", "secret_hash", "prefix",
                                   "wowza_secret", "updated"])  # fmt: skip
        audit.record(actor, "rotate", locked, after=audit.snapshot(locked), message=f"old secret valid for {grace}")
    return _with_wowza(IssuedKey(key=locked, secret=secret))


def find_key(secret: str) -> StreamKey | None:
    """The key whose secret this is (any state), by one indexed hash lookup."""
    if not secret or len(secret) > 256:
        return None
    digest = hash_secret(secret)
    key = StreamKey.objects.select_related("application__server").filter(secret_hash=digest).first()
    if key is None or not hmac.compare_digest(key.secret_hash, digest):
        return None
    return key
