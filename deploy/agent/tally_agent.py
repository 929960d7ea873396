#!/usr/bin/env python3
"""tally-agent: the small HTTP agent that runs beside nginx(-rtmp) on each host and deploys its config.

A single file, Python 3.11 standard library only: copy it to the host and run it with python3 (see
README.md next to it). The console talks to it with a per-server bearer token, optionally over TLS.

API (JSON in and out, ``Authorization: Bearer <token>`` on every request):

- ``GET  /v1/status``    nginx version, live config sha256, master pid and liveness, workers, /stat pid
- ``GET  /v1/config``    the live config text and its sha256
- ``GET  /v1/history``   the last deploys (newest last)
- ``POST /v1/validate``  {"config"}: ``nginx -t`` on a candidate written next to the live file
- ``POST /v1/apply``     {"config", "mode", "reconnect_delay_s", "expected_sha256"}: validate, replace
  atomically, reload, verify (master alive, /stat answers from a new worker), roll back on failure
- ``POST /v1/rollback``  {"mode", "reconnect_delay_s"} (all optional): put the previous revision back

One deploy (apply or rollback) runs at a time; a second one gets 409 at once.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import math
import os
import re
import shlex
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

AGENT_VERSION = "1.0"
MODES = ("graceful", "reconnect")
MAX_RECONNECT_DELAY_S = 600
HISTORY_LIMIT = 50
MIN_TOKEN_CHARS = 16
NGINX_COMMAND_TIMEOUT_S = 30
STAT_REQUEST_TIMEOUT_S = 1.0
STAT_READ_BYTES = 65536
VERIFY_POLL_S = 0.05
RETITLE_WAIT_S = 2.0  # an old worker renames itself "... is shutting down" when it gets the master's QUIT
HANDSHAKE_TIMEOUT_S = 10
MAX_CONNECTIONS = 64  # connections served at once; more are closed at once
REQUEST_TIMEOUT_S = 30
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024  # an oversized body is read and dropped up to this, so the 413 arrives
SHUTTING_DOWN = "is shutting down"
WORKER_TITLE = "nginx: worker process"
MASTER_TITLE = "nginx: master process"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
STAT_PID_RE = re.compile(rb"<pid>\s*(\d+)\s*</pid>")
PID_DIRECTIVE_RE = re.compile(r"^[ \t]*pid[ \t]+([^;#\s]+)[ \t]*;", re.MULTILINE)
VERSION_RE = re.compile(r"nginx version:\s*(\S+)")


def log(message: str) -> None:
    """One line on stderr (the journal under systemd)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    print(f"{stamp} tally-agent: {message}", file=sys.stderr, flush=True)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ApiError(Exception):
    """An answer other than success: HTTP status plus a JSON body with at least ``error``."""

    def __init__(self, status: int, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.body: dict[str, Any] = {"ok": False, "error": error, **extra}


# ---------------------------------------------------------------------------------------------------------
# Files


def read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes, *, like: str | None = None, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` all at once: a temp file in the same directory, fsync, os.replace.

    The new file takes the mode (and, as root, the owner) of ``like`` when that exists, else ``mode``.
    Readers see the old file or the new one, never a half-written one.
    """
    directory, name = os.path.split(path)
    fd, temp_path = tempfile.mkstemp(prefix=f".{name}.tally-new-", dir=directory or ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        reference = os.stat(like) if like and os.path.exists(like) else None
        os.chmod(temp_path, stat.S_IMODE(reference.st_mode) if reference else mode)
        if reference and os.geteuid() == 0:
            os.chown(temp_path, reference.st_uid, reference.st_gid)
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_path)
        raise
    fsync_directory(directory or ".")


# ---------------------------------------------------------------------------------------------------------
# Processes (Linux /proc)


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of ``pid``, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            line = handle.read()
    except OSError:
        return None
    fields = line.rsplit(")", 1)[-1].split()  # the command name may contain spaces and parentheses
    if len(fields) < 2:
        return None
    return fields[0], int(fields[1])


def proc_title(pid: int) -> str:
    """The process title nginx sets (``nginx: worker process is shutting down``); '' if unreadable."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return ""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace").strip()


def is_running(pid: int) -> bool:
    info = proc_stat(pid)
    return info is not None and info[0] not in ("Z", "X", "x")


def parent_of(pid: int) -> int | None:
    info = proc_stat(pid)
    return info[1] if info else None


def children_of(parent: int) -> list[tuple[int, str]]:
    """Running children of ``parent`` with their titles, by pid."""
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        pid = int(entry)
        info = proc_stat(pid)
        if info is None or info[1] != parent or info[0] in ("Z", "X", "x"):
            continue
        found.append((pid, proc_title(pid)))
    return sorted(found)


def is_old_worker(title: str) -> bool:
    return title.startswith(WORKER_TITLE) and SHUTTING_DOWN in title


# ---------------------------------------------------------------------------------------------------------
# nginx


@dataclass(frozen=True)
class Settings:
    nginx_bin: str
    nginx_prefix: str | None  # passed as -p (ends with /), None: nginx's compiled prefix
    nginx_conf: str  # the live file, absolute; the master must have been started with this -c
    nginx_error_log: str | None  # passed as -e when set
    pid_file: str | None  # None: from the live config's pid directive, else the compiled default
    stat_url: str  # "" for a TCP proxy (no rtmp_stat): a reload is verified by a new worker and verify_tcp
    state_dir: str
    verify_timeout_s: float
    max_body_bytes: int
    verify_tcp: tuple[str, int] | None = None  # must accept a TCP connection after a reload


def nginx_build_info(nginx_bin: str) -> dict[str, str]:
    """``--prefix``, ``--conf-path``, ``--pid-path`` … from ``nginx -V`` ({} if nginx cannot be run)."""
    try:
        result = subprocess.run(
            [nginx_bin, "-V"], capture_output=True, text=True, timeout=NGINX_COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    info: dict[str, str] = {}
    for line in (result.stderr + result.stdout).splitlines():
        if line.startswith("configure arguments:"):
            try:
                words = shlex.split(line.split(":", 1)[1])
            except ValueError:
                words = line.split()
            for word in words:
                if word.startswith("--") and "=" in word:
                    key, value = word[2:].split("=", 1)
                    info[key] = value
    return info


class Nginx:
    """Runs the nginx binary against the live config and looks at the master, its workers and /stat."""

    def __init__(self, settings: Settings, build_info: dict[str, str]) -> None:
        self.settings = settings
        self.build_info = build_info
        # A loopback /stat must never go through an http_proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _args(self, conf: str) -> list[str]:
        args = [self.settings.nginx_bin]
        if self.settings.nginx_prefix:
            args += ["-p", self.settings.nginx_prefix]
        args += ["-c", conf]
        if self.settings.nginx_error_log:
            args += ["-e", self.settings.nginx_error_log]
        return args

    def _run(self, args: list[str]) -> tuple[int, str]:
        try:
            result = subprocess.run(
                args, capture_output=True, text=True, errors="replace", timeout=NGINX_COMMAND_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            return -1, f"{args[0]} did not finish within {NGINX_COMMAND_TIMEOUT_S}s"
        except OSError as exc:
            return -1, f"could not run {args[0]}: {exc}"
        return result.returncode, (result.stderr + result.stdout).strip()

    def version(self) -> str | None:
        """``nginx/1.22.1`` (what ``nginx -v`` prints), None if the binary does not answer."""
        _, output = self._run([self.settings.nginx_bin, "-v"])
        match = VERSION_RE.search(output)
        return match.group(1) if match else None

    def test(self, data: bytes) -> tuple[bool, str]:
        """``nginx -t -q`` on ``data`` written as a candidate next to the live file (then removed).

        Next to the live file, relative ``include``s resolve as they will for the live config.
        """
        directory, name = os.path.split(self.settings.nginx_conf)
        fd, candidate = tempfile.mkstemp(prefix=f".{name}.tally-candidate-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            args = self._args(candidate)
            args[1:1] = ["-t", "-q"]
            code, output = self._run(args)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(candidate)
        return code == 0, output

    def reload(self) -> tuple[bool, str]:
        """``nginx -s reload``: nginx parses the live file for the pid, then sends SIGHUP to the master."""
        code, output = self._run([*self._args(self.settings.nginx_conf), "-s", "reload"])
        return code == 0, output

    def pid_file(self) -> str:
        """--pid-file, else the live config's ``pid`` directive, else nginx's compiled default."""
        if self.settings.pid_file:
            return self.settings.pid_file
        prefix = self.settings.nginx_prefix or self.build_info.get("prefix", "/usr/share/nginx")
        live = read_bytes(self.settings.nginx_conf)
        match = PID_DIRECTIVE_RE.search(live.decode("utf-8", "replace")) if live else None
        path = match.group(1).strip("\"'") if match else self.build_info.get("pid-path", "logs/nginx.pid")
        return path if os.path.isabs(path) else os.path.join(prefix, path)

    def master_pid(self) -> int | None:
        data = read_bytes(self.pid_file())
        text = data.decode("ascii", "replace").strip() if data else ""
        return int(text) if text.isdigit() else None

    @staticmethod
    def master_alive(pid: int | None) -> bool:
        return pid is not None and is_running(pid) and proc_title(pid).startswith(MASTER_TITLE)

    def stat_pid(self) -> tuple[int | None, str | None]:
        """The ``<pid>`` of the worker that answered /stat, or (None, why not)."""
        if not self.settings.stat_url:
            return None, "no stat URL (a TCP proxy)"
        try:
            with self._opener.open(self.settings.stat_url, timeout=STAT_REQUEST_TIMEOUT_S) as response:
                head = response.read(STAT_READ_BYTES)
        except urllib.error.HTTPError as exc:
            return None, f"{self.settings.stat_url} answered HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return None, f"{self.settings.stat_url} does not answer ({reason})"
        match = STAT_PID_RE.search(head)
        if not match:
            return None, f"{self.settings.stat_url} answered without a <pid>"
        return int(match.group(1)), None


# ---------------------------------------------------------------------------------------------------------
# Deploys


class Agent:
    def __init__(self, settings: Settings, nginx: Nginx) -> None:
        self.settings = settings
        self.nginx = nginx
        self.deploy_lock = threading.Lock()
        self._history_lock = threading.Lock()
        self.previous_path = os.path.join(settings.state_dir, "previous.conf")
        self.pending_path = os.path.join(settings.state_dir, "pending-previous.conf")
        self.history_path = os.path.join(settings.state_dir, "history.json")
        # Written through a symlink to its target, so a symlinked live file stays a symlink.
        self.live_target = os.path.realpath(settings.nginx_conf)

    # -- reads ------------------------------------------------------------------------------------------

    def live_bytes(self) -> bytes:
        data = read_bytes(self.live_target)
        if data is None:
            raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, f"the live config {self.settings.nginx_conf} is missing")
        return data

    def status(self) -> dict[str, Any]:
        master = self.nginx.master_pid()
        alive = self.nginx.master_alive(master)
        children = children_of(master) if alive and master is not None else []
        stat_pid, stat_error = self.nginx.stat_pid()
        live = read_bytes(self.live_target)
        previous = read_bytes(self.previous_path)
        return {
            "agent_version": AGENT_VERSION,
            "nginx_version": self.nginx.version(),
            "config_path": self.settings.nginx_conf,
            "config_sha256": sha256(live) if live is not None else None,
            "previous_sha256": sha256(previous) if previous is not None else None,
            "pid_file": self.nginx.pid_file(),
            "master_pid": master,
            "master_alive": alive,
            "worker_pids": [
                pid for pid, title in children if title.startswith(WORKER_TITLE) and not is_old_worker(title)
            ],
            "old_worker_pids": [pid for pid, title in children if is_old_worker(title)],
            "stat_url": self.settings.stat_url,
            "stat_pid": stat_pid,
            "stat_error": stat_error,
            "deploy_running": self.deploy_lock.locked(),
        }

    def config(self) -> dict[str, Any]:
        data = self.live_bytes()
        return {"config": data.decode("utf-8", "replace"), "sha256": sha256(data), "path": self.settings.nginx_conf}

    def history(self) -> dict[str, Any]:
        return {"history": self._read_history()}

    def validate(self, data: bytes) -> dict[str, Any]:
        ok, output = self.nginx.test(data)
        return {"ok": ok, "output": output, "sha256": sha256(data)}

    # -- deploys ----------------------------------------------------------------------------------------

    def apply(self, data: bytes, mode: str, delay_s: float, expected_sha256: str | None) -> tuple[int, dict[str, Any]]:
        with self._deploy_slot():
            live = self.live_bytes()
            if expected_sha256 is not None and sha256(live) != expected_sha256:
                raise ApiError(
                    HTTPStatus.CONFLICT,
                    "the live config changed since expected_sha256; fetch it again and redo the diff",
                    sha256=sha256(live),
                )
            return self._deploy("apply", data, live, mode, delay_s)

    def rollback(self, mode: str, delay_s: float) -> tuple[int, dict[str, Any]]:
        with self._deploy_slot():
            previous = read_bytes(self.previous_path)
            if previous is None:
                raise ApiError(HTTPStatus.CONFLICT, "there is no previous revision to roll back to")
            return self._deploy("rollback", previous, self.live_bytes(), mode, delay_s)

    def _deploy_slot(self) -> _DeploySlot:
        return _DeploySlot(self.deploy_lock)

    def _deploy(self, op: str, new: bytes, old: bytes, mode: str, delay_s: float) -> tuple[int, dict[str, Any]]:
        started = time.monotonic()
        base: dict[str, Any] = {"op": op, "mode": mode, "sha256": sha256(new), "previous_sha256": sha256(old)}

        def finish(status: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            body = {**base, **body, "duration_ms": round((time.monotonic() - started) * 1000)}
            self._record(body)
            return status, body

        master = self.nginx.master_pid()
        if master is None or not self.nginx.master_alive(master):
            raise ApiError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"nginx is not running (no live master for {self.nginx.pid_file()}); nothing was changed",
            )
        ok, output = self.nginx.test(new)
        if not ok:
            return finish(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                {
                    "ok": False,
                    "rolled_back": False,
                    "error": "nginx -t rejected the config; the live file is unchanged",
                    "output": output,
                },
            )

        before = [pid for pid, _ in children_of(master)]
        stat_pid_before, _ = self.nginx.stat_pid()
        # The old revision waits in pending-previous.conf and becomes previous.conf only once the new one
        # is verified, so a failed deploy never loses the real previous revision.
        write_atomic(self.pending_path, old, mode=0o600)
        write_atomic(self.live_target, new, like=self.live_target)
        try:
            new_worker, error = self._reload_and_verify(master, set(before))
        except Exception as exc:  # whatever happens, a written file that was not verified goes back
            log(f"internal error while reloading:\n{traceback.format_exc().rstrip()}")
            new_worker, error = None, f"internal error while reloading ({exc!r})"
        if error is not None:
            rollback_error = self._restore(master, old)
            self._discard(self.pending_path)
            body: dict[str, Any] = {
                "ok": False,
                "rolled_back": True,
                "rollback_ok": rollback_error is None,
                "error": f"{error}; the previous config was put back",
                "old_worker_pids": before,
            }
            if rollback_error is not None:
                body["rollback_error"] = rollback_error
            return finish(HTTPStatus.BAD_GATEWAY, body)

        if new != old:
            os.replace(self.pending_path, self.previous_path)
            fsync_directory(self.settings.state_dir)
        else:  # re-applying the live config keeps the real previous revision
            self._discard(self.pending_path)
        body = {
            "ok": True,
            "old_worker_pids": before,
            "stat_pid_before": stat_pid_before,
            "new_worker_pid": new_worker,
        }
        if mode == "reconnect":
            body["reconnect"] = self._reconnect(master, before, delay_s)
        return finish(HTTPStatus.OK, body)

    def _reload_and_verify(self, master: int, old_pids: set[int]) -> tuple[int | None, str | None]:
        """Reload, then wait until the master is alive and /stat answers from a worker not in ``old_pids``
        (for a TCP proxy without /stat: a new worker runs and ``--verify-tcp`` accepts a connection)."""
        ok, output = self.nginx.reload()
        if not ok:
            return None, f"nginx -s reload failed: {output}"
        timeout = self.settings.verify_timeout_s
        deadline = time.monotonic() + timeout
        while True:
            if not self.nginx.master_alive(master):
                return None, f"the nginx master (pid {master}) is gone after the reload"
            if not self.settings.stat_url:
                pid, error = self._new_worker_listening(master, old_pids)
                if pid is not None or time.monotonic() >= deadline:
                    return pid, None if pid is not None else f"no healthy new worker within {timeout:g}s: {error}"
                time.sleep(VERIFY_POLL_S)
                continue
            pid, stat_error = self.nginx.stat_pid()
            if pid is not None and pid not in old_pids and parent_of(pid) == master:
                return pid, None
            if time.monotonic() >= deadline:
                why = stat_error or f"it still answers from worker {pid}, which is not a new worker of {master}"
                return None, f"/stat did not answer from a new worker within {timeout:g}s: {why}"
            time.sleep(VERIFY_POLL_S)

    def _new_worker_listening(self, master: int, old_pids: set[int]) -> tuple[int | None, str]:
        """A new worker of ``master`` and, when configured, the proxy's listener accepting a connection."""
        fresh = [pid for pid, title in children_of(master)
                 if title.startswith(WORKER_TITLE) and not is_old_worker(title) and pid not in old_pids]  # fmt: skip
        if not fresh:
            return None, "no new worker process"
        if self.settings.verify_tcp is not None:
            try:
                socket.create_connection(self.settings.verify_tcp, timeout=STAT_REQUEST_TIMEOUT_S).close()
            except OSError as exc:
                return None, f"{self.settings.verify_tcp[0]}:{self.settings.verify_tcp[1]} refuses connections ({exc})"
        return fresh[0], ""

    def _restore(self, master: int, old: bytes) -> str | None:
        """Put ``old`` back and reload; None when nginx is healthy again, else what is still wrong."""
        try:
            write_atomic(self.live_target, old, like=self.live_target)
        except OSError as exc:
            return f"could not restore the previous config: {exc}"
        if not self.nginx.master_alive(master):
            return f"the nginx master (pid {master}) is gone; the previous file is back but was not reloaded"
        current = {pid for pid, _ in children_of(master)}
        _, error = self._reload_and_verify(master, current)
        return error

    def _reconnect(self, master: int, old_pids: list[int], delay_s: float) -> dict[str, Any]:
        """End the workers of the old config so their RTMP clients reconnect (to the new worker)."""
        if delay_s <= 0:
            ended = end_old_workers(master, old_pids)
            return {"delay_s": 0, "worker_pids": ended, "ended": True}
        pending = [pid for pid in old_pids if parent_of(pid) == master and is_running(pid)]

        def later() -> None:
            time.sleep(delay_s)
            ended = end_old_workers(master, pending)
            log(f"reconnect: sent SIGTERM to old workers {ended} after {delay_s:g}s")

        threading.Thread(target=later, name="tally-agent-reconnect", daemon=True).start()
        return {"delay_s": delay_s, "worker_pids": pending, "ended": False}

    # -- state ------------------------------------------------------------------------------------------

    @staticmethod
    def _discard(path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def _read_history(self) -> list[Any]:
        data = read_bytes(self.history_path)
        if not data:
            return []
        try:
            entries = json.loads(data)
        except ValueError:
            return []
        return entries if isinstance(entries, list) else []

    def _record(self, body: dict[str, Any]) -> None:
        keys = ("op", "ok", "mode", "sha256", "previous_sha256", "rolled_back", "error", "duration_ms")
        entry = {"at": datetime.now(UTC).isoformat(timespec="seconds"), **{k: body[k] for k in keys if k in body}}
        with self._history_lock:
            entries = [*self._read_history(), entry][-HISTORY_LIMIT:]
            try:
                write_atomic(self.history_path, json.dumps(entries, indent=1).encode(), mode=0o600)
            except OSError as exc:
                log(f"could not write {self.history_path}: {exc}")


class _DeploySlot:
    """``with`` the deploy lock without waiting: a second deploy gets 409 at once."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock

    def __enter__(self) -> None:
        if not self.lock.acquire(blocking=False):
            raise ApiError(HTTPStatus.CONFLICT, "a deploy is running")

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def end_old_workers(master: int, pids: list[int]) -> list[int]:
    """SIGTERM each of ``pids`` that is still a child of ``master`` titled "... is shutting down".

    Never the master, and never a pid that was reused by something else. A worker that has not renamed
    itself yet (it has just got the master's QUIT) is given up to RETITLE_WAIT_S to do so.
    """
    ended = []
    for pid in pids:
        if pid == master:
            continue
        deadline = time.monotonic() + RETITLE_WAIT_S
        while parent_of(pid) == master and is_running(pid) and not is_old_worker(proc_title(pid)):
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        if parent_of(pid) == master and is_running(pid) and is_old_worker(proc_title(pid)):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            ended.append(pid)
    return ended


# ---------------------------------------------------------------------------------------------------------
# HTTP


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"the body is not valid JSON: {exc}")
    if not isinstance(value, dict):
        raise ApiError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
    return value


def check_fields(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"unknown field(s): {', '.join(unknown)}", allowed=list(allowed))


def config_field(body: dict[str, Any]) -> bytes:
    if "config" not in body:
        raise ApiError(HTTPStatus.BAD_REQUEST, "'config' is required (the whole nginx.conf as a string)")
    config = body["config"]
    if not isinstance(config, str):
        raise ApiError(HTTPStatus.BAD_REQUEST, "'config' must be a string")
    if not config.strip():
        raise ApiError(HTTPStatus.BAD_REQUEST, "'config' is empty")
    if "\0" in config:
        raise ApiError(HTTPStatus.BAD_REQUEST, "'config' contains a NUL character")
    try:
        return config.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from \ud800 escapes
        raise ApiError(HTTPStatus.BAD_REQUEST, "'config' is not valid Unicode text")


def mode_fields(body: dict[str, Any]) -> tuple[str, float]:
    mode = body.get("mode", "graceful")
    if not isinstance(mode, str) or mode not in MODES:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"'mode' must be one of {', '.join(MODES)}")
    delay = body.get("reconnect_delay_s", 0)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not math.isfinite(delay):
        raise ApiError(HTTPStatus.BAD_REQUEST, "'reconnect_delay_s' must be a number of seconds")
    if not 0 <= delay <= MAX_RECONNECT_DELAY_S:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"'reconnect_delay_s' must be between 0 and {MAX_RECONNECT_DELAY_S}")
    return mode, float(delay)


def expected_sha_field(body: dict[str, Any]) -> str | None:
    value = body.get("expected_sha256")
    if value is None:
        return None
    if not isinstance(value, str) or not SHA256_RE.match(value.lower()):
        raise ApiError(HTTPStatus.BAD_REQUEST, "'expected_sha256' must be a sha256 in hex (64 digits)")
    return value.lower()


class AgentServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(
        self, address: tuple[str, int], agent: Agent, token: bytes, ssl_context: ssl.SSLContext | None
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.agent = agent
        self.token = token
        self.ssl_context = ssl_context
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log(f"{client_address[0]} refused: {MAX_CONNECTIONS} connections are open already")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Runs in the request's thread: the TLS handshake happens here, not in the accept loop."""
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log(f"{client_address[0]} TLS handshake failed: {exc}")
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            self.shutdown_request(tls)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        log(f"{client_address[0]} connection error: {exc!r}")


class Handler(BaseHTTPRequestHandler):
    server_version = f"tally-agent/{AGENT_VERSION}"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT_S

    ROUTES: dict[str, dict[str, str]] = {
        "/v1/status": {"GET": "status"},
        "/v1/config": {"GET": "config"},
        "/v1/history": {"GET": "history"},
        "/v1/validate": {"POST": "validate"},
        "/v1/apply": {"POST": "apply"},
        "/v1/rollback": {"POST": "rollback"},
    }

    @property
    def agent_server(self) -> AgentServer:
        return cast(AgentServer, self.server)

    # -- methods ----------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_OPTIONS(self) -> None:
        self._handle()

    # -- plumbing ---------------------------------------------------------------------------------------

    def version_string(self) -> str:
        return self.server_version

    def handle_expect_100(self) -> bool:
        """``Expect: 100-continue``: refuse a bad token or an oversized body before the client sends it."""
        headers: dict[str, str] = {}
        try:
            self._check_token()
            length = self._content_length() or 0
            limit = self.agent_server.agent.settings.max_body_bytes
            if length > limit:
                raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is larger than {limit} bytes")
        except ApiError as exc:
            if exc.status == HTTPStatus.UNAUTHORIZED:
                headers["WWW-Authenticate"] = 'Bearer realm="tally-agent"'
            self.close_connection = True
            self._send(exc.status, exc.body, headers)
            log(f"{self.client_address[0]} {self.command} {self.path[:100]} {exc.status} error={exc.body['error']!r}")
            return False
        return super().handle_expect_100()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request comes from _handle instead

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, huge headers, unknown method) as JSON too."""
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self.close_connection = True
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # unparsable request lines: answer with a status line anyway
        self._send(code, {"ok": False, "error": message or phrase})
        request_line = str(getattr(self, "requestline", ""))[:100]
        log(f"{self.client_address[0]} {request_line!r} {code} error={message or phrase!r}")

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = (json.dumps(body, indent=None) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(data)

    def _content_length(self) -> int | None:
        raw = self.headers.get("Content-Length")
        if raw is None:
            return None
        if not raw.strip().isdigit():
            raise ApiError(HTTPStatus.BAD_REQUEST, "invalid Content-Length")
        return int(raw)

    def _drain(self, length: int, limit: int) -> None:
        """Read and drop up to ``length`` body bytes (at most ``limit``), so the client gets our answer.

        Closing with unread data would reset the connection, and the client could lose the answer.
        """
        self._body_done = True
        remaining = min(length, limit)
        if length > limit:
            self.close_connection = True
        try:
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 65536))
                if not chunk:
                    self.close_connection = True
                    return
                remaining -= len(chunk)
        except OSError:
            self.close_connection = True

    def _read_body(self) -> bytes:
        self._body_done = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise ApiError(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length (chunked bodies are not accepted)")
        length = self._content_length() or 0
        limit = self.agent_server.agent.settings.max_body_bytes
        if length > limit:
            self._drain(length, DRAIN_LIMIT_BYTES)
            self.close_connection = True
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is larger than {limit} bytes")
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise ApiError(HTTPStatus.BAD_REQUEST, "the body ended early")
        return body

    def _check_token(self) -> None:
        header = self.headers.get("Authorization", "")
        scheme, _, presented = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise ApiError(HTTPStatus.UNAUTHORIZED, "a bearer token is required")
        if not hmac.compare_digest(presented.strip().encode("utf-8", "replace"), self.agent_server.token):
            raise ApiError(HTTPStatus.FORBIDDEN, "wrong token")

    def _handle(self) -> None:
        started = time.monotonic()
        path = urllib.parse.urlsplit(self.path).path
        status, body, headers = 500, {"ok": False, "error": "internal error"}, {}
        self._body_done = False
        try:
            try:
                if self.request_version == "HTTP/0.9":
                    self.request_version = "HTTP/1.0"
                    raise ApiError(HTTPStatus.BAD_REQUEST, "HTTP/0.9 requests are not supported")
                self._check_token()
                routes = self.ROUTES.get(path)
                if routes is None:
                    raise ApiError(HTTPStatus.NOT_FOUND, f"no such path: {path}")
                name = routes.get(self.command)
                if name is None:
                    headers["Allow"] = ", ".join(routes)
                    raise ApiError(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes {', '.join(routes)}")
                raw = self._read_body() if self.command == "POST" else b""
                status, body = getattr(self, f"_op_{name}")(parse_json_object(raw) if raw else {})
            finally:
                if not self._body_done:  # answered early (or a GET with a body): drop a small body
                    try:
                        length = self._content_length() or 0
                    except ApiError:
                        length, self.close_connection = 0, True
                    self._drain(length, self.agent_server.agent.settings.max_body_bytes)
        except ApiError as exc:
            status, body = exc.status, exc.body
            if status == HTTPStatus.UNAUTHORIZED:
                headers["WWW-Authenticate"] = 'Bearer realm="tally-agent"'
        except Exception:
            log(f"internal error on {self.command} {path}:\n{traceback.format_exc().rstrip()}")
            status, body = 500, {"ok": False, "error": "internal error (see the agent's log)"}
        try:
            self._send(status, body, headers)
        except OSError:
            self.close_connection = True
        words = [
            f"{key}={body[key]}" for key in ("ok", "mode", "sha256", "rolled_back", "new_worker_pid") if key in body
        ]
        if "error" in body:
            words.append(f"error={str(body['error'])[:200]!r}")
        words.append(f"{round((time.monotonic() - started) * 1000)}ms")
        log(f"{self.client_address[0]} {self.command} {path} {status} {' '.join(words)}")

    # -- operations -------------------------------------------------------------------------------------

    def _op_status(self, _body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, self.agent_server.agent.status()

    def _op_config(self, _body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, self.agent_server.agent.config()

    def _op_history(self, _body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, self.agent_server.agent.history()

    def _op_validate(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        check_fields(body, ("config",))
        return 200, self.agent_server.agent.validate(config_field(body))

    def _op_apply(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        check_fields(body, ("config", "mode", "reconnect_delay_s", "expected_sha256"))
        config = config_field(body)
        mode, delay = mode_fields(body)
        return self.agent_server.agent.apply(config, mode, delay, expected_sha_field(body))

    def _op_rollback(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        check_fields(body, ("mode", "reconnect_delay_s"))
        mode, delay = mode_fields(body)
        return self.agent_server.agent.rollback(mode, delay)


# ---------------------------------------------------------------------------------------------------------
# Command line


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 127.0.0.1:8710 or [::1]:8710), got {value!r}")
    return host, int(port)


def load_token(path: str | None) -> bytes:
    """From --token-file, else $TALLY_AGENT_TOKEN, else systemd's credential ``tally-agent-token``."""
    if path is None and not os.environ.get("TALLY_AGENT_TOKEN") and os.environ.get("CREDENTIALS_DIRECTORY"):
        candidate = os.path.join(os.environ["CREDENTIALS_DIRECTORY"], "tally-agent-token")
        path = candidate if os.path.exists(candidate) else None
    if path is not None:
        mode = os.stat(path).st_mode
        if mode & 0o077:
            log(f"warning: {path} is readable by others (mode {stat.S_IMODE(mode):o}); make it 0400 or 0600")
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    else:
        token = os.environ.get("TALLY_AGENT_TOKEN", "").strip()
    if len(token) < MIN_TOKEN_CHARS or any(ch.isspace() for ch in token):
        raise SystemExit(
            f"tally-agent: a token of at least {MIN_TOKEN_CHARS} characters without spaces is required "
            "(--token-file, TALLY_AGENT_TOKEN or the systemd credential tally-agent-token)"
        )
    return token.encode("utf-8")


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """Every option also reads its default from ``TALLY_AGENT_<OPTION>`` (systemd's EnvironmentFile)."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="tally_agent.py",
        description="Tally's config-deploy agent for one nginx(-rtmp) host. Every option can also be set "
        "in the environment as TALLY_AGENT_<OPTION>, e.g. TALLY_AGENT_STAT_URL.",
    )

    def option(name: str, text: str, default: str | None = None, parse: Callable[[str], Any] = str) -> None:
        variable = "TALLY_AGENT_" + name.upper().replace("-", "_")
        value = env.get(variable) or default  # a string default goes through ``parse`` like an argument
        parser.add_argument(f"--{name}", default=value, type=parse, help=f"{text} (${variable})")

    option("listen", "HOST:PORT to serve, e.g. 10.0.0.5:8710 or [::1]:8710", "127.0.0.1:8710", parse_listen)
    option("token-file", "file with this server's token (else $TALLY_AGENT_TOKEN or the systemd credential)")
    option("nginx-bin", "the nginx binary", "/usr/sbin/nginx")
    option("nginx-prefix", "nginx -p PREFIX (default: nginx's compiled prefix)")
    option("nginx-conf", "the live config the master was started with (default: nginx's --conf-path)")
    option("nginx-error-log", "passed to nginx as -e, e.g. logs/error.log")
    option("pid-file", "the master's pid file (default: the live config's pid directive)")
    option("stat-url", "the rtmp_stat URL of this nginx; 'none' for a TCP proxy", "http://127.0.0.1:8080/stat")
    option(
        "verify-tcp", "HOST:PORT that must accept a connection after a reload (a proxy's listener)", None, parse_listen
    )
    option("state-dir", "where previous.conf and history.json are kept", "/var/lib/tally-agent")
    option("tls-cert", "serve HTTPS with this certificate (chain) file")
    option("tls-key", "the certificate's private key")
    option("verify-timeout-s", "how long a reload has to show a new worker on /stat", "5", float)
    option("max-body-bytes", "the largest request body", str(2 * 1024 * 1024), int)
    return parser


def make_settings(args: argparse.Namespace, build_info: dict[str, str]) -> Settings:
    prefix: str | None = args.nginx_prefix
    if prefix is not None:
        prefix = os.path.abspath(prefix).rstrip("/") + "/"
    conf: str = args.nginx_conf or build_info.get("conf-path", "/etc/nginx/nginx.conf")
    if not os.path.isabs(conf):
        conf = os.path.join(prefix or build_info.get("prefix", "/usr/share/nginx"), conf)
    if args.verify_timeout_s <= 0 or args.max_body_bytes <= 0:
        raise SystemExit("tally-agent: --verify-timeout-s and --max-body-bytes must be positive")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("tally-agent: --tls-cert and --tls-key go together")
    return Settings(
        nginx_bin=args.nginx_bin,
        nginx_prefix=prefix,
        nginx_conf=os.path.normpath(conf),
        nginx_error_log=args.nginx_error_log,
        pid_file=args.pid_file,
        stat_url="" if args.stat_url in ("", "none") else args.stat_url,
        state_dir=os.path.abspath(args.state_dir),
        verify_timeout_s=args.verify_timeout_s,
        max_body_bytes=args.max_body_bytes,
        verify_tcp=args.verify_tcp,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    build_info = nginx_build_info(args.nginx_bin)
    settings = make_settings(args, build_info)
    token = load_token(args.token_file)
    os.makedirs(settings.state_dir, mode=0o700, exist_ok=True)
    ssl_context = None
    if args.tls_cert:
        ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
        ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
    nginx = Nginx(settings, build_info)
    agent = Agent(settings, nginx)
    server = AgentServer(args.listen, agent, token, ssl_context)

    def stop(signum: int, _frame: Any) -> None:
        log(f"got signal {signum}, stopping")
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = str(server.server_address[0]), int(server.server_address[1])
    scheme = "https" if ssl_context else "http"
    log(
        f"listening on {scheme}://{host}:{port}, nginx {nginx.version()}, live config {settings.nginx_conf}, "
        f"stat {settings.stat_url}, state {settings.state_dir}"
    )
    if not os.path.exists(settings.nginx_conf):
        log(f"warning: the live config {settings.nginx_conf} does not exist (yet)")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        # A deploy in flight finishes (verify or roll back) before the process goes.
        if agent.deploy_lock.acquire(timeout=2 * settings.verify_timeout_s + 2 * NGINX_COMMAND_TIMEOUT_S):
            agent.deploy_lock.release()
        server.server_close()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
