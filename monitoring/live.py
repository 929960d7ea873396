"""Live push: the one module that owns websocket payload types, group names and ``publish``.

Producers (callbacks, pollers, alerts) call ``publish``; consumers only forward what arrives.
Message types are documented in the README ("Live updates"). Publish-control events come from
``streams.events`` (streams cannot import this module) through the same ``console.push`` queue.
"""

from __future__ import annotations

from typing import Any

from console import push

FLEET_GROUP = "fleet"
FORWARD_EVENT = push.FORWARD_EVENT


def server_group(server_id: int) -> str:
    return f"server.{server_id}"


def stream_group(stream_id: int) -> str:
    return f"stream.{stream_id}"


def publish(group: str, message_type: str, payload: dict[str, Any]) -> None:
    """Send one message to every websocket in ``group``, without blocking on Redis."""
    push.send_soon(group, {"type": message_type, **payload})
