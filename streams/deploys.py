"""Config deploys: render a server's config, diff it against what is live, validate it on the host, apply
it with a reload, and keep every revision. For nginx the host side is tally-agent
(deploy/agent/tally_agent.py) and ``AgentClient`` is the one seam to it; for Wowza, ``streams.wowza.
WowzaTarget`` offers the same calls through Wowza's REST API (``target_for`` picks one).

A deploy never writes a config nginx refuses (the agent runs ``nginx -t`` on the candidate first) and
never leaves nginx unhealthy (the agent verifies the reload and rolls back by itself). Each outcome is a
``ConfigRevision``; ``config_deployed`` tells other apps (monitoring mutes drop alerts for the reload
window and raises an alert when a reload had to be rolled back) without streams importing them.
"""

from __future__ import annotations

import difflib
import hashlib
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.dispatch import Signal

from console import audit
from streams import wowza
from streams.models import ConfigRevision, Server
from streams.rendering import render_server_config

AGENT_TIMEOUT_S = 30.0  # an apply waits for nginx -t, the reload and its verification
MAX_DIFF_LINES = 5000

# Sent after every applied, rolled back or failed deploy: ``server``, ``revision``.
config_deployed = Signal()


class AgentError(Exception):
    """The agent (or Wowza's REST API) could not be reached or answered something unusable."""


class RollbackUnavailable(Exception):
    """This server has nothing to roll back to (Wowza: it follows the database)."""


class Target(Protocol):
    """Where a deploy goes: tally-agent for nginx, the REST API for Wowza. Each call answers a dict with
    ``ok`` and ``output`` (and ``error``/``rolled_back`` on failure) or raises."""

    def config(self) -> tuple[str, str]: ...
    def validate(self, text: str) -> dict[str, Any]: ...
    def apply(self, text: str, mode: str, reconnect_delay_s: int, expected_sha256: str) -> dict[str, Any]: ...
    def close(self) -> None: ...


def target_for(server: Server) -> tuple[Target, str]:
    """The deploy target of ``server`` and the candidate text it takes; raises ``AgentError``."""
    if server.kind == Server.Kind.WOWZA:
        try:
            target = wowza.WowzaTarget(server)
        except wowza.WowzaError as exc:
            raise AgentError(str(exc)) from None
        return target, target.rendered()
    return AgentClient(server), render_server_config(server, callback_base_url=settings.CALLBACK_BASE_URL)


@contextmanager
def _wowza_errors() -> Iterator[None]:
    try:
        yield
    except wowza.WowzaError as exc:
        raise AgentError(str(exc)) from None


class AgentClient:
    """tally-agent's HTTP API for one server (bearer token, optional pinned CA for a self-signed TLS cert)."""

    def __init__(self, server: Server, timeout_s: float = AGENT_TIMEOUT_S) -> None:
        if not server.agent_url or not server.agent_token:
            raise AgentError(f"{server.name} has no agent URL and token: deploys go through tally-agent.")
        self.base = server.agent_url.rstrip("/")
        verify: ssl.SSLContext | bool = True
        if server.agent_ca.strip():
            verify = ssl.create_default_context(cadata=server.agent_ca)
        self.client = httpx.Client(
            timeout=timeout_s, verify=verify, headers={"Authorization": f"Bearer {server.agent_token}"}
        )

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self.client.request(method, f"{self.base}{path}", json=body)
        except httpx.HTTPError as exc:
            raise AgentError(f"agent unreachable: {exc}") from exc
        try:
            data = response.json()
        except ValueError:
            raise AgentError(f"agent answered HTTP {response.status_code} without JSON") from None
        if not isinstance(data, dict):
            raise AgentError("agent answered something other than a JSON object")
        if response.status_code in (401, 403):
            raise AgentError(f"agent refused the token (HTTP {response.status_code})")
        if "ok" in data and response.status_code in (200, 422, 502):
            return data  # an outcome: applied, refused by nginx -t (422), rolled back (502)
        if response.status_code >= 400:
            raise AgentError(f"agent: {data.get('error') or f'HTTP {response.status_code}'}")
        return data

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/v1/status")

    def config(self) -> tuple[str, str]:
        data = self._call("GET", "/v1/config")
        return str(data.get("config", "")), str(data.get("sha256", ""))

    def validate(self, text: str) -> dict[str, Any]:
        return self._call("POST", "/v1/validate", {"config": text})

    def apply(self, text: str, mode: str, reconnect_delay_s: int, expected_sha256: str) -> dict[str, Any]:
        body = {"config": text, "mode": mode, "reconnect_delay_s": reconnect_delay_s,
                "expected_sha256": expected_sha256}  # fmt: skip
        return self._call("POST", "/v1/apply", body)

    def rollback(self) -> dict[str, Any]:
        return self._call("POST", "/v1/rollback")

    def close(self) -> None:
        self.client.close()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def unified_diff(before: str, after: str, server: Server) -> str:
    lines = list(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                      fromfile=f"{server.name} (live)", tofile=f"{server.name} (new)"))  # fmt: skip
    if len(lines) > MAX_DIFF_LINES:
        lines = [*lines[:MAX_DIFF_LINES], f"... {len(lines) - MAX_DIFF_LINES} more lines\n"]
    return "".join(lines)


