"""Wowza Streaming Engine poller: gather the REST monitoring calls into one bundle, then normalize it.

WSE has no single status document like nginx-rtmp's ``/stat``, so ``afetch`` makes the calls of
../shared/contracts/wowza/README.md §(a) (``B`` = ``/v2/servers/_defaultServer_/vhosts/_defaultVHost_``):

- ``GET /v2/servers/_defaultServer_/status`` (liveness, version, ``timeRunning``, ``currentConnections``),
- ``GET /v2/machine/monitoring/current`` (fallbacks for uptime and connections),
- ``GET B/applications``, then for each application ``GET B/applications/{app}/monitoring/current`` and
  ``GET B/applications/{app}/instances`` (``instanceList[].incomingStreams[]``: the stream list),
- for each incoming stream ``GET …/instances/{inst}/incomingstreams/{stream}/monitoring/current``,

and returns every body, undecoded, in one JSON *bundle* (``BUNDLE_FORMAT``), so ``parse`` stays pure and
can be tested on bundles built by hand. Units at the edge: ``bytes*Rate`` is bytes/s (×8/1000 → kbps),
``uptime`` and ``timeRunning`` are seconds, ``sourceIp`` (``wowz://10.0.0.5:39369``) becomes the host.

What makes the whole poll fail, and what only blanks a figure: a server status, application list or
instance list that is not a Wowza JSON object gives ``reachable=False`` (a stream list we cannot read must
not look like "every stream stopped"); a garbled per-application or per-stream statistics body, or a
field of the wrong type, gives ``None`` for the figures it carried. A 404 on a per-application or
per-stream call means the application or stream went away during the poll and is not an error.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote, urlsplit

import httpx

from console import http
from monitoring.pollers import MAX_CALLS_IN_FLIGHT, PollError
from monitoring.snapshots import ServerSnapshot, StreamSnapshot

if TYPE_CHECKING:
    from streams.models import Server

BUNDLE_FORMAT = "tally.wowza-poll/1"
SERVER_NAME = "_defaultServer_"
VHOST_NAME = "_defaultVHost_"
DEFAULT_INSTANCE = "_definst_"
CALL_TIMEOUT_S = 5.0
POLL_BUDGET_S = 20.0
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
MAX_BUNDLE_BYTES = 32 * 1024 * 1024
# The contract says to send both on every call: without them WSE may answer XML.
JSON_HEADERS = {
    "Accept": "application/json; charset=utf-8",
    "Content-Type": "application/json; charset=utf-8",
}

_STATUS_PATH = f"/v2/servers/{SERVER_NAME}/status"
_MACHINE_PATH = "/v2/machine/monitoring/current"
_VHOST_PATH = f"/v2/servers/{SERVER_NAME}/vhosts/{VHOST_NAME}"
_SNIFF_BYTES = 512
_Doc = dict[str, Any]


class WowzaPoller:
    """``Poller`` for ``Server.Kind.WOWZA``: the REST calls above through ``console.http``, then ``parse_bundle``.

    ``call_timeout_s`` bounds each call and ``poll_budget_s`` the whole series; ``max_response_bytes`` caps
    each body. One auth object serves the whole series, so digest answers later calls without a new
    challenge.
    """

    def __init__(
        self,
        *,
        call_timeout_s: float = CALL_TIMEOUT_S,
        poll_budget_s: float = POLL_BUDGET_S,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.call_timeout_s = call_timeout_s
        self.poll_budget_s = poll_budget_s
        self.max_response_bytes = max_response_bytes

    async def afetch(self, server: Server, client: httpx.AsyncClient) -> bytes:
        """Return the poll bundle (JSON bytes) through the caller's async client; raise ``PollError``
        (permanent for 401/404 and bad config). The server status comes first (it checks the
        credentials and takes digest's challenge); the other calls then run up to ``MAX_CALLS_IN_FLIGHT`` at
        once, or one at a time with digest auth: concurrent requests reach the server with their nonce counts
        out of order, which RFC 7616 lets it refuse as replays (tests/wowza_standin.py does).
        """
        if not server.wowza_api_url:
            raise PollError("no Wowza REST API URL configured", permanent=True)
        try:
            auth = http.build_auth(server.wowza_auth, server.wowza_username, server.wowza_password)
        except ValueError as exc:
            raise PollError(str(exc), permanent=True) from exc
        calls = _Calls(self, server.wowza_api_url.rstrip("/"), auth, server.wowza_auth, client)
        try:
            async with asyncio.timeout(self.poll_budget_s):
                bundle = await _fetch_bundle(calls)
        except TimeoutError:
            raise PollError(f"poll took longer than {self.poll_budget_s:g} s") from None
        return json.dumps(bundle, separators=(",", ":")).encode()

    def parse(self, raw: bytes, taken_at: datetime, server_id: int | None = None) -> ServerSnapshot:
        """Normalize a bundle from ``afetch``; see ``parse_bundle``."""
        return parse_bundle(raw, taken_at, server_id)


async def _fetch_bundle(calls: _Calls) -> _Doc:
    """Make the calls of one poll and return the bundle (``BUNDLE_FORMAT``), bodies undecoded."""
    status = await calls.get(_STATUS_PATH, "server status")
    machine, applications = await calls.all(
        calls.get(_MACHINE_PATH, "machine statistics", missing_ok=True),
        calls.get(f"{_VHOST_PATH}/applications", "application list"),
    )
    apps = await calls.all(*(_fetch_app(calls, app) for app in _list_ids(applications, "applications", "id")))
    return {
        "format": BUNDLE_FORMAT,
        "server_status": status,
        "machine": machine,
        "applications": applications,
        "apps": apps,
    }


async def _fetch_app(calls: _Calls, app: str) -> _Doc:
    """The calls of one application: its instances and statistics, then each incoming stream's statistics."""
    app_path = f"{_VHOST_PATH}/applications/{_segment(app)}"
    instances, monitoring = await calls.all(
        calls.get(f"{app_path}/instances", f"instances of {app!r}", missing_ok=True),
        calls.get(f"{app_path}/monitoring/current", f"statistics of {app!r}", missing_ok=True),
    )
    pairs = _incoming_streams(instances)
    stats = await calls.all(
        *(
            calls.get(
                f"{app_path}/instances/{_segment(instance)}/incomingstreams/{_segment(name)}/monitoring/current",
                f"statistics of stream {name!r}",
                missing_ok=True,
            )
            for instance, name in pairs
        )
    )
    streams = [
        {"instance": instance, "name": name, "monitoring": entry}
        for (instance, name), entry in zip(pairs, stats, strict=True)
    ]
    return {"id": app, "monitoring": monitoring, "instances": instances, "streams": streams}


class _Calls:
    """The GETs of one poll: shared client, auth and headers, a per-call timeout within the poll's budget."""

    def __init__(
        self, poller: WowzaPoller, base_url: str, auth: http.Auth, auth_method: str, client: httpx.AsyncClient
    ) -> None:
        self.poller = poller
        self.base_url = base_url
        self.auth = auth
        self.auth_method = auth_method
        self.client = client
        self.deadline = time.monotonic() + poller.poll_budget_s
        self.slots = asyncio.Semaphore(1 if isinstance(auth, httpx.DigestAuth) else MAX_CALLS_IN_FLIGHT)

    async def get(self, path: str, what: str, *, missing_ok: bool = False) -> _Doc:
        """Return ``{"status", "body"}`` for ``path``; a 404 too when ``missing_ok``, else raise ``PollError``."""
        async with self.slots:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise PollError(f"poll took longer than {self.poller.poll_budget_s:g} s (stopped before {what})")
            try:
                body = await http.aget_bytes(
                    self.base_url + path,
                    timeout_s=min(self.poller.call_timeout_s, remaining),
                    max_bytes=self.poller.max_response_bytes,
                    auth=self.auth,
                    headers=JSON_HEADERS,
                    client=self.client,
                )
            except http.HttpError as exc:
                if missing_ok and exc.status == 404:
                    return {"status": 404, "body": ""}
                raise PollError(self._reason(exc, what), permanent=exc.permanent) from exc
        return {"status": 200, "body": body.decode("utf-8", errors="replace")}

    @staticmethod
    async def all(*calls: Awaitable[_Doc]) -> list[_Doc]:
        """Await ``calls`` together; on failure raise the first one's error in call order, not in time order,
        so the reason a poll gives does not depend on which answer came back first."""
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return cast(list[_Doc], results)

    def _reason(self, exc: http.HttpError, what: str) -> str:
        """A human reason for a failed call; never the URL's credentials (only the path is known here)."""
        if exc.status == 401:
            credentials = "credentials" if self.auth is not None else "no credentials"
            return (
                f"Wowza REST API refused the {credentials} ({exc} on {what}); "
                f"check the username, password and auth method ({self.auth_method})"
            )
        if exc.status == 404:
            return f"Wowza REST API answered {exc} on {what}; check the REST API base URL (e.g. http://host:8087)"
        return f"{what} request failed: {exc}"


def _segment(value: str) -> str:
    """Quote one path segment (stream names may hold spaces, slashes, non-ASCII)."""
    return quote(value, safe="")


def _list_ids(entry: _Doc, list_key: str, id_key: str) -> list[str]:
    """Return the string ``id_key`` of each item of ``entry``'s body ``list_key``; [] for anything unreadable.

    ``afetch`` only navigates with this; ``parse_bundle`` is where a bad body becomes a reason.
    """
    document = _decode(entry, "")
    items = document.get(list_key) if isinstance(document, dict) else None
    if not isinstance(items, list):
        return []
    return [item[id_key] for item in items if isinstance(item, dict) and isinstance(item.get(id_key), str)]


def _incoming_streams(entry: _Doc) -> list[tuple[str, str]]:
    """Return ``(instance, stream name)`` for every incoming stream of an instances body (``[]`` if unreadable)."""
    document = _decode(entry, "")
    if not isinstance(document, dict):
        return []
    return [(instance, str(stream["name"])) for instance, stream in _instance_streams(document) or ()]


def _instance_streams(document: _Doc) -> list[tuple[str, _Doc]] | None:
    """Return ``(instance name, incoming stream config)`` pairs; ``None`` when ``instanceList`` is not a list."""
    instances = document.get("instanceList")
    if not isinstance(instances, list):
        return None
    pairs = []
    for instance in instances:
        if not isinstance(instance, dict):
            continue
        name = instance.get("name")
        if not isinstance(name, str) or not name:
            name = DEFAULT_INSTANCE
        streams = instance.get("incomingStreams")
        for stream in streams if isinstance(streams, list) else ():
            if isinstance(stream, dict) and isinstance(stream.get("name"), str) and stream["name"]:
                pairs.append((name, stream))
    return pairs


def parse_bundle(raw: bytes, taken_at: datetime, server_id: int | None = None) -> ServerSnapshot:
    """Normalize one ``afetch`` bundle into a ``ServerSnapshot``. Pure; never raises on bad input.

    A bundle that is not one (oversized, not JSON, another format) or whose server status, application
    list or instance lists are not Wowza JSON objects gives ``reachable=False`` with a short reason.
    """
    if len(raw) > MAX_BUNDLE_BYTES:
        return ServerSnapshot.unreachable(
            server_id, taken_at, f"Wowza poll bundle too large ({len(raw)} bytes, limit {MAX_BUNDLE_BYTES})"
        )
    try:
        bundle = json.loads(raw)
    except (ValueError, RecursionError):
        bundle = None
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        return ServerSnapshot.unreachable(server_id, taken_at, f"not a Wowza poll bundle ({BUNDLE_FORMAT})")
    status = _document(bundle.get("server_status"), "server status")
    if isinstance(status, str):
        return ServerSnapshot.unreachable(server_id, taken_at, status)
    applications = _document(bundle.get("applications"), "application list")
    if isinstance(applications, str):
        return ServerSnapshot.unreachable(server_id, taken_at, applications)
    if not isinstance(applications.get("applications", []), list):
        found = _json_type(applications["applications"])
        return ServerSnapshot.unreachable(
            server_id, taken_at, f"application list: 'applications' is {found}, expected an array"
        )
    apps = bundle.get("apps")
    streams: list[StreamSnapshot] = []
    app_stats: list[_Doc | None] = []
    for app in apps if isinstance(apps, list) else ():
        reason = _parse_app(app, streams, app_stats)
        if reason:
            return ServerSnapshot.unreachable(server_id, taken_at, reason)
    return _build_server(status, _optional_document(bundle.get("machine")), app_stats, streams, taken_at, server_id)


def _parse_app(app: object, streams: list[StreamSnapshot], app_stats: list[_Doc | None]) -> str | None:
    """Append one application's streams and statistics; return why the bundle is unusable, or ``None``."""
    if not isinstance(app, dict) or not isinstance(app.get("id"), str):
        return "malformed Wowza poll bundle (application entry)"
    app_id: str = app["id"]
    instances_entry = app.get("instances")
    if isinstance(instances_entry, dict) and instances_entry.get("status") == 404:
        return None  # the application was removed during the poll: no streams, no figures
    instances = _document(instances_entry, f"instances of {app_id!r}")
    if isinstance(instances, str):
        return instances
    pairs = _instance_streams(instances)
    if pairs is None:
        found = _json_type(instances["instanceList"]) if "instanceList" in instances else "missing"
        return f"instances of {app_id!r}: 'instanceList' is {found}, expected an array"
    app_stats.append(_optional_document(app.get("monitoring")))
    stats_by_key: dict[tuple[object, object], _Doc | None] = {}
    entries = app.get("streams")
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, dict):
            stats_by_key[(entry.get("instance"), entry.get("name"))] = _optional_document(entry.get("monitoring"))
    for instance, config in pairs:
        stats = stats_by_key.get((instance, config["name"]))
        streams.append(_build_stream(app_id, instance, config, stats))
    return None


