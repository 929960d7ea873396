"""Publish-control events, pushed to the ``fleet`` and ``server.<id>`` groups the moment they happen.

Payloads (documented in the README, "Live updates"):
- ``publish.started``: a publish was accepted (a session opened).
- ``publish.stopped``: a session closed (``reason``: publish_done, disconnect, revoked, kicked, ...).
- ``publish.rejected``: a publish was refused (``reason``; never the secret).
- ``play.changed``: the viewer count of a session changed.
"""

from __future__ import annotations

from typing import Any

from django.dispatch import Signal

from console import push
from streams.models import PublishSession

FLEET_GROUP = "fleet"

# Sent (``session=``) after a publish session closed, whatever the reason, in the closing request: live
# state that other apps keep (monitoring's streams) follows at once, without streams importing them.
publish_stopped = Signal()


def session_payload(session: PublishSession) -> dict[str, Any]:
    return {
        "session": session.pk,
        "server": session.server_id,
        "app": session.app_name,
        "name": session.public_name,
        "client_id": session.client_id,
        "key": session.key_id,
        "publisher_addr": session.publisher_addr,
        "encoder": session.encoder,
        "started": session.started.isoformat(),
        "ended": session.ended.isoformat() if session.ended else None,
        "reason": session.end_reason or None,
        "viewers": session.viewers,
    }


def emit(message_type: str, server_id: int, payload: dict[str, Any]) -> None:
    """Queue one event for the fleet and the server's group; never blocks the caller."""
    message = {"type": message_type, **payload}
    push.send_soon(FLEET_GROUP, message)
    push.send_soon(f"server.{server_id}", message)


def session_started(session: PublishSession) -> None:
    emit("publish.started", session.server_id, session_payload(session))


def session_stopped(session: PublishSession) -> None:
    publish_stopped.send(sender=PublishSession, session=session)
    emit("publish.stopped", session.server_id, session_payload(session))


def publish_rejected(server_id: int, app_name: str, addr: str, reason: str) -> None:
    emit("publish.rejected", server_id, {"server": server_id, "app": app_name, "addr": addr, "reason": reason})


def viewers_changed(session: PublishSession) -> None:
    emit("play.changed", session.server_id, {"session": session.pk, "server": session.server_id,
                                             "name": session.public_name, "viewers": session.viewers})  # fmt: skip
