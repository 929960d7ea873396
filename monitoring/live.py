"""Live push: the one module that owns websocket payload types, group names and ``publish``.

Producers (callbacks, pollers, alerts) call ``publish``; consumers only forward what arrives.
Message types are documented in the README ("Live updates").
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

FLEET_GROUP = "fleet"
# Channels group events are dispatched to the consumer method named by "type" (dots become _).
FORWARD_EVENT = "live.forward"


def server_group(server_id: int) -> str:
    return f"server.{server_id}"


def stream_group(stream_id: int) -> str:
    return f"stream.{stream_id}"


def publish(group: str, message_type: str, payload: dict[str, Any]) -> None:
    """Send one message to every websocket in ``group``. Never raises: push is best effort."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, {"type": FORWARD_EVENT, "message": {"type": message_type, **payload}})
    except Exception:
        log.warning("live push to %s failed", group, exc_info=True)