def _document(entry: object, what: str) -> _Doc | str:
    """Return the JSON object of a bundle entry, or the reason it is not a usable Wowza body."""
    if not isinstance(entry, dict) or not isinstance(entry.get("body"), str):
        return f"malformed Wowza poll bundle ({what} missing)"
    decoded = _decode(entry, what)
    if isinstance(decoded, str):
        return decoded
    if not isinstance(decoded, dict):
        return f"{what}: expected a JSON object, got {_json_type(decoded)}"
    if decoded.get("success") is False:
        code = str(decoded.get("code", "?"))[:8]
        message = str(decoded.get("message", ""))[:160]
        return f"{what}: Wowza error {code}: {message}".rstrip(": ")
    return decoded


def _optional_document(entry: object) -> _Doc | None:
    """Return the JSON object of an optional entry (404, garbled or absent: ``None``)."""
    document = _document(entry, "")
    return document if isinstance(document, dict) else None


def _decode(entry: _Doc, what: str) -> object:
    """Return the decoded JSON body of ``entry``; a ``str`` result is the reason it could not be decoded."""
    body = entry.get("body")
    if not isinstance(body, str):
        return f"{what}: no body"
    head = body[:_SNIFF_BYTES].lstrip(" \t\r\n\ufeff").lower()
    if not head:
        return f"{what}: empty response"
    if head.startswith(("<!doctype html", "<html")) or "<html" in head:
        return f"{what}: not Wowza JSON (got HTML)"
    if head.startswith("<"):
        return f"{what}: not Wowza JSON (got XML: was the Accept header dropped?)"
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        return f"{what}: invalid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})"
    except (ValueError, RecursionError) as exc:
        return f"{what}: invalid JSON ({type(exc).__name__})"


