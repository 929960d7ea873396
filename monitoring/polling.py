"""Poll cycles: which servers are due, poll them all at once (``monitoring.fanout``), apply the results
(``monitoring.state``). Celery beat runs ``poll_due`` every TALLY_POLL_INTERVAL_S; the embedded default
runs the same task on its in-process timer."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Q, QuerySet
from django.utils import timezone

from monitoring import fanout, fleet, state
from monitoring.models import ServerStatus
from streams.models import Server

log = logging.getLogger(__name__)
POLL_LOCK = 0x7A11_0001  # advisory lock key of the poll cycle


def has_something_to_poll(server: Server) -> bool:
    """nginx-rtmp origins and edges with a stat URL, and Wowza servers with a REST API URL (enabled or not)."""
    if server.kind == Server.Kind.WOWZA:
        return bool(server.wowza_api_url)
    return server.role != Server.Role.PROXY and bool(server.stat_url)


def pollable_servers() -> QuerySet[Server]:
    """Enabled servers that ``has_something_to_poll`` (the same test, in SQL)."""
    return Server.objects.filter(enabled=True).filter(
        (Q(kind=Server.Kind.NGINX_RTMP) & ~Q(role=Server.Role.PROXY) & ~Q(stat_url=""))
        | (Q(kind=Server.Kind.WOWZA) & ~Q(wowza_api_url=""))
    )


def due_servers(now: datetime) -> list[Server]:
    """Pollable servers whose own interval has passed since their last poll (half a beat early counts: the
    beat and the poll itself take time)."""
    last = dict(ServerStatus.objects.filter(last_poll_at__isnull=False).values_list("server_id", "last_poll_at"))
    slack = timedelta(seconds=settings.POLL_INTERVAL_S / 2)

    def due(server: Server) -> bool:
        polled = last.get(server.pk)
        return polled is None or polled + timedelta(seconds=server.poll_interval_s) - slack <= now

    return [server for server in pollable_servers() if due(server)]


def poll_cycle(servers: Sequence[Server], now: datetime | None = None) -> state.CycleOutcome:
    """Poll ``servers`` concurrently and apply what they answered."""
    now = now or timezone.now()
    started = time.monotonic()
    results = fanout.poll_many(servers)
    outcome = state.apply_cycle([(r.server_id, r.snapshot, r.duration_ms) for r in results], now)
    fleet.record(now)
    log.info(
        "polled %d servers (%d answered) in %.2f s", outcome.servers, outcome.reachable, time.monotonic() - started
    )
    return outcome


@contextlib.contextmanager
def exclusive_cycle() -> Iterator[bool]:
    """True when no other process is running a poll cycle (a PostgreSQL advisory lock, held for the
    cycle): a cycle longer than the beat must not have a second worker poll the same servers."""
    if connection.vendor != "postgresql":
        yield True  # the embedded default: one in-process timer
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [POLL_LOCK])
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [POLL_LOCK])


def poll_due(now: datetime | None = None) -> state.CycleOutcome | None:
    """One cycle over the servers that are due; None when another cycle is still running."""
    with exclusive_cycle() as acquired:
        if not acquired:
            log.warning("skipped a poll cycle: the previous one is still running")
            return None
        now = now or timezone.now()
        return poll_cycle(due_servers(now), now)


def poll_all() -> int:
    """Poll every pollable server now; returns how many answered."""
    return poll_cycle(list(pollable_servers())).reachable
