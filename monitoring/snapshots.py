"""The one normalized type of the live data path: what a poll saw on one server.

Every poller (nginx-rtmp, Wowza) produces a ``ServerSnapshot``; everything downstream (live push,
history, alerts, the API, the page's ``render()``) consumes it or its ``to_json()`` and never branches
on the server kind. Units are fixed here: kbps, seconds, milliseconds only where the name says ``_ms``.
``None`` always means "unknown" (the source did not report it, or reported garbage); it never means 0.

Pure data: no Django import, so parsers and benchmarks can use it without settings.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, NamedTuple


class StreamSnapshot(NamedTuple):
    """One stream on one server at one poll (immutable; a named tuple because a poll of a busy server builds
    thousands of them: five times cheaper to create than a frozen dataclass, see bench/parse_stat.py).

    ``name`` is the stream name as the server reports it (nginx-rtmp writes non-ASCII bytes as spaces
    and cuts at 255 bytes), so match streams to sessions by ``publisher_client_id``, not by name.
    ``viewers`` counts players (non-publishing clients) that are not relays; ``relays`` counts outbound
    relay clients (nginx ``ngx-local-relay`` pushes). ``dropped_frames`` is summed over the stream's
    clients; ``avsync_ms`` is the publisher's audio/video offset.
    """

    app: str
    name: str
    publishing: bool
    active: bool
    bitrate_in_kbps: float | None = None
    bitrate_out_kbps: float | None = None
    video_kbps: float | None = None
    audio_kbps: float | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    viewers: int | None = None
    relays: int | None = None
    video_codec: str | None = None
    video_profile: str | None = None
    audio_codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    uptime_s: float | None = None
    publisher_address: str | None = None
    publisher_client_id: str | None = None
    publisher_flashver: str | None = None
    dropped_frames: int | None = None
    avsync_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Return a dict of JSON-safe primitives; ``from_json`` turns it back into an equal snapshot."""
        return self._asdict()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StreamSnapshot:
        """Rebuild a snapshot from ``to_json()`` output.

        ``app``, ``name``, ``publishing`` and ``active`` are required (``KeyError``); any other field
        missing from an older payload becomes ``None``.
        """
        values: dict[str, Any] = {name: data.get(name) for name in _STREAM_FIELDS}
        for name in ("app", "name", "publishing", "active"):
            values[name] = data[name]
        return cls(**values)


_STREAM_FIELDS: tuple[str, ...] = StreamSnapshot._fields


@dataclass(frozen=True, slots=True)
class ServerSnapshot:
    """One poll of one server: reachable with its figures and streams, or unreachable with a reason.

    ``error`` is "" when the poll worked and a short human reason otherwise (then ``reachable`` is
    False and the figures are ``None``). ``worker_pid`` is the process that answered: nginx-rtmp's
    stat shows only that worker, so a caller that sees it alternate between polls is looking at
    ``worker_processes > 1`` (or a reload in progress). ``uptime_s`` is that worker's uptime.
    ``taken_at`` must be timezone-aware (a naive datetime is a ``ValueError``).
    """

    server_id: int | None
    taken_at: datetime
    reachable: bool
    error: str = ""
    version: str | None = None
    worker_pid: int | None = None
    uptime_s: float | None = None
    connections: int | None = None
    bandwidth_in_kbps: float | None = None
    bandwidth_out_kbps: float | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    streams: tuple[StreamSnapshot, ...] = ()

    def __post_init__(self) -> None:
        if self.taken_at.tzinfo is None:
            raise ValueError("ServerSnapshot.taken_at must be timezone-aware")

    @classmethod
    def unreachable(cls, server_id: int | None, taken_at: datetime, reason: str) -> ServerSnapshot:
        """Return the snapshot of a failed poll: ``reachable=False``, ``error=reason``, nothing else known."""
        return cls(server_id=server_id, taken_at=taken_at, reachable=False, error=reason)

    def to_json(self) -> dict[str, Any]:
        """Return a dict of JSON-safe primitives (``taken_at`` as an ISO 8601 string, streams as a list)."""
        data = {name: getattr(self, name) for name in _SERVER_SCALARS}
        data["taken_at"] = self.taken_at.isoformat()
        data["streams"] = [stream.to_json() for stream in self.streams]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerSnapshot:
        """Rebuild a snapshot from ``to_json()`` output.

        ``server_id``, ``taken_at`` and ``reachable`` are required (``KeyError``; a bad ``taken_at`` is a
        ``ValueError``); any other field missing from an older payload becomes ``None`` (``error``: "").
        """
        values: dict[str, Any] = {name: data.get(name) for name in _SERVER_SCALARS}
        values["server_id"] = data["server_id"]
        values["reachable"] = data["reachable"]
        values["taken_at"] = datetime.fromisoformat(data["taken_at"])
        values["error"] = data.get("error") or ""
        values["streams"] = tuple(StreamSnapshot.from_json(item) for item in data.get("streams") or ())
        return cls(**values)


_SERVER_SCALARS: tuple[str, ...] = tuple(
    f.name for f in fields(ServerSnapshot) if f.name not in {"taken_at", "streams"}
)