def _json_type(value: object) -> str:
    """Name ``value``'s JSON type, for reasons."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _build_server(
    status: _Doc,
    machine: _Doc | None,
    app_stats: list[_Doc | None],
    streams: list[StreamSnapshot],
    taken_at: datetime,
    server_id: int | None,
) -> ServerSnapshot:
    """Combine the server status, machine statistics and per-application totals into the snapshot."""
    machine = machine or {}
    version = status.get("serverVersion")
    build = status.get("serverBuild")
    version_text = None
    if isinstance(version, str) and version.strip():
        version_text = f"Wowza/{version.strip()[:40]}"
        if isinstance(build, str) and build.strip():
            version_text += f" (build {build.strip()[:20]})"
    uptime_s = _float(status.get("timeRunning"))
    connections = _int(status.get("currentConnections"))
    return ServerSnapshot(
        server_id=server_id,
        taken_at=taken_at,
        reachable=True,
        version=version_text,
        uptime_s=uptime_s if uptime_s is not None else _float(machine.get("serverUptime")),
        connections=connections if connections is not None else _int(machine.get("connectionCount")),
        bandwidth_in_kbps=_sum_kbps(app_stats, "bytesInRate"),
        bandwidth_out_kbps=_sum_kbps(app_stats, "bytesOutRate"),
        bytes_in=_sum_int(app_stats, "bytesIn"),
        bytes_out=_sum_int(app_stats, "bytesOut"),
        streams=tuple(streams),
    )


def _build_stream(app: str, instance: str, config: _Doc, stats: _Doc | None) -> StreamSnapshot:
    """Normalize one incoming stream: its config (``isConnected``, ``sourceIp``) and its statistics."""
    stats = stats or {}
    connected = config.get("isConnected") is True
    return StreamSnapshot(
        app=app if instance == DEFAULT_INSTANCE else f"{app}/{instance}",
        name=config["name"],
        publishing=connected,
        active=connected,
        bitrate_in_kbps=_kbps(stats.get("bytesInRate")),
        bitrate_out_kbps=_kbps(stats.get("bytesOutRate")),
        bytes_in=_int(stats.get("bytesIn")),
        bytes_out=_int(stats.get("bytesOut")),
        viewers=_viewers(stats),
        uptime_s=_float(stats.get("uptime")),
        publisher_address=_source_host(config.get("sourceIp")),
    )


def _viewers(stats: _Doc) -> int | None:
    """Players of a stream: ``totalConnections``, else the sum of ``connectionCount`` per protocol."""
    total = _int(stats.get("totalConnections"))
    if total is not None:
        return total
    counts = stats.get("connectionCount")
    if not isinstance(counts, dict) or not counts:
        return None
    values = [_int(value) for value in counts.values()]
    return None if any(value is None for value in values) else sum(v for v in values if v is not None)


def _source_host(value: object) -> str | None:
    """The publisher's host from ``sourceIp`` (``wowz://10.0.0.5:39369`` → ``10.0.0.5``).

    Only the host is kept: a pulled source's URL may carry credentials. A value without a scheme
    (``local (Transcoder)``) is kept as is, cut to 200 characters.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if "://" not in text:
        return text[:200]
    try:
        host = urlsplit(text).hostname
    except ValueError:
        return None
    return host or None


def _int(value: object) -> int | None:
    """Return a JSON integer (or integral float) as an int; ``None`` for anything else (strings, booleans)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _float(value: object) -> float | None:
    """Return a finite JSON number as a float; ``None`` for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _kbps(value: object) -> float | None:
    """Convert a bytes/s figure to kbps (×8/1000)."""
    rate = _float(value)
    return None if rate is None else rate * 8 / 1000


def _sum_kbps(app_stats: list[_Doc | None], key: str) -> float | None:
    """Sum a bytes/s figure over the applications, in kbps; ``None`` if any application lacks it."""
    total = 0.0
    for stats in app_stats:
        kbps = _kbps(stats.get(key)) if stats else None
        if kbps is None:
            return None
        total += kbps
    return total


def _sum_int(app_stats: list[_Doc | None], key: str) -> int | None:
    """Sum a counter over the applications; ``None`` if any application lacks it."""
    total = 0
    for stats in app_stats:
        value = _int(stats.get(key)) if stats else None
        if value is None:
            return None
        total += value
    return total
