"""How production serves the console's HTTP side: the uWSGI command and environment of
deploy/systemd/tally-web.service, for tests and benchmarks that must run the console exactly that way."""

from __future__ import annotations

import contextlib
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEB_UNIT = ROOT / "deploy" / "systemd" / "tally-web.service"


def _unit_values(directive: str) -> list[str]:
    prefix = f"{directive}="
    return [line.removeprefix(prefix) for line in WEB_UNIT.read_text().splitlines() if line.startswith(prefix)]


def _unit_command() -> list[str]:
    (exec_start,) = _unit_values("ExecStart")
    return shlex.split(exec_start)


def web_environment() -> dict[str, str]:
    """The variables the unit sets with ``Environment=`` (on top of /etc/tally/tally.env)."""
    assignments = [word for value in _unit_values("Environment") for word in shlex.split(value)]
    return dict(assignment.split("=", 1) for assignment in assignments)


def web_processes() -> int:
    """How many processes production runs (the unit's --processes)."""
    command = _unit_command()
    return int(command[command.index("--processes") + 1])


def web_command(port: int, processes: int | None = None) -> list[str]:
    """The unit's command with this environment's uwsgi, listening on 127.0.0.1:``port``, optionally with
    another number of processes. Run it with ``web_environment()`` in its environment."""
    command = _unit_command()
    command[0] = str(Path(sys.executable).with_name("uwsgi"))
    command[command.index("--http-socket") + 1] = f"127.0.0.1:{port}"
    if processes is not None:
        command[command.index("--processes") + 1] = str(processes)
    return command


@contextlib.contextmanager
def run_web(env: dict[str, str], processes: int = 1) -> Iterator[int]:
    """The console's HTTP side as the unit runs it, with ``env`` plus the unit's environment, on a free
    port; yields the port once it accepts connections (its output is discarded)."""
    from tests.nginx import free_port, terminate  # pytest fixtures: not for the benchmarks' imports

    port = free_port()
    server = subprocess.Popen(web_command(port, processes), cwd=ROOT, env={**env, **web_environment()},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the console did not start") from None
                time.sleep(0.2)
        yield port
    finally:
        terminate(server)
