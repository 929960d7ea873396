"""nginx-rtmp poller: fetch ``/stat`` (``rtmp_stat all``) and normalize it into a ``ServerSnapshot``.

Stat XML facts this relies on (../shared/lab/nginx-rtmp/README.md §4, §9):

- ``rtmp/`` carries the answering *worker*: ``pid``, ``uptime`` (seconds), ``bw_*`` (bits/s over a
  10 s window, 0 during the first one), ``bytes_*`` (cumulative).
- ``server/application/live/stream/`` carries each stream; ``<name>`` exists at application and stream
  level, so everything is read by path. Stream and client ``time`` are milliseconds.
- A client with ``<publishing/>`` is the publisher; ``flashver`` ``ngx-local-relay`` marks nginx's own
  relay clients (pushes out of an edge, or a pull on a non-owner origin).
- ``nginx_rtmp_version`` is stuck at 1.1.4 upstream, so it is ignored.

The parser is hardened (no DTD, no entities, no network, a size cap) and tolerant: a missing or
garbled field becomes ``None``; a document that is not stat XML becomes an unreachable snapshot.
lxml parses; each ``<stream>``'s texts are then read by the compiled reader (``_stat_reader.pyx``) when
it is built, else by ``_read_stream``.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from lxml import etree

from console import http
from monitoring.pollers import PollError
from monitoring.snapshots import ServerSnapshot, StreamSnapshot

if TYPE_CHECKING:
    import httpx

    from streams.models import Server

log = logging.getLogger(__name__)

MAX_STAT_BYTES = 16 * 1024 * 1024
STAT_TIMEOUT_S = 5.0
RELAY_FLASHVER = "ngx-local-relay"

_Texts = dict[object, str | None]  # child tag -> text; comments and PIs have non-str tags
# A <stream>'s texts: its own fields, each client's, meta/video's, meta/audio's.
StreamTexts = tuple[_Texts, list[_Texts], _Texts, _Texts]
_NO_TEXTS: _Texts = {}
CLIENT_FIELDS = frozenset(("address", "id", "flashver", "avsync", "dropped"))  # besides <publishing/>
VIDEO_FIELDS = frozenset(("codec", "profile", "width", "height", "frame_rate"))
_SNIFF_BYTES = 512
_FIRST_ELEMENT = re.compile(rb"<[^?!]")
_GOT_HTML = "not nginx-rtmp stat XML (got HTML)"
_NO_DTD = "invalid stat XML: DTD and entity declarations are not allowed"


class NginxRtmpPoller:
    """``Poller`` for ``Server.Kind.NGINX_RTMP``: GET ``server.stat_url``, parse with ``parse_stat``.

    ``timeout_s`` bounds the request (``console.http``); the body is capped at ``MAX_STAT_BYTES``.
    """

    def __init__(self, *, timeout_s: float = STAT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s

    async def afetch(self, server: Server, client: httpx.AsyncClient) -> bytes:
        """Return the raw stat XML (one GET through the caller's client); raise ``PollError`` (permanent
        for config errors) on failure."""
        if not server.stat_url:
            raise PollError("no stat URL configured", permanent=True)
        try:
            return await http.aget_bytes(
                server.stat_url, timeout_s=self.timeout_s, max_bytes=MAX_STAT_BYTES, client=client
            )
        except http.HttpError as exc:
            raise PollError(f"stat request failed: {exc}", permanent=exc.permanent) from exc

    def parse(self, raw: bytes, taken_at: datetime, server_id: int | None = None) -> ServerSnapshot:
        """Normalize stat XML; see ``parse_stat``."""
        return parse_stat(raw, taken_at, server_id)


def parse_stat(raw: bytes, taken_at: datetime, server_id: int | None = None) -> ServerSnapshot:
    """Normalize one ``/stat`` document into a ``ServerSnapshot``. Pure; never raises on bad input.

    Anything that is not nginx-rtmp stat XML (empty, HTML, truncated, oversized, DTD/entities, another
    root element) gives ``reachable=False`` with a short reason in ``error``.
    """
    root = _parse_xml(raw)
    if isinstance(root, str):
        return ServerSnapshot.unreachable(server_id, taken_at, root)
    return _build_server(root, taken_at, server_id)


def _parse_xml(raw: bytes) -> etree._Element | str:
    """Return the ``<rtmp>`` root element, or the reason the bytes are not acceptable stat XML."""
    rejected = _sniff(raw)
    if rejected:
        return rejected
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        dtd_validation=False,
        collect_ids=False,
    )
    try:
        root = etree.fromstring(raw, parser)
    except (etree.XMLSyntaxError, ValueError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        return f"invalid stat XML: {reason[:160]}"
    if root.getroottree().docinfo.internalDTD is not None:
        return _NO_DTD
    if root.tag != "rtmp":
        tag = root.tag if isinstance(root.tag, str) else "?"
        if tag.lower() == "html":
            return _GOT_HTML
        return f"not nginx-rtmp stat XML (root element <{tag[:60]}>, expected <rtmp>)"
    return root


def _sniff(raw: bytes) -> str | None:
    """Return why ``raw`` must not even be parsed (too big, empty, HTML, a DTD), or ``None``."""
    if len(raw) > MAX_STAT_BYTES:
        return f"stat response too large ({len(raw)} bytes, limit {MAX_STAT_BYTES})"
    head = raw[:_SNIFF_BYTES].lstrip(b" \t\r\n\xef\xbb\xbf").lower()
    if not head:
        return "empty stat response"
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return _GOT_HTML
    # A DTD can only sit in the prolog, before the first element, so only that is scanned (a full scan
    # of a 1 MB document costs more than 5 % of the parse). What this misses (another encoding, "<x"
    # inside a prolog comment) is parsed without DTD loading or entity expansion, then rejected by
    # the docinfo check in _parse_xml.
    first_element = _FIRST_ELEMENT.search(raw)
    prolog = raw[: first_element.start()] if first_element else raw
    if b"<!DOCTYPE" in prolog or b"<!ENTITY" in prolog:
        return _NO_DTD
    return None


def _build_server(root: etree._Element, taken_at: datetime, server_id: int | None) -> ServerSnapshot:
    """Normalize the ``<rtmp>`` element: worker-level figures plus every live stream of every app."""
    top: _Texts = {}
    streams: list[StreamSnapshot] = []
    connections: int | None = None
    for child in root:
        if child.tag != "server":
            top[child.tag] = child.text
            continue
        for app in child:
            if app.tag == "application":
                clients = _parse_application(app, streams)
                if clients is not None:
                    connections = (connections or 0) + clients
    version = top.get("nginx_version")
    return ServerSnapshot(
        server_id=server_id,
        taken_at=taken_at,
        reachable=True,
        version=f"nginx/{version.strip()}" if version and version.strip() else None,
        worker_pid=_int(top.get("pid")),
        uptime_s=_float(top.get("uptime")),
        connections=connections,
        bandwidth_in_kbps=_kbps(top.get("bw_in")),
        bandwidth_out_kbps=_kbps(top.get("bw_out")),
        bytes_in=_int(top.get("bytes_in")),
        bytes_out=_int(top.get("bytes_out")),
        streams=tuple(streams),
    )


def _parse_application(app: etree._Element, out: list[StreamSnapshot]) -> int | None:
    """Append the streams of one ``<application>`` to ``out``; return its client count (``None`` if unknown)."""
    name = ""
    lives: list[etree._Element] = []
    for child in app:
        if child.tag == "name":
            name = child.text or ""
        elif child.tag == "live":
            lives.append(child)
    clients: int | None = None
    streams: list[etree._Element] = []
    for live in lives:
        for child in live:
            tag = child.tag
            if tag == "stream":
                streams.append(child)
            elif tag == "nclients":
                count = _int(child.text)
                if count is not None:
                    clients = (clients or 0) + count
    for texts in read_streams(streams):
        out.append(_parse_stream(name, texts))
    return clients


def read_streams_python(streams: list[etree._Element]) -> list[StreamTexts]:
    """The texts of each ``<stream>`` (``_read_stream``), through lxml's Python API: the reference for the
    compiled reader, and the reader when it is not built."""
    return [_read_stream(stream) for stream in streams]


def _compiled_reader() -> Callable[[list[etree._Element]], list[StreamTexts]] | None:
    """``monitoring.pollers._stat_reader`` (deploy/scripts/build_stat_reader.py), when it is built and
    loads against the installed lxml; else ``None``."""
    try:
        from monitoring.pollers import _stat_reader
    except ModuleNotFoundError:
        return None
    except (ImportError, ValueError) as exc:  # built against another lxml
        log.warning("compiled stat reader not used (rebuild it with `make venv`): %s", exc)
        return None
    return functools.partial(_stat_reader.read_streams, client_fields=CLIENT_FIELDS, video_fields=VIDEO_FIELDS)


_compiled = _compiled_reader()
# Which reader parse_stat uses ("compiled" or "python"); both give the same snapshots.
STAT_READER = "compiled" if _compiled else "python"
read_streams: Callable[[list[etree._Element]], list[StreamTexts]] = _compiled or read_streams_python


def _read_stream(stream: etree._Element) -> StreamTexts:
    """Return the texts of one ``<stream>``: (its own fields, each client's, meta/video's, meta/audio's).

    One pass per level into tag->text dicts, reading the text only of the fields used (``CLIENT_FIELDS``,
    ``VIDEO_FIELDS``, the audio codec), in plain loops (a dict comprehension costs a function call on
    Python 3.11): the cheapest way to read lxml elements from Python. The compiled reader
    (``_stat_reader.pyx``) does the same about six times faster; this is its reference.
    """
    values: _Texts = {}
    clients: list[_Texts] = []
    video = audio = _NO_TEXTS
    for child in stream:
        tag = child.tag
        if tag == "client":
            fields: _Texts = {}
            for item in child:
                name = item.tag
                if name in CLIENT_FIELDS:
                    fields[name] = item.text
                elif name == "publishing":
                    fields[name] = None
            clients.append(fields)
        elif tag == "meta":
            for part in child:
                kind = part.tag
                if kind == "video":
                    video = {}
                    for item in part:
                        name = item.tag
                        if name in VIDEO_FIELDS:
                            video[name] = item.text
                elif kind == "audio":
                    audio = {}
                    for item in part:
                        if item.tag == "codec":
                            audio["codec"] = item.text
        else:
            values[tag] = child.text
    return values, clients, video, audio


def _parse_stream(app: str, texts: StreamTexts) -> StreamSnapshot:
    """Normalize one ``<stream>`` from its texts: its own figures, its publisher and player counts, and its
    ``<meta>``."""
    values, clients, video, audio = texts
    publisher, viewers, relays, dropped = _summarize_clients(clients)
    return StreamSnapshot(
        app=app,
        name=values.get("name") or "",
        publishing="publishing" in values,
        active="active" in values,
        bitrate_in_kbps=_kbps(values.get("bw_in")),
        bitrate_out_kbps=_kbps(values.get("bw_out")),
        video_kbps=_kbps(values.get("bw_video")),
        audio_kbps=_kbps(values.get("bw_audio")),
        bytes_in=_int(values.get("bytes_in")),
        bytes_out=_int(values.get("bytes_out")),
        viewers=viewers,
        relays=relays,
        video_codec=video.get("codec"),
        video_profile=video.get("profile"),
        audio_codec=audio.get("codec"),
        width=_int(video.get("width")),
        height=_int(video.get("height")),
        fps=_float(video.get("frame_rate")),
        uptime_s=_seconds(values.get("time")),
        publisher_address=publisher.get("address"),
        publisher_client_id=publisher.get("id"),
        publisher_flashver=publisher.get("flashver"),
        dropped_frames=dropped,
        avsync_ms=_int(publisher.get("avsync")),
    )


def _summarize_clients(clients: list[_Texts]) -> tuple[_Texts, int, int, int | None]:
    """Return (the first publisher's fields or {}, players, outbound relays, dropped frames summed)."""
    publisher = _NO_TEXTS
    viewers = relays = 0
    dropped: int | None = None
    for fields in clients:
        frames = _int(fields.get("dropped"))
        if frames is not None:
            dropped = (dropped or 0) + frames
        if "publishing" in fields:
            if publisher is _NO_TEXTS:
                publisher = fields
        elif fields.get("flashver") == RELAY_FLASHVER:
            relays += 1
        else:
            viewers += 1
    return publisher, viewers, relays, dropped


def _int(text: str | None) -> int | None:
    """Return ``text`` as an int, or ``None`` when it is missing or not an integer."""
    try:
        return int(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _float(text: str | None) -> float | None:
    """Return ``text`` as a finite float, or ``None`` when it is missing, garbage, NaN or infinite."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _kbps(text: str | None) -> float | None:
    """Convert a bits/s field (an integer in nginx-rtmp) to kbps; ``None`` when missing or not an integer."""
    try:
        return int(text) / 1000  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _seconds(text: str | None) -> float | None:
    """Convert a milliseconds field to seconds."""
    value = _float(text)
    return None if value is None else value / 1000
