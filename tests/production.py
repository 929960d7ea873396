"""How production serves the console's HTTP side: the uWSGI command and environment of
deploy/systemd/tally-web.service, for tests and benchmarks that must run the console exactly that way."""

from __future__ import annotations

import shlex
import sys
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
