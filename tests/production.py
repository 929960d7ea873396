"""How production serves the console's HTTP side: the uWSGI command of deploy/systemd/tally-web.service,
for tests and benchmarks that must run the console exactly that way."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEB_UNIT = ROOT / "deploy" / "systemd" / "tally-web.service"


def _unit_command() -> list[str]:
    exec_start = next(line for line in WEB_UNIT.read_text().splitlines() if line.startswith("ExecStart="))
    return shlex.split(exec_start.removeprefix("ExecStart="))


def web_processes() -> int:
    """How many processes production runs (the unit's --processes)."""
    command = _unit_command()
    return int(command[command.index("--processes") + 1])


def web_command(port: int, processes: int | None = None) -> list[str]:
    """The unit's command with this environment's uwsgi, listening on 127.0.0.1:``port``, optionally with
    another number of processes."""
    command = _unit_command()
    command[0] = str(Path(sys.executable).with_name("uwsgi"))
    command[command.index("--http-socket") + 1] = f"127.0.0.1:{port}"
    if processes is not None:
        command[command.index("--processes") + 1] = str(processes)
    return command
