"""Fetching through a poller's ``afetch`` from synchronous tests, as ``monitoring.fanout`` does."""

from __future__ import annotations

import asyncio
from typing import Any

from console import http
from monitoring.pollers import Poller, get_poller


def fetch(server: Any, poller: Poller | None = None) -> bytes:
    """``poller.afetch(server)`` (the server kind's poller by default) on an event loop and client of its own."""
    chosen = poller or get_poller(server.kind)

    async def run() -> bytes:
        async with http.make_async_client() as client:
            return await chosen.afetch(server, client)

    return asyncio.run(run())
