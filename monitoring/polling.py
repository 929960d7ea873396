"""Polling servers into snapshots, and what a snapshot updates right away.

This first version polls one server at a time; each poll is bounded by the poller's timeout, and one
bad server only ever yields an unreachable snapshot. It keeps publish sessions' byte counts current
(nginx-rtmp's publish_done callback carries none), matched by server + nginx client id.
"""

from __future__ import annotations

import logging

from django.db.models import Q
from django.utils import timezone

from monitoring.pollers import PollError, get_poller
from monitoring.snapshots import ServerSnapshot
from streams.models import PublishSession, Server

log = logging.getLogger(__name__)


def poll_server(server: Server) -> ServerSnapshot:
    """Fetch and parse one server's status. Never raises: failures become ``reachable=False``."""
    taken_at = timezone.now()
    try:
        poller = get_poller(server.kind)
        raw = poller.fetch(server)
    except PollError as exc:
        return ServerSnapshot.unreachable(server.pk, taken_at, str(exc))
    return poller.parse(raw, taken_at, server.pk)


def record_session_bytes(snapshot: ServerSnapshot) -> int:
    """Store each live publisher's byte count on its open session; returns how many were updated."""
    updated = 0
    if snapshot.server_id is None:
        return 0
    for stream in snapshot.streams:
        if stream.publisher_client_id and stream.bytes_in is not None:
            updated += PublishSession.objects.filter(
                server_id=snapshot.server_id, client_id=stream.publisher_client_id, ended__isnull=True
            ).update(bytes_in=stream.bytes_in)
    return updated


def poll_all() -> int:
    """Poll every enabled nginx-rtmp origin or edge once; returns how many answered."""
    servers = Server.objects.filter(enabled=True, kind=Server.Kind.NGINX_RTMP).exclude(
        Q(role=Server.Role.PROXY) | Q(stat_url="")
    )
    answered = 0
    for server in servers:
        snapshot = poll_server(server)
        if snapshot.reachable:
            answered += 1
            record_session_bytes(snapshot)
        else:
            log.info("poll of %s failed: %s", server.name, snapshot.error)
    return answered
