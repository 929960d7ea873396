"""Pollers: one small interface, one module per server kind, and a registry keyed by ``Server.kind``.

``afetch`` does the I/O (through ``console.http``) and ``parse`` is pure, so parsers are tested on
captured fixtures. Both produce or feed the one normalized type, ``monitoring.snapshots.ServerSnapshot``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from monitoring.snapshots import ServerSnapshot

if TYPE_CHECKING:
    import httpx

    from streams.models import Server

MAX_CALLS_IN_FLIGHT = 4
"""At most this many requests of one ``afetch`` are in flight at once; callers size connection pools by it."""


class PollError(Exception):
    """``afetch`` failed. ``permanent`` is True when polling again cannot help until the configuration
    changes (bad URL, 401/404, no stat URL); the poll loop still turns every PollError into an
    unreachable snapshot carrying ``str(error)`` as the reason."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Poller(Protocol):
    """What every server kind implements: I/O in ``afetch``, pure normalization in ``parse``.

    ``monitoring.fanout`` runs ``afetch`` for many servers on one event loop and one client; every
    request keeps its timeout and size cap.
    """

    async def afetch(self, server: Server, client: httpx.AsyncClient) -> bytes:
        """Return the raw status document of ``server``, fetched on the caller's event loop through
        ``client`` (from ``console.http.make_async_client``); raise ``PollError`` on any failure.

        Must not touch the database: ``server`` is a loaded instance. At most ``MAX_CALLS_IN_FLIGHT``
        requests at once.
        """
        ...

    def parse(self, raw: bytes, taken_at: datetime, server_id: int | None = None) -> ServerSnapshot:
        """Normalize ``raw`` into a snapshot. Never raises on bad input: returns ``reachable=False``."""
        ...


def get_poller(kind: str) -> Poller:
    """Return the poller for a ``Server.kind`` value; raise ``PollError(permanent=True)`` if none exists."""
    try:
        return registry[kind]
    except KeyError:
        raise PollError(f"no poller for server kind {kind!r}", permanent=True)


# Imported last: the poller modules import PollError from this package.
from monitoring.pollers.nginx_rtmp import NginxRtmpPoller  # noqa: E402
from monitoring.pollers.wowza import WowzaPoller  # noqa: E402

# Keys are Server.Kind values, spelled out so importing this package does not need Django's app registry.
registry: dict[str, Poller] = {"nginx-rtmp": NginxRtmpPoller(), "wowza": WowzaPoller()}
