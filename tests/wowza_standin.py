"""A stateful stand-in for the Wowza Streaming Engine REST API, on a free loopback port.

Wowza is the one server we cannot run in tests (GUIDE §11), so this plays WSE 4.7.0's REST API (port
8087): the calls the console polls, application CRUD, the application actions (``restart``, ``shutdown``,
``start``, ``copy``), each application's security config, publisher CRUD (vhost, application and v3 server
level), ``disconnectStream``, the error bodies and Basic or Digest (RFC 7616, MD5, ``qop=auth``)
authentication. Bodies are built from the recorded WSE responses in ``tests/fixtures/wowza`` (copied from
../shared/contracts/wowza/examples), and ``tests/monitoring/test_wowza_contract.py`` validates every
exchange against the published OpenAPI contract. What it does not play: XML bodies, the configuration
endpoints we do not use, transcoding, RTMP itself (``publish`` stands in for an encoder connecting).

An application has a *saved* security config (``GET|PUT …/security`` and the ``securityConfig`` of the app
config) and an *active* one (what the running application enforces). As in WSE, a saved change takes
effect only when the application (re)starts: ``actions/restart`` (which also disconnects every incoming
stream), or ``actions/start`` after ``actions/shutdown``. Publisher credentials act at once: ``publish``
reads the stores as they are.

State API for tests: ``add_app(name, …, require_password=False)``, ``add_stream(app, name, source_ip,
bitrate_kbps=…, viewers=…)``, ``publish(app, name, username=…, password=…, …)`` (an encoder connecting, held
to the active security: raises ``PublishRefused``), ``remove_stream``, ``set_viewers``, ``security(app,
active=False)``, ``restarts(app)``, ``app_running(app)``, ``publishers(scope, app)``, ``advance(seconds)``
(counters move with a clock that runs in real time plus the advanced offset: ``bytesIn`` grows at the
stream's bitrate, ``uptime`` grows), ``inject(path, …)`` (a canned HTML page, 500, truncated body, slow or
huge answer) and ``exchanges`` (every request and response, for contract checks).

Use the fixtures by importing them into a test module (``from tests.wowza_standin import wowza_standin``);
they stop the server thread they started, and its request threads, at teardown.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import hmac
import json
import secrets
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "wowza"
HOST = "127.0.0.1"
SERVER_NAME = "_defaultServer_"
VHOST_NAME = "_defaultVHost_"
DEFAULT_INSTANCE = "_definst_"
WOWZA_VERSION = "4.7.0"
REALM = "Wowza"
VHOST_PATH = f"/v2/servers/{SERVER_NAME}/vhosts/{VHOST_NAME}"
RESPONSE_HEADERS = {"Server": "Restlet-Framework/2.2.2", "Access-Control-Allow-Origin": "*"}
ERROR_MESSAGES = {
    400: "The request could not be understood by the server due to malformed syntax",
    405: "The method specified in the request is not allowed for the resource identified by the request URI",
    500: "The server encountered an unexpected condition which prevented it from fulfilling the request",
}
_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 409: "Conflict", 500: "Internal Server Error"}  # fmt: skip


def load_recorded(name: str) -> Any:
    """Return the decoded ``tests/fixtures/wowza/<name>.recorded.json``."""
    return json.loads((FIXTURES / f"{name}.recorded.json").read_text())


def _recorded(name: str) -> Callable[[], Any]:
    """A fresh deep copy of a recorded body each call, so building a response never edits the template."""
    template = load_recorded(name)
    return lambda: copy.deepcopy(template)


_STATUS = _recorded("getServerStatusConfig")
_APPS = _recorded("getApplicationsConfig")
_APP_CONFIG = _recorded("getApplicationConfig")
_APP_STATS = _recorded("getCurrentApplicationStatistics")
_INSTANCE = _recorded("getInstanceConfig")
_INSTANCES = _recorded("getInstancesConfig")
_STREAM_STATS = _recorded("getCurrentIncomingStreamStatistics")
_ERRORS = {status: _recorded(f"error-{status}") for status in (401, 404, 409)}
_CREATED = _recorded("postApplicationsConfig.response-201")
_SAVED = _recorded("putApplicationConfig.response-200")
_DELETED = _recorded("deleteApplicationConfig.response-200")
_PUBLISHER_CREATED = _recorded("postPublisherVhostConfig.response-201")
_PUBLISHER_DELETED = _recorded("deletePublisherVhostConfig.response-200")
# The recorded ``securityConfig`` of getApplicationConfig is a real SecurityConfig body: the template of every
# application's security, and (by its value types) the type check of the fields a PUT may change.
_RECORDED_SECURITY: dict[str, Any] = load_recorded("getApplicationConfig")["securityConfig"]
SECURITY_FIELDS: dict[str, type] = {key: type(value) for key, value in _RECORDED_SECURITY.items()}
_READ_ONLY_SECURITY = {"serverName"}  # type-checked in a PUT, never stored


@dataclass(frozen=True)
class Exchange:
    """One request to the stand-in and its answer, as sent on the wire (``path`` still percent-encoded)."""

    method: str
    path: str
    query: str
    request_headers: dict[str, str]
    request_body: bytes
    status: int
    response_headers: dict[str, str]
    response_body: bytes

    def json(self) -> Any:
        return json.loads(self.response_body)


@dataclass
class Fault:
    """A canned answer for one path (or ``"*"``): hostile bodies, errors, slowness, size."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    delay_s: float = 0.0
    announce_length: bool = True
    times: int | None = None  # None: every time


