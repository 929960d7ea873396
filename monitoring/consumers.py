"""Websocket consumer: authenticate on connect, check the role, join groups, forward events."""

from __future__ import annotations

import re
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from console.roles import Role, role_of
from monitoring import live

_GROUP = re.compile(r"^(server|stream)\.\d{1,12}$")
MAX_GROUPS = 50


class LiveConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """``/ws/live/``: every authenticated user with a role gets the ``fleet`` group and may subscribe
    to ``server.<id>`` / ``stream.<id>``. Users without a role are refused (close code 4403)."""

    groups_joined: set[str]

    async def connect(self) -> None:
        self.groups_joined = set()
        role = await database_sync_to_async(role_of)(self.scope.get("user"))
        if role < Role.VIEWER:
            await self.close(code=4403)
            return
        self.role = role
        await self.accept()
        await self._join(live.FLEET_GROUP)
        await self.send_json({"type": "hello", "role": role.label})

    async def disconnect(self, code: int) -> None:
        for group in list(getattr(self, "groups_joined", ())):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict) or content.get("type") not in {"subscribe", "unsubscribe"}:
            await self.send_json({"type": "error", "detail": "Send {'type': 'subscribe'|'unsubscribe', 'group': …}."})
            return
        group = content.get("group")
        if not isinstance(group, str) or not _GROUP.match(group):
            await self.send_json({"type": "error", "detail": "group must be server.<id> or stream.<id>."})
            return
        if content["type"] == "unsubscribe":
            self.groups_joined.discard(group)
            await self.channel_layer.group_discard(group, self.channel_name)
        elif len(self.groups_joined) >= MAX_GROUPS:
            await self.send_json({"type": "error", "detail": f"At most {MAX_GROUPS} subscriptions."})
            return
        else:
            await self._join(group)
        await self.send_json({"type": f"{content['type']}d", "group": group})

    async def _join(self, group: str) -> None:
        self.groups_joined.add(group)
        await self.channel_layer.group_add(group, self.channel_name)

    async def live_forward(self, event: dict[str, Any]) -> None:
        await self.send_json(event["message"])

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        if len(text_data) > 4096:
            return None
        try:
            return await super().decode_json(text_data)
        except ValueError:
            return None
