"""Throwaway services for benchmarks: a PostgreSQL cluster and the console served the production way.

Each benchmark starts what it needs with these helpers and stops it by PID when done.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_CTL = ROOT / "tests" / "bin" / "pg_ctl"  # runs pg_ctl as the postgres user when we are root
sys.path.insert(0, str(ROOT))

from tests.production import web_command, web_environment, web_processes  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing answered on port {port}")


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL on a free port (fsync off); yields its DATABASE_URL."""
    workdir = Path(tempfile.mkdtemp(prefix="tally-bench-pg-"))
    datadir, port = workdir / "data", free_port()
    subprocess.run([str(PG_CTL), "initdb", "-D", str(datadir), "-o", "--username=postgres --auth=trust"],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
    subprocess.run([str(PG_CTL), "start", "-w", "-D", str(datadir), "-l", str(workdir / "log"), "-o", options],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-qc", "CREATE DATABASE tally"],
                       check=True)  # fmt: skip
        yield f"postgres://postgres@127.0.0.1:{port}/tally"
    finally:
        subprocess.run([str(PG_CTL), "stop", "-D", str(datadir), "-m", "fast"], stdout=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", str(workdir)])


@contextlib.contextmanager
def console_env(database_url: str, **extra: str) -> Iterator[dict[str, str]]:
    """The production configuration against ``database_url`` (no Redis: the hooks must not need it), with
    a throwaway TALLY_VAR_DIR that is removed afterwards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "REDIS_", "TALLY_"))}
    var_dir = tempfile.mkdtemp(prefix="tally-bench-var-")
    env.update(
        TALLY_PRODUCTION="1", SECRET_KEY=secrets.token_urlsafe(50), DATABASE_URL=database_url,
        ALLOWED_HOSTS="127.0.0.1", TALLY_SECURE_SSL_REDIRECT="0", LOG_LEVEL="WARNING", TALLY_VAR_DIR=var_dir, **extra,
    )  # fmt: skip
    try:
        yield env
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


WEB_PROCESSES = web_processes()


@contextlib.contextmanager
def console(env: dict[str, str], workers: int = WEB_PROCESSES) -> Iterator[int]:
    """The console's HTTP side as production serves it (uWSGI with the options and environment of
    deploy/systemd/tally-web.service, ``workers`` processes); yields its port."""
    port = free_port()
    command = web_command(port, workers)
    log_path = Path(env["TALLY_VAR_DIR"]) / "web.log"  # a file, not a pipe nobody reads while it fills
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env={**env, **web_environment()}, stdout=subprocess.DEVNULL,
                                   stderr=log)  # fmt: skip
    try:
        try:
            wait_for_port(port)
        except RuntimeError:
            raise RuntimeError(f"the console did not start:\n{log_path.read_text()[-2000:]}") from None
        for _ in range(50):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
                break
            time.sleep(0.1)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
