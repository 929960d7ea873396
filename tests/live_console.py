"""The console as a real process on the test PostgreSQL and Redis: daphne (HTTP + websockets) with the
in-process timer (polls every second), or a Celery worker with its beat. For tests that need the whole
running product: browsers, nginx-rtmp callbacks, alert delivery."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

from django.conf import settings

from tests.nginx import free_port, terminate

ROOT = Path(__file__).resolve().parents[1]


def console_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a console process on the test database and Redis (tests.settings: the scalable
    configuration plus the fast password hasher the test users were made with)."""
    db = settings.DATABASES["default"]
    database_url = (
        f"postgresql://{quote(db['USER'])}:{quote(db['PASSWORD'] or '')}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "REDIS_", "TALLY_"))}
    # The same SECRET_KEY as this process: both read the credentials the other encrypted (webhook secrets).
    env.update(DJANGO_SETTINGS_MODULE="tests.settings", DATABASE_URL=database_url, REDIS_URL=settings.REDIS_URL,
               SECRET_KEY=settings.SECRET_KEY,
               TALLY_BACKGROUND_IN_PROCESS="1", TALLY_POLL_INTERVAL_S="1", TALLY_VAR_DIR=str(tmp_path / "var"))  # fmt: skip
    env.update(extra)
    return env


@contextlib.contextmanager
def run_console(tmp_path: Path, **env: str) -> Iterator[SimpleNamespace]:
    """daphne on a free port; ``base`` is its URL. Extra ``env`` variables override the defaults."""
    port = free_port()
    log_path = tmp_path / f"console-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "console.asgi:application"],
            cwd=ROOT, env=console_env(tmp_path, **env), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{base}/login/", timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            terminate(process)
            raise RuntimeError(f"the console did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    try:
        yield SimpleNamespace(base=base, process=process, log_path=log_path)
    finally:
        terminate(process)


@contextlib.contextmanager
def run_worker(tmp_path: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """A Celery worker with its embedded beat (``celery -A console worker -B``), in its own process group
    so that ``kill_worker`` can end it and its beat at once, as a crash would."""
    log_path = tmp_path / f"worker-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "console", "worker", "-B", "--pool", "solo", "--loglevel", "INFO",
             "--schedule", str(tmp_path / f"beat-{time.monotonic_ns()}")],
            cwd=ROOT, env=console_env(tmp_path, TALLY_BACKGROUND_IN_PROCESS="0", **env), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        kill_worker(process)


def kill_worker(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker's process group (only what ``run_worker`` started): no clean shutdown."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
