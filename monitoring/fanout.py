"""Poll many servers at once: one event loop, one HTTP client, at most ``concurrency`` polls in flight.

``poll_many`` is synchronous so a Celery task and the embedded default's timer thread call it the same
way; inside, every server's ``Poller.afetch`` runs concurrently, so a cycle takes about as long as its
slowest server (bounded by that poller's timeout), not the sum of them. It never raises for a bad server:
whatever goes wrong becomes that server's unreachable snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import httpx
from django.conf import settings
from django.utils import timezone

from console import http
from monitoring.pollers import MAX_CALLS_IN_FLIGHT, PollError, get_poller
from monitoring.snapshots import ServerSnapshot
from streams.models import Server

log = logging.getLogger(__name__)

INLINE_PARSE_BYTES = 256 * 1024
"""Bodies up to this size are parsed on the event loop (well under a millisecond per 10 streams); bigger
ones in a worker thread, so one 16 MB document does not stall every other poll's I/O while it parses."""


@dataclass(frozen=True, slots=True)
class PollResult:
    """One server's poll: its snapshot (reachable or not) and how long fetch + parse took."""

    server_id: int
    snapshot: ServerSnapshot
    duration_ms: float


def poll_many(servers: Sequence[Server], *, concurrency: int | None = None) -> list[PollResult]:
    """Poll ``servers`` concurrently and return one result per server, in the same order. Never raises for
    a bad server.

    ``concurrency`` (default ``settings.POLL_CONCURRENCY``) caps the polls in flight. ``servers`` must be
    loaded instances with a primary key (unsaved ones may be given an ``id``): nothing here touches the
    database. Runs its own event loop, so it cannot be called from a running one.
    """
    if any(server.pk is None for server in servers):
        raise ValueError("poll_many needs servers with a primary key")
    if not servers:
        return []
    limit = concurrency or settings.POLL_CONCURRENCY
    return asyncio.run(_poll_all(servers, limit))


async def _poll_all(servers: Sequence[Server], limit: int) -> list[PollResult]:
    slots = asyncio.Semaphore(limit)
    async with http.make_async_client(max_connections=limit * MAX_CALLS_IN_FLIGHT) as client:
        return await asyncio.gather(*(_poll_one(server, client, slots) for server in servers))


async def _poll_one(server: Server, client: httpx.AsyncClient, slots: asyncio.Semaphore) -> PollResult:
    async with slots:
        started = time.perf_counter()
        taken_at = timezone.now()
        try:
            snapshot = await _snapshot(server, client, taken_at)
        except Exception as exc:
            # A poller bug on one server's answer must not cost the other servers their results.
            log.exception("poll of server %s failed unexpectedly", server.pk)
            snapshot = ServerSnapshot.unreachable(server.pk, taken_at, f"poll failed: {type(exc).__name__}")
        return PollResult(server.pk, snapshot, (time.perf_counter() - started) * 1000)


async def _snapshot(server: Server, client: httpx.AsyncClient, taken_at: datetime) -> ServerSnapshot:
    """Fetch and parse one server; a ``PollError`` becomes an unreachable snapshot carrying its reason."""
    try:
        poller = get_poller(server.kind)
        raw = await poller.afetch(server, client)
    except PollError as exc:
        return ServerSnapshot.unreachable(server.pk, taken_at, str(exc))
    if len(raw) <= INLINE_PARSE_BYTES:
        return poller.parse(raw, taken_at, server.pk)
    return await asyncio.to_thread(poller.parse, raw, taken_at, server.pk)