@dataclass
class _Stream:
    name: str
    instance: str
    source_ip: str
    bitrate_kbps: float
    viewers: int
    started: float

    @property
    def key(self) -> tuple[str, str]:
        return (self.instance, self.name)


@dataclass
class _App:
    name: str
    app_type: str | None
    description: str
    started: float
    streams: dict[tuple[str, str], _Stream] = field(default_factory=dict)
    publishers: dict[str, str] = field(default_factory=dict)
    security: dict[str, Any] = field(default_factory=lambda: _default_security(require_password=False))  # saved
    active_security: dict[str, Any] = field(default_factory=lambda: _default_security(require_password=False))
    running: bool = True
    restarts: int = 0

    def activate(self, now: float) -> None:
        """(Re)start: the saved security becomes the enforced one, uptime counts from ``now``."""
        self.active_security = copy.deepcopy(self.security)
        self.running = True
        self.started = now


class PublishRefused(Exception):
    """``WowzaStandin.publish`` refused an encoder: no such or stopped application, bad credentials, blocked."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Reply(Exception):
    """Raised by a route to answer with ``status`` and a JSON ``body``."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class WowzaStandin:
    """The fake WSE: state plus an HTTP server thread. ``auth`` is "digest" (4.7.0's default), "basic" or "none"."""

    def __init__(
        self, *, auth: str = "digest", username: str = "tally", password: str = "wowza-s3cret", realm: str = REALM
    ) -> None:
        if auth not in {"digest", "basic", "none"}:
            raise ValueError(f"unknown auth {auth!r}")
        self.auth = auth
        self.username = username
        self.password = password
        self.realm = realm
        self.exchanges: list[Exchange] = []
        self.errors: list[Exception] = []  # exceptions raised by routes (stand-in bugs), for assertions
        self._lock = threading.RLock()
        self._offset_s = 0.0
        self._started = self._now()
        self._apps: dict[str, _App] = {}
        self._vhost_publishers: dict[str, str] = {}
        self._server_publishers: dict[str, tuple[str, str]] = {}  # name -> (password, description)
        self._faults: dict[str, Fault] = {}
        self._nonces: dict[str, int] = {}  # nonce -> last nc seen
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.add_app("live")

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> WowzaStandin:
        """Bind a free loopback port and serve in a daemon thread."""
        self._httpd = _Server((HOST, 0), _Handler)
        self._httpd.standin = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="wowza-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections and join every thread this stand-in started."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._httpd is not None:
            self._httpd.join_handlers(timeout_s=5)

    def __enter__(self) -> WowzaStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "start() the stand-in first"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The REST API base URL, what ``Server.wowza_api_url`` holds (``http://127.0.0.1:<port>``)."""
        return f"http://{HOST}:{self.port}"

    # --- state API ----------------------------------------------------------------------------------

    def _now(self) -> float:
        return time.monotonic() + self._offset_s

    def advance(self, seconds: float) -> None:
        """Move the stand-in's clock forward: uptimes and byte counters grow as if ``seconds`` passed."""
        with self._lock:
            self._offset_s += seconds

    def add_app(
        self, name: str, app_type: str | None = "Live", description: str = "", *, require_password: bool = False
    ) -> None:
        """Create a running application (``ValueError`` if it exists).

        Its security is the recorded ``securityConfig`` with ``publishRequirePassword: False`` and
        ``publishAuthenticationMethod: "none"``, or with ``require_password`` ``True`` and ``"digest"``.
        """
        with self._lock:
            if name in self._apps:
                raise ValueError(f"application {name!r} exists")
            security = _default_security(require_password=require_password)
            self._apps[name] = _App(name, app_type, description, self._now(), security=security,
                                    active_security=copy.deepcopy(security))  # fmt: skip

    def remove_app(self, name: str) -> None:
        with self._lock:
            del self._apps[name]

    def apps(self) -> list[str]:
        with self._lock:
            return list(self._apps)

    def add_stream(
        self,
        app: str,
        name: str,
        source_ip: str,
        *,
        bitrate_kbps: float = 2500.0,
        viewers: int = 0,
        instance: str = DEFAULT_INSTANCE,
    ) -> None:
        """Start an incoming stream (the application is created if missing).

        ``source_ip`` is an address (``192.0.2.10``, reported as ``rtmp://192.0.2.10:<port>`` like WSE does)
        or a full ``sourceIp`` value (``wowz://…``, ``local (Transcoder)``).
        """
        with self._lock:
            if app not in self._apps:
                self.add_app(app)
            if "://" not in source_ip and " " not in source_ip:
                host = f"[{source_ip}]" if ":" in source_ip else source_ip
                source_ip = f"rtmp://{host}:{49152 + secrets.randbelow(16000)}"
            stream = _Stream(name, instance, source_ip, float(bitrate_kbps), viewers, self._now())
            self._apps[app].streams[stream.key] = stream

    def remove_stream(self, app: str, name: str, instance: str = DEFAULT_INSTANCE) -> None:
        """End an incoming stream (``KeyError`` if there is none)."""
        with self._lock:
            del self._apps[app].streams[(instance, name)]

    def publish(
        self,
        app: str,
        name: str,
        *,
        username: str | None = None,
        password: str | None = None,
        source_ip: str = "192.0.2.10",
        bitrate_kbps: float = 2500.0,
        viewers: int = 0,
        instance: str = DEFAULT_INSTANCE,
    ) -> None:
        """An RTMP encoder connects to publish ``name``: held to the application's *active* security.

        Raises ``PublishRefused`` when the application does not exist or is shut down, when the active
        security requires a password (``publishRequirePassword`` and a method other than "none") and
        ``username``/``password`` match no publisher (vhost, application or v3 server level), when the
        method is "block", or when ``publishBlockDuplicateStreamNames`` is on and ``name`` is live. Otherwise
        the stream starts as with ``add_stream``.
        """
        with self._lock:
            target = self._apps.get(app)
            if target is None:
                raise PublishRefused(f"application {app!r} does not exist")
            if not target.running:
                raise PublishRefused(f"application {app!r} is shut down")
            security = target.active_security
            method = security.get("publishAuthenticationMethod")
            if method == "block":
                raise PublishRefused(f"application {app!r} blocks publishing")
            if security.get("publishRequirePassword") and method != "none":
                if username is None or password is None:
                    raise PublishRefused(f"application {app!r} requires a publisher name and password")
                if not self._publisher_ok(target, username, password):
                    raise PublishRefused(f"bad publisher name or password for {username!r}")
            if security.get("publishBlockDuplicateStreamNames") and (instance, name) in target.streams:
                raise PublishRefused(f"stream {name!r} is already live on {app!r}")
            self.add_stream(app, name, source_ip, bitrate_kbps=bitrate_kbps, viewers=viewers, instance=instance)

    def _publisher_ok(self, app: _App, username: str, password: str) -> bool:
        server = self._server_publishers.get(username)
        candidates = [self._vhost_publishers.get(username), app.publishers.get(username),
                      server[0] if server is not None else None]  # fmt: skip
        return any(
            candidate is not None and hmac.compare_digest(candidate.encode(), password.encode())
            for candidate in candidates
        )

    def security(self, app: str, *, active: bool = False) -> dict[str, Any]:
        """A copy of the application's saved security config, or the one it enforces (``active=True``)."""
        with self._lock:
            target = self._apps[app]
            return copy.deepcopy(target.active_security if active else target.security)

    def restarts(self, app: str) -> int:
        """How many times ``actions/restart`` restarted the application."""
        with self._lock:
            return self._apps[app].restarts

    def app_running(self, app: str) -> bool:
        """``False`` after ``actions/shutdown``, until ``actions/start`` or ``actions/restart``."""
        with self._lock:
            return self._apps[app].running

    def set_viewers(self, app: str, name: str, viewers: int, instance: str = DEFAULT_INSTANCE) -> None:
        with self._lock:
            self._apps[app].streams[(instance, name)].viewers = viewers

    def streams(self, app: str) -> list[str]:
        """Names of the incoming streams of ``app`` (all instances)."""
        with self._lock:
            return [stream.name for stream in self._apps[app].streams.values()] if app in self._apps else []

    def publishers(self, scope: str = "server", app: str | None = None) -> dict[str, str]:
        """Publisher name -> password, for ``scope`` "server" (v3), "vhost" or "app"."""
        with self._lock:
            if scope == "server":
                return {name: value[0] for name, value in self._server_publishers.items()}
            if scope == "vhost":
                return dict(self._vhost_publishers)
            return dict(self._apps[app or ""].publishers)

    def inject(
        self,
        path: str,
        *,
        status: int = 200,
        body: bytes | str | dict[str, Any] | list[Any] = b"",
        content_type: str = "application/json",
        delay_s: float = 0.0,
        announce_length: bool = True,
        times: int | None = None,
    ) -> None:
        """Answer requests for ``path`` (exact, without query; ``"*"`` for all) with a canned response.

        Faults are served before authentication, like a proxy in front of WSE or a broken WSE would.
        """
        if isinstance(body, dict | list):
            body = json.dumps(body)
        data = body.encode() if isinstance(body, str) else body
        with self._lock:
            self._faults[path] = Fault(status, data, content_type, delay_s, announce_length, times)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def clear_exchanges(self) -> None:
        with self._lock:
            self.exchanges.clear()

    # --- HTTP ---------------------------------------------------------------------------------------

    def handle(self, handler: _Handler) -> None:
        """Answer one request (called from a request thread)."""
        split = urlsplit(handler.path)
        method = handler.command
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""
        fault = self._take_fault(split.path)
        if fault is not None:
            if fault.delay_s and self._stopping.wait(fault.delay_s):
                return
            headers = {"Content-Type": fault.content_type, **RESPONSE_HEADERS}
            self._send(handler, method, split, body, fault.status, headers, fault.body, fault.announce_length)
            return
        headers = {"Content-Type": "application/json", **RESPONSE_HEADERS}
        challenge = self._check_auth(handler.headers.get("Authorization"), method, handler.path)
        if challenge is not None:
            status, payload = 401, _error(401)
            headers["WWW-Authenticate"] = challenge
        else:
            try:
                payload = self._route(method, split.path, body, split.query)
                status = 200
            except _Reply as reply:
                status, payload = reply.status, reply.body
            except Exception as exc:  # a stand-in bug: answer like WSE would, and keep it for the tests
                self.errors.append(exc)
                status, payload = 500, _error(500)
        data = json.dumps(payload, indent=2).encode()
        self._send(handler, method, split, body, status, headers, data, True)

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            key = path if path in self._faults else "*" if "*" in self._faults else None
            if key is None:
                return None
            fault = self._faults[key]
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self._faults[key]
            return fault

    def _send(
        self,
        handler: _Handler,
        method: str,
        split: Any,
        request_body: bytes,
        status: int,
        headers: dict[str, str],
        data: bytes,
        announce_length: bool,
    ) -> None:
        if announce_length:
            headers["Content-Length"] = str(len(data))
        else:
            headers["Connection"] = "close"
            handler.close_connection = True
        with self._lock:
            self.exchanges.append(
                Exchange(
                    method,
                    split.path,
                    split.query,
                    dict(handler.headers.items()),
                    request_body,
                    status,
                    dict(headers),
                    data,
                )
            )
        try:
            handler.send_response(status, _REASONS.get(status))
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            handler.close_connection = True  # the client gave up (timeout, size cap): expected

    # --- authentication -----------------------------------------------------------------------------

    def _check_auth(self, header: str | None, method: str, target: str) -> str | None:
        """Return ``None`` when the request is authenticated, else the ``WWW-Authenticate`` challenge."""
        if self.auth == "none":
            return None
        if self.auth == "basic":
            expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            if header and header[:6].lower() == "basic " and hmac.compare_digest(header[6:].strip(), expected):
                return None
            return f'Basic realm="{self.realm}"'
        if header and header[:7].lower() == "digest " and self._digest_ok(header[7:], method, target):
            return None
        nonce = secrets.token_hex(16)
        with self._lock:
            self._nonces[nonce] = 0
            while len(self._nonces) > 1000:
                del self._nonces[next(iter(self._nonces))]
        return f'Digest realm="{self.realm}", domain="/", nonce="{nonce}", algorithm=MD5, qop="auth"'

    def _digest_ok(self, fields: str, method: str, target: str) -> bool:
        """Check an RFC 7616 MD5 ``qop=auth`` response: known nonce, increasing nc, matching uri and hash."""
        params = urllib.request.parse_keqv_list(urllib.request.parse_http_list(fields))
        needed = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
        if any(name not in params for name in needed):
            return False
        if params.get("algorithm", "MD5").upper() != "MD5" or params["qop"] != "auth" or params["uri"] != target:
            return False
        if params["realm"] != self.realm or not hmac.compare_digest(params["username"], self.username):
            return False
        try:
            nc = int(params["nc"], 16)
        except ValueError:
            return False
        ha1 = _md5(f"{self.username}:{self.realm}:{self.password}")
        ha2 = _md5(f"{method}:{params['uri']}")
        expected = _md5(f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:auth:{ha2}")
        if not hmac.compare_digest(params["response"], expected):
            return False
        with self._lock:
            last = self._nonces.get(params["nonce"])
            if last is None or nc <= last:
                return False  # unknown nonce, or a replayed nonce count
            self._nonces[params["nonce"]] = nc
        return True

    # --- routes -------------------------------------------------------------------------------------

    def _route(self, method: str, path: str, body: bytes, query: str = "") -> Any:
        """Dispatch on the decoded path segments; raise ``_Reply`` for anything but a plain 200 answer."""
        parts = [unquote(part) for part in path.strip("/").split("/")]
        with self._lock:
            if parts == ["restinfo"]:
                return self._only(method, "GET", self._restinfo)
            if parts == ["v2", "machine", "monitoring", "current"]:
                return self._only(method, "GET", self._machine)
            if len(parts) >= 3 and parts[0] in {"v2", "v3"} and parts[1] == "servers" and parts[2] == SERVER_NAME:
                rest = parts[3:]
                if parts[0] == "v3":
                    return self._server_publishers_route(method, rest, body)
                if rest == ["status"]:
                    return self._only(method, "GET", self._status)
                if len(rest) >= 2 and rest[:2] == ["vhosts", VHOST_NAME]:
                    return self._vhost_route(method, rest[2:], body, query)
            raise _Reply(404, _error(404))

    @staticmethod
    def _only(method: str, allowed: str, build: Callable[[], Any]) -> Any:
        if method != allowed:
            raise _Reply(405, _error(405))
        return build()

    def _vhost_route(self, method: str, rest: list[str], body: bytes, query: str) -> Any:
        if rest == ["applications"]:
            if method == "GET":
                return self._applications()
            if method == "POST":
                name = _json_body(body).get("name")
                return self._create_app(name if isinstance(name, str) else "", body)
            raise _Reply(405, _error(405))
        if rest[:1] == ["publishers"]:
            return self._publishers_route(method, rest[1:], body, self._vhost_publishers, "vhost")
        if len(rest) < 2 or rest[0] != "applications":
            raise _Reply(404, _error(404))
        name, tail = rest[1], rest[2:]
        if not tail:
            return self._app_route(method, name, body)
        app = self._apps.get(name)
        if app is None:
            raise _Reply(404, _error(404))
        if tail == ["monitoring", "current"]:
            return self._only(method, "GET", lambda: self._app_stats(app))
        if tail[:1] == ["publishers"]:
            return self._publishers_route(method, tail[1:], body, app.publishers, "app")
        if tail == ["security"]:
            return self._security_route(method, app, body)
        if tail[:1] == ["actions"] and len(tail) == 2:
            return self._app_action(method, app, tail[1], query)
        if tail == ["instances"]:
            return self._only(method, "GET", lambda: self._instances(app))
        if tail[:1] == ["instances"]:
            return self._instance_route(method, app, tail[1], tail[2:])
        raise _Reply(404, _error(404))

    def _app_route(self, method: str, name: str, body: bytes) -> Any:
        if method == "POST":
            return self._create_app(name, body)
        app = self._apps.get(name)
        if app is None:
            raise _Reply(404, _error(404))
        if method == "GET":
            return self._app_config(app)
        if method == "PUT":
            update = _json_body(body)
            security = _security_update(update.get("securityConfig"))  # before any change: a 400 changes nothing
            if isinstance(update.get("appType"), str):
                app.app_type = update["appType"]
            if isinstance(update.get("description"), str):
                app.description = update["description"]
            app.security.update(security)  # saved only: enforced from the next (re)start
            return _SAVED()
        if method == "DELETE":
            del self._apps[name]
            return {**_DELETED(), "message": f"Application ({name}) deleted successfully"}
        raise _Reply(405, _error(405))

    def _create_app(self, name: str, body: bytes) -> Any:
        if not name:
            raise _Reply(400, _error(400))
        if name in self._apps:
            raise _Reply(409, _error(409))
        config = _json_body(body)
        security = _security_update(config.get("securityConfig"))
        app_type, description = config.get("appType"), config.get("description")
        self.add_app(name, app_type if isinstance(app_type, str) else "Live",
                     description if isinstance(description, str) else "")  # fmt: skip
        created = self._apps[name]
        created.security.update(security)
        created.active_security = copy.deepcopy(created.security)  # a new application starts with its config
        raise _Reply(201, {**_CREATED(), "message": f"Application ({name}) created successfully."})

    def _security_route(self, method: str, app: _App, body: bytes) -> Any:
        """``GET|PUT B/applications/{app}/security``: the *saved* config (enforced from the next (re)start)."""
        if method == "GET":
            return {**copy.deepcopy(app.security), "serverName": SERVER_NAME}
        if method == "PUT":
            app.security.update(_security_update(_json_body(body)))
            return _SAVED()
        raise _Reply(405, _error(405))

    def _app_action(self, method: str, app: _App, action: str, query: str) -> Any:
        """``PUT B/applications/{app}/actions/{copy|restart|shutdown|start}`` (``copy`` takes ``?dstEntryName=``).

        No recording of these answers exists: the write-result shape WSE sends, with the empty message of
        the stream actions.
        """
        if method != "PUT":
            raise _Reply(405, _error(405))
        if action == "restart":  # a restart drops every connection, then runs with the saved config
            app.streams.clear()
            app.restarts += 1
            app.activate(self._now())
        elif action == "shutdown":
            app.streams.clear()
            app.running = False
        elif action == "start":
            if not app.running:  # starting a running application changes nothing
                app.activate(self._now())
        elif action == "copy":
            destination = parse_qs(query).get("dstEntryName", [""])[-1]
            if not destination:
                raise _Reply(400, _error(400))
            if destination in self._apps:
                raise _Reply(409, _error(409))
            self.add_app(destination, app.app_type, app.description)
            copied = self._apps[destination]
            copied.security = copy.deepcopy(app.security)
            copied.active_security = copy.deepcopy(app.security)
            copied.publishers = dict(app.publishers)
        else:
            raise _Reply(400, _error(400))
        return {"success": True, "message": "", "data": None}

    def _instance_route(self, method: str, app: _App, instance: str, tail: list[str]) -> Any:
        streams = [stream for stream in app.streams.values() if stream.instance == instance]
        if instance != DEFAULT_INSTANCE and not streams:
            raise _Reply(404, _error(404))
        if not tail:
            return self._only(method, "GET", lambda: self._instance(instance, streams, top_level=True))
        if len(tail) < 2 or tail[0] != "incomingstreams":
            raise _Reply(404, _error(404))
        stream = app.streams.get((instance, tail[1]))
        if stream is None:
            raise _Reply(404, _error(404))
        rest = tail[2:]
        if not rest:
            return self._only(method, "GET", lambda: {"serverName": SERVER_NAME, **self._stream_config(stream)})
        if rest == ["monitoring", "current"]:
            return self._only(method, "GET", lambda: self._stream_stats(stream))
        if len(rest) == 2 and rest[0] == "actions" and method == "PUT":
            if rest[1] == "disconnectStream":
                del app.streams[stream.key]
            elif rest[1] == "resetStream":
                stream.started = self._now()
            else:
                raise _Reply(400, _error(400))
            return {"success": True, "message": "", "data": None}
        if (len(rest) == 2 and rest[0] == "actions") or rest == ["monitoring", "current"]:
            raise _Reply(405, _error(405))
        raise _Reply(404, _error(404))

    def _publishers_route(self, method: str, tail: list[str], body: bytes, store: dict[str, str], scope: str) -> Any:
        """v2 vhost- and application-level publishers (field ``publisherName``)."""
        if not tail:
            if method == "GET":
                return {"serverName": SERVER_NAME, "publishers": [{"publisherName": name} for name in store]}
            if method == "POST":
                fields = _json_body(body)
                name = fields.get("publisherName")
                return self._create_publisher(store, name if isinstance(name, str) else "", fields)
            raise _Reply(405, _error(405))
        name = tail[0]
        if len(tail) > 1:
            raise _Reply(404, _error(404))
        if method == "POST":
            return self._create_publisher(store, name, _json_body(body))
        if name not in store:
            raise _Reply(404, _error(404))
        if method == "GET":
            return {"serverName": SERVER_NAME, "publisherName": name, "description": "", "password": store[name]}
        if method == "PUT":
            password = _json_body(body).get("password")
            if isinstance(password, str):
                store[name] = password
            return _SAVED()
        if method == "DELETE":
            del store[name]
            return _PUBLISHER_DELETED()
        raise _Reply(405, _error(405))

    @staticmethod
    def _create_publisher(store: dict[str, str], name: str, fields: dict[str, Any]) -> Any:
        password = fields.get("password")
        if not name or not isinstance(password, str):
            raise _Reply(400, _error(400))
        if name in store:
            raise _Reply(409, _error(409))
        store[name] = password
        raise _Reply(201, _PUBLISHER_CREATED())

    def _server_publishers_route(self, method: str, rest: list[str], body: bytes) -> Any:
        """v3 server-level publishers (field ``publisher``; the docs' body, not the spec's v2 ``name``)."""
        store = self._server_publishers
        if rest[:1] != ["publishers"] or len(rest) > 2:
            raise _Reply(404, _error(404))
        if len(rest) == 1:
            if method == "GET":
                return {"serverName": SERVER_NAME, "publishers": [{"publisher": name} for name in store]}
            if method != "POST":
                raise _Reply(405, _error(405))
            fields = _json_body(body)
            name = fields.get("publisher")
            return self._create_server_publisher(name if isinstance(name, str) else "", fields)
        name = rest[1]
        if method == "POST":
            return self._create_server_publisher(name, _json_body(body))
        if name not in store:
            raise _Reply(404, _error(404))
        if method == "GET":
            password, description = store[name]
            return {"serverName": SERVER_NAME, "publisher": name, "password": password,
                    "description": description, "version": "3"}  # fmt: skip
        if method == "PUT":
            fields = _json_body(body)
            new_password, new_description = fields.get("password"), fields.get("description")
            store[name] = (new_password if isinstance(new_password, str) else store[name][0],
                           new_description if isinstance(new_description, str) else store[name][1])  # fmt: skip
            return {"success": True, "message": "publisher updated", "data": None}
        if method == "DELETE":
            del store[name]
            return _PUBLISHER_DELETED()
        raise _Reply(405, _error(405))

    def _create_server_publisher(self, name: str, fields: dict[str, Any]) -> Any:
        password = fields.get("password")
        if not name or not isinstance(password, str):
            raise _Reply(400, _error(400))
        if name in self._server_publishers:
            raise _Reply(409, _error(409))
        description = fields.get("description")
        self._server_publishers[name] = (password, description if isinstance(description, str) else "")
        raise _Reply(201, _PUBLISHER_CREATED())

    # --- bodies -------------------------------------------------------------------------------------

    def _restinfo(self) -> dict[str, Any]:
        # No recording exists: the RESTInfoConfig schema's fields, with 4.7.0-like values.
        return {"serverName": SERVER_NAME, "apiVersion": 2, "restBuild": "20186", "centralConfig": False,
                "licenseValid": True, "version": "1499348681000"}  # fmt: skip

    def _connections(self) -> int:
        return sum(self._app_connections(app) for app in self._apps.values())

    @staticmethod
    def _app_connections(app: _App) -> int:
        return sum(1 + stream.viewers for stream in app.streams.values())

    def _status(self) -> dict[str, Any]:
        body = _STATUS()
        body.update(
            serverVersion=WOWZA_VERSION,
            timeRunning=round(self._now() - self._started, 3),
            currentConnections=self._connections(),
        )
        return body

    def _machine(self) -> dict[str, Any]:
        # No recording exists: the CurrentMachineStatistics schema's fields, integers as WSE sends them.
        return {"serverName": SERVER_NAME, "serverUptime": int(self._now() - self._started), "cpuIdle": 93,
                "cpuUser": 5, "cpuSystem": 2, "memoryFree": 491945984, "memoryUsed": 7791493120,
                "heapFree": 2900000000, "heapUsed": 313600000, "diskFree": 52000000000, "diskUsed": 18000000000,
                "connectionCount": self._connections(), "version": "1499348681000"}  # fmt: skip

    def _applications(self) -> dict[str, Any]:
        body = _APPS()
        template = body["applications"][0]
        body["applications"] = [
            {**template, "id": app.name, "href": _app_href(app.name), "appType": app.app_type}
            for app in self._apps.values()
        ]
        return body

    def _app_config(self, app: _App) -> dict[str, Any]:
        body = _APP_CONFIG()
        recorded_href = _app_href(body["name"])
        body.update(name=app.name, appType=app.app_type)
        body["securityConfig"] = {**copy.deepcopy(app.security), "serverName": SERVER_NAME}  # saved, as WSE shows
        if app.description:
            body["description"] = app.description
        for template in body["transcoderConfig"]["templates"]["templates"]:
            template["href"] = template["href"].replace(recorded_href, _app_href(app.name))
        return body

    def _app_stats(self, app: _App) -> dict[str, Any]:
        body = _APP_STATS()
        streams = list(app.streams.values())
        connections = self._app_connections(app)
        body.update(
            uptime=int(self._now() - app.started),
            bytesIn=sum(self._bytes_in(stream) for stream in streams),
            bytesOut=sum(self._bytes_in(stream) * stream.viewers for stream in streams),
            bytesInRate=sum(_rate(stream) for stream in streams),
            bytesOutRate=sum(_rate(stream) * stream.viewers for stream in streams),
            totalConnections=connections,
        )
        body["connectionCount"] = {protocol: 0 for protocol in body["connectionCount"]} | {"RTMP": connections}
        return body

    def _instances(self, app: _App) -> dict[str, Any]:
        body = _INSTANCES()
        names = [DEFAULT_INSTANCE, *sorted({s.instance for s in app.streams.values()} - {DEFAULT_INSTANCE})]
        body["instanceList"] = [
            self._instance(name, [s for s in app.streams.values() if s.instance == name], top_level=False)
            for name in names
        ]
        return body

    def _instance(self, name: str, streams: list[_Stream], *, top_level: bool) -> dict[str, Any]:
        body = _INSTANCE()
        if not top_level:
            del body["serverName"]  # as recorded: instanceList items carry no serverName
        body["name"] = name
        body["incomingStreams"] = [self._stream_config(stream) for stream in streams]
        return body

    def _stream_config(self, stream: _Stream) -> dict[str, Any]:
        entry: dict[str, Any] = _INSTANCE()["incomingStreams"][0]
        entry.update(sourceIp=stream.source_ip, applicationInstance=stream.instance, name=stream.name,
                     isConnected=True)  # fmt: skip
        return entry

    def _bytes_in(self, stream: _Stream) -> int:
        return int(_rate(stream) * max(0.0, self._now() - stream.started))

    def _stream_stats(self, stream: _Stream) -> dict[str, Any]:
        body = _STREAM_STATS()
        bytes_in = self._bytes_in(stream)
        body.update(
            uptime=int(self._now() - stream.started),
            bytesIn=bytes_in,
            bytesOut=bytes_in * stream.viewers,
            bytesInRate=_rate(stream),
            bytesOutRate=_rate(stream) * stream.viewers,
            totalConnections=stream.viewers,
            applicationInstance=stream.instance,
            name=stream.name,
        )
        body["connectionCount"] = {protocol: 0 for protocol in body["connectionCount"]} | {"RTMP": stream.viewers}
        return body


def _rate(stream: _Stream) -> int:
    """bytes/s of a stream, as WSE reports ``bytesInRate`` (an integer)."""
    return round(stream.bitrate_kbps * 1000 / 8)


def _app_href(name: str) -> str:
    return f"{VHOST_PATH}/applications/{quote(name, safe='')}"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _error(status: int) -> dict[str, Any]:
    """WSE's error body; ``code`` is a string. 401/404/409 are the recorded bodies."""
    if status in _ERRORS:
        return _ERRORS[status]()
    return {"success": False, "code": str(status), "message": ERROR_MESSAGES[status], "wowzaServer": WOWZA_VERSION}


def _default_security(*, require_password: bool) -> dict[str, Any]:
    """The recorded ``securityConfig``, open to any encoder unless ``require_password`` (then digest, as recorded)."""
    security = copy.deepcopy(_RECORDED_SECURITY)
    security.update(publishRequirePassword=require_password,
                    publishAuthenticationMethod="digest" if require_password else "none")  # fmt: skip
    return security


def _security_update(fields: Any) -> dict[str, Any]:
    """The known SecurityConfig fields of a request, type-checked against the recorded values (a wrong type,
    ``null`` included, is WSE's 400). Unknown fields (``version``, ``saveFieldList``, typos) are ignored, and so
    is ``serverName``. A missing ``securityConfig`` (``None``) changes nothing."""
    if fields is None:
        return {}
    if not isinstance(fields, dict):
        raise _Reply(400, _error(400))
    update: dict[str, Any] = {}
    for key, value in fields.items():
        kind = SECURITY_FIELDS.get(key)
        if kind is None:
            continue
        if type(value) is not kind:  # exact: ``True`` is no integer, ``1`` no boolean
            raise _Reply(400, _error(400))
        if key not in _READ_ONLY_SECURITY:
            update[key] = value
    return update


def _json_body(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object; a missing or malformed body is a 400 like WSE's."""
    if not body:
        return {}
    try:
        value = json.loads(body)
    except ValueError:
        raise _Reply(400, _error(400))
    if not isinstance(value, dict):
        raise _Reply(400, _error(400))
    return value


class _Server(ThreadingHTTPServer):
    """Tracks its request threads and sockets so ``stop()`` can end them (keep-alive clients hold them)."""

    daemon_threads = True
    block_on_close = False
    standin: WowzaStandin

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._tracked_lock = threading.Lock()
        self._handler_threads: set[threading.Thread] = set()
        self._sockets: set[socket.socket] = set()

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_one, args=(request, client_address), name="wowza-standin-request", daemon=True
        )
        with self._tracked_lock:
            self._handler_threads = {t for t in self._handler_threads if t.is_alive()}
            self._handler_threads.add(thread)
            self._sockets.add(request)
        thread.start()

    def _serve_one(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._tracked_lock:
                self._sockets.discard(request)

    def close_connections(self) -> None:
        with self._tracked_lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):  # already closed by the client
                sock.shutdown(socket.SHUT_RDWR)

    def join_handlers(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self._tracked_lock:
            threads = list(self._handler_threads)
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so digest's challenge and answer share a connection
    timeout = 10  # an idle keep-alive connection ends after this; stop() cuts it sooner
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    server: _Server

    def _dispatch(self) -> None:
        self.server.standin.handle(self)

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean; ``exchanges`` has everything


@pytest.fixture
def wowza_standin_factory() -> Iterator[Callable[..., WowzaStandin]]:
    """Start stand-ins (``factory(auth="basic", …)``); every one is stopped at teardown."""
    started: list[WowzaStandin] = []

    def start(**options: Any) -> WowzaStandin:
        standin = WowzaStandin(**options).start()
        started.append(standin)
        return standin

    yield start
    for standin in started:
        standin.stop()


@pytest.fixture
def wowza_standin(wowza_standin_factory: Callable[..., WowzaStandin]) -> WowzaStandin:
    """A running stand-in with digest auth (WSE 4.7.0's default) and one empty ``live`` application."""
    return wowza_standin_factory()