@dataclass
class DeployResult:
    """What a deploy (or a dry run) found and did. ``revision`` is None for a dry run."""

    server: Server
    text: str
    sha256: str
    live_sha256: str
    diff: str
    valid: bool
    validation_output: str
    changed: bool
    revision: ConfigRevision | None = None
    agent: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.revision.status if self.revision else ("valid" if self.valid else "invalid")


@_wowza_errors()
def deploy(server: Server, actor: audit.Actor, *, dry_run: bool = False, mode: str | None = None) -> DeployResult:
    """Render ``server``'s config, diff it against the live one, validate it on the host; unless
    ``dry_run``, apply it (graceful or reconnect reload) and store the revision.

    Raises ``ValueError`` when the config cannot be rendered and ``AgentError`` when the agent cannot be
    used (nothing is stored then: nothing happened on the host).
    """
    mode = mode or server.reload_mode
    if mode not in Server.ReloadMode.values:
        raise ValueError(f"mode must be one of {', '.join(Server.ReloadMode.values)}.")
    agent, text = target_for(server)
    try:
        live_text, live_sha = agent.config()
        validation = agent.validate(text)
        result = DeployResult(
            server=server, text=text, sha256=sha256(text), live_sha256=live_sha,
            diff=unified_diff(live_text, text, server), valid=bool(validation.get("ok")),
            validation_output=str(validation.get("output", ""))[:20000], changed=sha256(text) != live_sha,
        )  # fmt: skip
        if dry_run:
            return result
        if not result.valid:
            result.revision = _store(server, actor, result, ConfigRevision.Status.INVALID, mode, {}, None)
            return result
        started = time.monotonic()
        answer = agent.apply(text, mode, server.reconnect_delay_s, live_sha)
        duration_ms = (time.monotonic() - started) * 1000
    finally:
        agent.close()
    if answer.get("ok"):
        status = ConfigRevision.Status.APPLIED
    elif answer.get("rolled_back"):
        status = ConfigRevision.Status.ROLLED_BACK
    elif answer.get("output") and not answer.get("ok"):
        status = ConfigRevision.Status.INVALID  # refused by nginx -t on the host after all
    else:
        status = ConfigRevision.Status.FAILED
    result.agent = answer
    result.revision = _store(server, actor, result, status, mode, answer, duration_ms)
    config_deployed.send(sender=ConfigRevision, server=server, revision=result.revision)
    return result


def rollback(server: Server, actor: audit.Actor) -> ConfigRevision:
    """Put back the config that was live before the last apply (the agent keeps it), as a new revision.
    Raises ``RollbackUnavailable`` for a Wowza server and ``AgentError`` when the agent cannot be used."""
    if server.kind == Server.Kind.WOWZA:
        raise RollbackUnavailable(wowza.ROLLBACK_REFUSED)
    agent = AgentClient(server)
    try:
        live_text, live_sha = agent.config()
        started = time.monotonic()
        answer = agent.rollback()
        duration_ms = (time.monotonic() - started) * 1000
        text, _ = agent.config() if answer.get("ok") else (live_text, live_sha)
    finally:
        agent.close()
    result = DeployResult(server=server, text=text, sha256=sha256(text), live_sha256=live_sha,
                          diff=unified_diff(live_text, text, server), valid=bool(answer.get("ok")),
                          validation_output=str(answer.get("output", "")), changed=True, agent=answer)  # fmt: skip
    status = ConfigRevision.Status.ROLLBACK if answer.get("ok") else ConfigRevision.Status.FAILED
    revision = _store(server, actor, result, status, server.reload_mode, answer, duration_ms)
    config_deployed.send(sender=ConfigRevision, server=server, revision=revision)
    return revision


def _store(
    server: Server, actor: audit.Actor, result: DeployResult, status: str, mode: str, answer: dict[str, Any],
    duration_ms: float | None,
) -> ConfigRevision:  # fmt: skip
    output = result.validation_output
    if status in (ConfigRevision.Status.FAILED, ConfigRevision.Status.ROLLED_BACK):
        output = str(answer.get("error") or answer.get("output") or output)[:20000]
    elif answer.get("actions") is not None:  # a Wowza sync: what it did, rather than the plan
        output = str(answer.get("output", ""))[:20000]
    with transaction.atomic():
        Server.objects.select_for_update().filter(pk=server.pk).first()  # numbers are taken one at a time
        number = (ConfigRevision.objects.filter(server=server).aggregate(n=Max("number"))["n"] or 0) + 1
        revision = ConfigRevision.objects.create(
            server=server, number=number, text=result.text, sha256=result.sha256,
            previous_sha256=result.live_sha256, diff=result.diff, status=status, mode=mode, output=output,
            result={k: v for k, v in answer.items() if k != "config"}, author=actor.user,
            author_name=actor_name(actor), duration_ms=round(duration_ms, 1) if duration_ms is not None else None,
        )  # fmt: skip
        audit.record(actor, "deploy", revision, after={"status": status, "sha256": result.sha256, "number": number,
                                                       "mode": mode})  # fmt: skip
    return revision


def actor_name(actor: audit.Actor) -> str:
    if actor.user is not None:
        return str(getattr(actor.user, "username", ""))[:150]
    return str(actor.token)[:150] if actor.token else "system"
