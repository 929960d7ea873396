"""Live publish and play sessions: open, close, kick. Always matched by server + nginx client id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from console import audit
from streams import control, events
from streams.models import PlaySession, PublishSession, Server


def close_publish(server_id: int, client_id: str, reason: str, now: datetime | None = None) -> PublishSession | None:
    """Close the open session of this client, if any; idempotent. Returns the session it closed."""
    now = now or timezone.now()
    session = (
        PublishSession.objects.filter(server_id=server_id, client_id=client_id, ended__isnull=True).order_by().first()
    )
    if session is None or not _close(session, reason, now):
        return None
    return session


def _close(session: PublishSession, reason: str, now: datetime) -> bool:
    """Claim the close with a conditional UPDATE, so concurrent closers agree on one reason."""
    claimed = PublishSession.objects.filter(pk=session.pk, ended__isnull=True).update(ended=now, end_reason=reason)
    if not claimed:
        return False
    session.ended, session.end_reason = now, reason
    PlaySession.objects.filter(publish_session=session, ended__isnull=True).update(ended=now)
    events.session_stopped(session)
    return True


def start_player(server: Server, client_id: str, app: str, name: str, addr: str) -> PlaySession:
    """Record a player (idempotent per client) and count it into the live session it watches."""
    with transaction.atomic():
        existing = PlaySession.objects.filter(server=server, client_id=client_id, ended__isnull=True).order_by().first()
        if existing:
            return existing
        session = (
            PublishSession.objects.filter(server=server, app_name=app, public_name=name, ended__isnull=True)
            .order_by("-started")
            .first()
        )
        player = PlaySession.objects.create(
            server=server, client_id=client_id, app_name=app, name=name, addr=addr, publish_session=session
        )
        if session is not None:
            PublishSession.objects.filter(pk=session.pk).update(
                viewers=F("viewers") + 1, peak_viewers=Greatest(F("peak_viewers"), F("viewers") + 1)
            )
    if session is not None:
        session.refresh_from_db(fields=["viewers", "peak_viewers"])
        events.viewers_changed(session)
    return player


def stop_player(server_id: int, client_id: str, now: datetime | None = None) -> bool:
    """Close this client's play session, if any, and uncount it; idempotent."""
    now = now or timezone.now()
    player = PlaySession.objects.filter(server_id=server_id, client_id=client_id, ended__isnull=True).order_by().first()
    if player is None or not PlaySession.objects.filter(pk=player.pk, ended__isnull=True).update(ended=now):
        return False
    if player.publish_session_id:
        PublishSession.objects.filter(pk=player.publish_session_id, viewers__gt=0).update(viewers=F("viewers") - 1)
        session = PublishSession.objects.filter(pk=player.publish_session_id).first()
        if session is not None:
            events.viewers_changed(session)
    return True


@dataclass(frozen=True)
class KickResult:
    """The outcome of dropping one live session: dropped, not_live, unreachable or no_control."""

    session: PublishSession
    outcome: str
    detail: str = ""


def kick_session(session: PublishSession, actor: audit.Actor, reason: str) -> KickResult:
    """Close a live session with ``reason``, drop its publisher through the control module, audit it.

    The session is closed first, so the on_publish_done/on_disconnect that the drop triggers finds it
    closed and the recorded reason stays ours. It is closed whatever the control module answers: a
    revoked key is refused at the next on_update anyway, and the outcome tells the admin whether the
    drop was immediate.
    """
    server = session.server
    _close(session, reason, timezone.now())
    result = control.drop_publisher(server, session.app_name, session.public_name, client_id=session.client_id)
    audit.record(
        actor,
        "kick",
        session,
        object_repr=f"{session.app_name}/{session.public_name} on {server.name}",
        message=f"{reason}: {result.outcome}" + (f" ({result.detail})" if result.detail else ""),
    )
    return KickResult(session=session, outcome=result.outcome, detail=result.detail)


def kick_key_sessions(key_id: int, actor: audit.Actor, reason: str) -> list[KickResult]:
    """Kick every live session of a key (revocation)."""
    live = PublishSession.objects.filter(key_id=key_id, ended__isnull=True).select_related("server")
    return [kick_session(session, actor, reason) for session in live]
