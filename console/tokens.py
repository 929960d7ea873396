"""API tokens: issue, revoke, and authenticate ``Authorization: Bearer <token>``."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from console import audit
from console.models import ApiToken

TOKEN_PREFIX = "tly_"
VISIBLE_PREFIX_LEN = 10
# last_used_at is written at most this often per token, to keep API reads write-free.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_secret(secret: str) -> str:
    """SHA-256 hex of a secret (publish keys and API tokens are stored only as this)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str  # shown once, never stored


@transaction.atomic
def issue_token(
    owner: Any, name: str, role_ceiling: str, actor: audit.Actor, expires_at: datetime | None = None
) -> IssuedToken:
    """Create a token for ``owner``; the returned secret is the only copy."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        owner=owner,
        name=name,
        prefix=secret[:VISIBLE_PREFIX_LEN],
        token_hash=hash_secret(secret),
        role_ceiling=role_ceiling,
        expires_at=expires_at,
        created_by=actor.user,
    )
    audit.record(actor, "issue", token, after=audit.snapshot(token))
    return IssuedToken(token=token, secret=secret)


@transaction.atomic
def revoke_token(token: ApiToken, actor: audit.Actor) -> ApiToken:
    """Revoke a token now; idempotent."""
    locked = ApiToken.objects.select_for_update().get(pk=token.pk)
    if locked.revoked_at is None:
        before = audit.snapshot(locked)
        locked.revoked_at = timezone.now()
        locked.save(update_fields=["revoked_at"])
        audit.record(actor, "revoke", locked, before=before, after=audit.snapshot(locked))
    return locked


def find_token(secret: str) -> ApiToken | None:
    """The usable token matching ``secret``, or None."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    digest = hash_secret(secret)
    token = ApiToken.objects.usable().select_related("owner").filter(token_hash=digest).first()
    if token is None or not hmac.compare_digest(token.token_hash, digest):
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


class BearerTokenAuthentication(BaseAuthentication):
    """DRF authentication for ``Authorization: Bearer tly_…``."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        parts = header.split()
        if parts[0].lower() != self.keyword.lower():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header: use 'Bearer <token>'.")
        token = find_token(parts[1])
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked API token.")
        return token.owner, token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword
