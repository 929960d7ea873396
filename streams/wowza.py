"""Wowza Streaming Engine management: applications, publish credentials and kicks through its REST API.

nginx-rtmp asks Tally before every publish (callbacks); Wowza does not, so Tally writes its decisions into
Wowza instead (../shared/contracts/wowza/README.md §(b)–(d), ``B`` = ``/v2/servers/_defaultServer_/
vhosts/_defaultVHost_``):

- each Tally application on a Wowza server is a Live application with publish authentication on
  (``B/applications/{app}/security``: ``publishRequirePassword``, ``digest``, duplicate names blocked);
  Wowza applies a security change only when the application restarts (``…/actions/restart``);
- each active key is a vhost-level publisher entry ``tally-<key id>`` (``B/publishers/{name}``) whose password
  is the key's secret: the encoder publishes the key's public name with that username and password;
- revoking a key deletes its entry and disconnects its stream (``…/incomingstreams/{name}/actions/
  disconnectStream``); expired keys lose their entry at the next sync.

``WowzaTarget`` gives deploys the same small interface as tally-agent's client (``config``, ``validate``,
``apply``; no rollback: Wowza follows the database), so a Wowza server is deployed, diffed and recorded
like an nginx one. Its "config" is a deterministic text rendering of the managed state
(``WowzaState.render``), read back from the REST API for the diff and for verification. Entries and
applications Tally does not manage are never touched.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from django.db.models import Q
from django.utils import timezone

from console import http
from streams.models import Application, Server, StreamKey

log = logging.getLogger(__name__)

VHOST_PATH = "/v2/servers/_defaultServer_/vhosts/_defaultVHost_"
INSTANCE = "_definst_"
PUBLISHER_PREFIX = "tally-"
CALL_TIMEOUT_S = 5.0
MAX_RESPONSE_BYTES = 2 * 1024 * 1024
ROLLBACK_REFUSED = ("A Wowza server has no previous config file to put back: its applications and publishers "
                    "follow Tally's database. Change them in Tally and deploy again.")  # fmt: skip
JSON_HEADERS = {"Accept": "application/json; charset=utf-8", "Content-Type": "application/json; charset=utf-8"}
# The security settings Tally manages on every application; other fields are left as they are.
MANAGED_SECURITY = {
    "publishRequirePassword": True,
    "publishAuthenticationMethod": "digest",
    "publishBlockDuplicateStreamNames": True,
}


class WowzaError(Exception):
    """The REST API could not be used: unreachable, refused the credentials, or answered nonsense."""


def _segment(value: str) -> str:
    return quote(value, safe="")


class WowzaAdmin:
    """The REST calls Tally makes to manage one Wowza server (through ``console.http``: timeouts, size caps)."""

    def __init__(self, server: Server) -> None:
        if not server.wowza_api_url:
            raise WowzaError(f"{server.name} has no Wowza REST API URL.")
        try:
            self.auth = http.build_auth(server.wowza_auth, server.wowza_username, server.wowza_password)
        except ValueError as exc:
            raise WowzaError(str(exc)) from None
        self.base = server.wowza_api_url.rstrip("/")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        try:
            status, raw = http.call(method, f"{self.base}{path}", timeout_s=CALL_TIMEOUT_S,
                                    max_bytes=MAX_RESPONSE_BYTES, json_body=body, auth=self.auth,
                                    headers=JSON_HEADERS)  # fmt: skip
        except http.HttpError as exc:
            raise WowzaError(f"Wowza REST API: {exc}") from None
        if status in (401, 403):
            raise WowzaError(f"Wowza refused the REST credentials (HTTP {status}).")
        try:
            doc = json.loads(raw) if raw.strip() else None
        except ValueError:
            raise WowzaError(f"Wowza answered HTTP {status} without JSON to {method} {path}.") from None
        if status >= 500 or status in (400, 405):
            message = doc.get("message") if isinstance(doc, dict) else None
            detail = f": {str(message)[:200]}" if message else ""
            raise WowzaError(f"Wowza answered HTTP {status} to {method} {path}{detail}")
        return status, doc

    def _object(self, path: str) -> dict[str, Any] | None:
        """GET a JSON object; None on 404."""
        status, doc = self._call("GET", path)
        if status == 404:
            return None
        if status != 200 or not isinstance(doc, dict):
            raise WowzaError(f"Wowza answered HTTP {status} with no JSON object to GET {path}.")
        return doc

    def applications(self) -> list[str]:
        doc = self._object(f"{VHOST_PATH}/applications") or {}
        apps = doc.get("applications")
        if not isinstance(apps, list):
            return []
        return [str(app["id"]) for app in apps if isinstance(app, dict) and "id" in app]

    def application(self, name: str) -> dict[str, Any] | None:
        return self._object(f"{VHOST_PATH}/applications/{_segment(name)}")

    def create_application(self, name: str, description: str) -> None:
        body = {"name": name, "appType": "Live", "description": description}
        status, _ = self._call("POST", f"{VHOST_PATH}/applications", body)
        if status not in (200, 201, 409):
            raise WowzaError(f"creating application {name} failed (HTTP {status}).")

    def set_live(self, name: str) -> None:
        self._expect_ok("PUT", f"{VHOST_PATH}/applications/{_segment(name)}", {"appType": "Live"})

    def security(self, name: str) -> dict[str, Any]:
        return self._object(f"{VHOST_PATH}/applications/{_segment(name)}/security") or {}

    def put_security(self, name: str, fields: dict[str, Any]) -> None:
        body = {"serverName": "_defaultServer_", **fields}
        self._expect_ok("PUT", f"{VHOST_PATH}/applications/{_segment(name)}/security", body)

    def restart(self, name: str) -> None:
        self._expect_ok("PUT", f"{VHOST_PATH}/applications/{_segment(name)}/actions/restart")

    def live_streams(self, name: str) -> list[str]:
        doc = self._object(f"{VHOST_PATH}/applications/{_segment(name)}/instances/{INSTANCE}") or {}
        streams = doc.get("incomingStreams")
        if not isinstance(streams, list):
            return []
        return [str(s["name"]) for s in streams if isinstance(s, dict) and s.get("name") and s.get("isConnected", True)]

    def publishers(self) -> set[str]:
        doc = self._object(f"{VHOST_PATH}/publishers") or {}
        entries = doc.get("publishers")
        if not isinstance(entries, list):
            return set()
        return {str(e.get("publisherName") or e.get("name")) for e in entries if isinstance(e, dict)} - {"None"}

    def create_publisher(self, name: str, password: str) -> None:
        """Create the entry, or set its password when it exists already."""
        status, _ = self._call("POST", f"{VHOST_PATH}/publishers/{_segment(name)}", {"password": password})
        if status == 409:
            self.set_password(name, password)
        elif status not in (200, 201):
            raise WowzaError(f"creating publisher {name} failed (HTTP {status}).")

    def set_password(self, name: str, password: str) -> None:
        status, _ = self._call("PUT", f"{VHOST_PATH}/publishers/{_segment(name)}", {"password": password})
        if status == 404:
            self.create_publisher(name, password)
        elif status != 200:
            raise WowzaError(f"updating publisher {name} failed (HTTP {status}).")

    def delete_publisher(self, name: str) -> bool:
        """Delete the entry; False when it did not exist."""
        status, _ = self._call("DELETE", f"{VHOST_PATH}/publishers/{_segment(name)}")
        if status not in (200, 404):
            raise WowzaError(f"deleting publisher {name} failed (HTTP {status}).")
        return status == 200

    def disconnect(self, app: str, stream: str) -> bool:
        """Disconnect a live incoming stream; False when it was not live."""
        path = (f"{VHOST_PATH}/applications/{_segment(app)}/instances/{INSTANCE}/incomingstreams/"
                f"{_segment(stream)}/actions/disconnectStream")  # fmt: skip
        status, _ = self._call("PUT", path)
        if status not in (200, 404):
            raise WowzaError(f"disconnecting {app}/{stream} failed (HTTP {status}).")
        return status == 200

    def _expect_ok(self, method: str, path: str, body: dict[str, Any] | None = None) -> None:
        status, _ = self._call(method, path, body)
        if status == 404:
            raise WowzaError(f"{method} {path}: not found on Wowza.")
        if status not in (200, 201):
            raise WowzaError(f"{method} {path} failed (HTTP {status}).")


# --- desired and live state ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AppState:
    name: str
    app_type: str
    security: tuple[tuple[str, Any], ...]  # the managed fields only, sorted

    def render(self) -> list[str]:
        lines = [f"application {self.name}", f"  appType {self.app_type}"]
        lines += [f"  {key} {json.dumps(value)}" for key, value in self.security]
        return lines


@dataclass(frozen=True)
class WowzaState:
    """What Tally manages on one Wowza server: its applications' type and publish security, and the
    publisher entries named ``tally-<key id>``. Renders to the text deploys diff and store."""

    apps: tuple[AppState, ...]
    publishers: tuple[str, ...]
    missing_apps: tuple[str, ...] = ()

    def render(self, server_name: str) -> str:
        lines = [f"# Wowza Streaming Engine {server_name}: the state Tally manages through the REST API", ""]
        for app in self.apps:
            lines += [*app.render(), ""]
        lines += [f"# application {name}: absent" for name in self.missing_apps]
        lines.append(f"publishers {' '.join(self.publishers) if self.publishers else '(none)'}")
        return "\n".join(lines) + "\n"


def _managed(security: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((key, security.get(key)) for key in MANAGED_SECURITY))


def active_keys(server: Server) -> list[StreamKey]:
    """Keys whose publisher entry must exist: active ones of the server's live applications."""
    now = timezone.now()
    return list(
        StreamKey.objects.filter(application__server=server, application__kind=Application.Kind.LIVE,
                                 revoked_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .select_related("application")
        .order_by("pk")
    )  # fmt: skip


def desired_state(server: Server) -> WowzaState:
    """Every live application of the server, with the managed security, and an entry per active key."""
    names = server.applications.filter(kind=Application.Kind.LIVE).order_by("name").values_list("name", flat=True)
    apps = tuple(AppState(name, "Live", _managed(MANAGED_SECURITY)) for name in names)
    return WowzaState(apps=apps, publishers=tuple(key.wowza_publisher for key in active_keys(server)))


def live_state(admin: WowzaAdmin, app_names: list[str]) -> WowzaState:
    """Read back what ``desired_state`` describes (apps Tally manages only; ``tally-`` entries only)."""
    present = set(admin.applications())
    apps, missing = [], []
    for name in app_names:
        config = admin.application(name) if name in present else None
        if config is None:
            missing.append(name)
            continue
        security = admin.security(name) or (config.get("securityConfig") or {})
        apps.append(AppState(name, str(config.get("appType") or "?"), _managed(security)))
    ours = sorted((p for p in admin.publishers() if p.startswith(PUBLISHER_PREFIX)), key=_publisher_order)
    return WowzaState(apps=tuple(apps), publishers=tuple(ours), missing_apps=tuple(missing))


def _publisher_order(name: str) -> tuple[int, str]:
    suffix = name.removeprefix(PUBLISHER_PREFIX)
    return (int(suffix), "") if suffix.isdigit() else (1 << 62, name)


# --- deploy target ---------------------------------------------------------------------------------------


@dataclass
class SyncReport:
    """What a sync did, in the order it happened, and what it could not do."""

    actions: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    restart_pending: list[str] = field(default_factory=list)  # security saved, not applied until a restart

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        lines = self.actions or ["nothing to change"]
        return "\n".join([*lines, *(f"ERROR: {p}" for p in self.problems)])


class WowzaTarget:
    """Deploys to a Wowza server: the same calls as ``deploys.AgentClient``, done through the REST API."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.admin = WowzaAdmin(server)
        self.desired = desired_state(server)
        self.app_names = [app.name for app in self.desired.apps]
        self.pending = _pending_restarts(server)
        self._live: WowzaState | None = None  # read once by config(), then used by validate() and apply()

    def rendered(self) -> str:
        return self.desired.render(self.server.name)

    def _before(self) -> WowzaState:
        if self._live is None:
            self._live = live_state(self.admin, self.app_names)
        return self._live

    def config(self) -> tuple[str, str]:
        text = self._before().render(self.server.name)
        return text, hashlib.sha256(text.encode()).hexdigest()

    def validate(self, text: str) -> dict[str, Any]:
        """A dry run: the plan, from the live state (the REST API must answer)."""
        if text != self.rendered():
            return {"ok": False, "output": "the candidate is not this server's rendering"}
        plan = _plan(self.desired, self._before())
        restarting = {line.split()[4] for line in plan if line.endswith("and restart it")}
        plan += [f"restart {name} (its publish security is saved but not applied yet)"
                 for name in self.pending if name in self.app_names and name not in restarting]  # fmt: skip
        return {"ok": True, "output": "\n".join(plan) if plan else "nothing to change"}

    def apply(self, text: str, mode: str, reconnect_delay_s: int, expected_sha256: str) -> dict[str, Any]:
        """Bring Wowza to the desired state, then read it back. Applications whose publish security changed
        are restarted (Wowza applies security on start) unless ``mode`` is graceful and they have live
        streams: then the restart is left to the admin and said so."""
        if text != self.rendered():
            return {"ok": False, "error": "the candidate is not this server's rendering"}
        report = SyncReport()
        try:
            before = self._before()
            self._sync_apps(before, mode, report)
            sync_publishers(self.server, admin=self.admin, report=report, present=set(before.publishers))
            after = live_state(self.admin, self.app_names).render(self.server.name)
        except WowzaError as exc:
            report.problems.append(str(exc))
        else:
            if after != text:
                report.problems.append("read back from Wowza, the state differs from what was deployed")
        if not report.ok:  # what was done before the failure is in the text, for the revision's output
            return {"ok": False, "error": report.text(), "actions": report.actions,
                    "restart_pending": report.restart_pending}  # fmt: skip
        return {"ok": True, "output": report.text(), "actions": report.actions,
                "restart_pending": report.restart_pending}  # fmt: skip

    def _sync_apps(self, before: WowzaState, mode: str, report: SyncReport) -> None:
        """Create and set up the applications (from the state read ``before``); restart those whose security
        is saved but not applied yet (changed now, or left pending by an earlier deploy). Whatever stops
        half-way, ``report.restart_pending`` says which still need a restart, for the next deploy."""
        report.restart_pending = [name for name in self.pending if name in self.app_names]
        current = {app.name: app for app in before.apps}
        wanted = _managed(MANAGED_SECURITY)
        for name in self.app_names:
            have = current.get(name)
            if have is None:
                self.admin.create_application(name, f"Managed by Tally ({self.server.name}/{name})")
                report.actions.append(f"created application {name}")
                have = AppState(name, "Live", _managed(self.admin.security(name)))
            if have.app_type != "Live":
                self.admin.set_live(name)
                report.actions.append(f"set application {name} to Live")
            if have.security != wanted:
                if name not in report.restart_pending:
                    report.restart_pending.append(name)
                self.admin.put_security(name, dict(MANAGED_SECURITY))
                report.actions.append(f"set publish security of {name} (password required, digest, "
                                      "no duplicate names)")  # fmt: skip
            elif name not in report.restart_pending:
                continue
            live = self.admin.live_streams(name)
            if live and mode == Server.ReloadMode.GRACEFUL:
                report.actions.append(f"WARNING: restart of {name} left pending ({len(live)} live stream(s)): "
                                      "Wowza applies the publish security only when the application restarts; "
                                      "deploy in reconnect mode to restart it now")  # fmt: skip
                continue
            self.admin.restart(name)
            report.restart_pending.remove(name)
            report.actions.append(f"restarted application {name}" + (f" ({len(live)} live stream(s) reconnect)"
                                                                      if live else ""))  # fmt: skip

    def close(self) -> None:
        pass


def _pending_restarts(server: Server) -> list[str]:
    """Applications whose restart the last deploy left pending (graceful mode with streams live, or a sync
    that stopped between saving an application's security and restarting it)."""
    last = server.config_revisions.order_by("-number").values_list("result", flat=True).first()
    pending = last.get("restart_pending") if isinstance(last, dict) else None
    return [str(name) for name in pending] if isinstance(pending, list) else []


def _plan(desired: WowzaState, live: WowzaState) -> list[str]:
    lines = [f"create application {name}" for name in live.missing_apps]
    current = {app.name: app for app in live.apps}
    for app in desired.apps:
        have = current.get(app.name)
        if have is not None and have.app_type != app.app_type:
            lines.append(f"set application {app.name} to {app.app_type}")
        if have is None or have.security != app.security:
            lines.append(f"set publish security of {app.name} and restart it")
    lines += [f"create publisher {name}" for name in desired.publishers if name not in live.publishers]
    lines += [f"delete publisher {name}" for name in live.publishers if name not in desired.publishers]
    return lines


# --- publishers --------------------------------------------------------------------------------------------


def sync_publishers(
    server: Server, *, admin: WowzaAdmin | None = None, report: SyncReport | None = None,
    present: set[str] | None = None,
) -> SyncReport:  # fmt: skip
    """Make the ``tally-`` publisher entries match the active keys: create missing ones from the stored
    secret, delete the rest (revoked, expired, deleted keys) and disconnect their streams if live.
    ``present``: the ``tally-`` entries, when the caller has just read them. Raises ``WowzaError`` when
    the REST API cannot be used."""
    admin = admin or WowzaAdmin(server)
    report = report if report is not None else SyncReport()
    keys = {key.wowza_publisher: key for key in active_keys(server)}
    if present is None:
        present = {name for name in admin.publishers() if name.startswith(PUBLISHER_PREFIX)}
    for name, key in keys.items():
        if name in present:
            continue
        if not key.wowza_secret:
            report.problems.append(f"publisher {name} ({key.public_name}) cannot be created: its secret is not "
                                   "stored (issued before the server was Wowza?); rotate the key")  # fmt: skip
            continue
        admin.create_publisher(name, key.wowza_secret)
        report.actions.append(f"created publisher {name} ({key.application.name}/{key.public_name})")
    stale = sorted(present - set(keys), key=_publisher_order)
    gone = {key.wowza_publisher: key for key in _keys_by_publisher(server, stale)}
    for name in stale:
        admin.delete_publisher(name)
        report.actions.append(f"deleted publisher {name}")
        old = gone.get(name)
        if old is not None and admin.disconnect(old.application.name, old.public_name):
            report.actions.append(f"disconnected {old.application.name}/{old.public_name} ({old.state()})")
    return report


def _keys_by_publisher(server: Server, names: list[str]) -> list[StreamKey]:
    ids = [int(name.removeprefix(PUBLISHER_PREFIX)) for name in names if name.removeprefix(PUBLISHER_PREFIX).isdigit()]
    return list(StreamKey.objects.filter(pk__in=ids, application__server=server).select_related("application"))


def sync_all() -> dict[str, str]:
    """The periodic sync (beat): publishers of every enabled Wowza server; one failing server does not stop
    the others. Returns a one-line outcome per server name."""
    outcomes = {}
    for server in Server.objects.filter(kind=Server.Kind.WOWZA, enabled=True).exclude(wowza_api_url=""):
        try:
            report = sync_publishers(server)
            outcomes[server.name] = report.text()
        except WowzaError as exc:
            outcomes[server.name] = f"ERROR: {exc}"
            log.warning("Wowza publisher sync of %s failed: %s", server.name, exc)
    return outcomes


# --- one key at once (issue, rotate, revoke) ----------------------------------------------------------------


@dataclass(frozen=True)
class KeyOutcome:
    """What a key change did on Wowza right away; ``ok`` False: the periodic sync finishes it later."""

    ok: bool
    text: str


def key_issued(key: StreamKey, secret: str) -> KeyOutcome:
    """Create or update the key's publisher entry now; on failure the periodic sync creates it later."""
    try:
        WowzaAdmin(key.application.server).create_publisher(key.wowza_publisher, secret)
    except WowzaError as exc:
        return KeyOutcome(False, f"Wowza publisher {key.wowza_publisher} not written yet ({exc}); the next sync "
                                 "retries")  # fmt: skip
    return KeyOutcome(True, f"Wowza publisher {key.wowza_publisher} written")


def key_revoked(key: StreamKey) -> KeyOutcome:
    """Delete the key's publisher entry and disconnect its stream if live."""
    try:
        admin = WowzaAdmin(key.application.server)
        deleted = admin.delete_publisher(key.wowza_publisher)
        disconnected = admin.disconnect(key.application.name, key.public_name)
    except WowzaError as exc:
        return KeyOutcome(False, f"Wowza not updated ({exc}); the next sync deletes publisher "
                                 f"{key.wowza_publisher}")  # fmt: skip
    parts = [f"publisher {key.wowza_publisher} " + ("deleted" if deleted else "was already absent"),
             "stream disconnected" if disconnected else "stream was not live"]  # fmt: skip
    return KeyOutcome(True, "Wowza: " + ", ".join(parts))
