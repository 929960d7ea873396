"""Periodic work without a broker: the embedded default runs the Celery beat schedule in-process.

With a broker, Celery beat sends the same tasks to a worker. Either way the same task functions run on
the same schedule (``CELERY_BEAT_SCHEDULE``), so later issues add a poller in one place only.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

log = logging.getLogger(__name__)
_started = threading.Event()


def beat(runner: str) -> None:
    """Record that ``runner`` is alive and doing periodic work."""
    from console.models import Heartbeat

    Heartbeat.objects.update_or_create(name=runner, defaults={"at": timezone.now()})


def _run_schedule(stop: threading.Event) -> None:
    from console.celery import app

    app.loader.import_default_modules()
    schedule = settings.CELERY_BEAT_SCHEDULE
    due = {name: 0.0 for name in schedule}
    while not stop.is_set():
        now = time.monotonic()
        for name, entry in schedule.items():
            if now < due[name]:
                continue
            due[name] = now + float(entry["schedule"])  # type: ignore[arg-type]
            task = app.tasks[entry["task"]]
            try:
                if entry["task"] == "console.heartbeat":
                    task("in-process")
                else:
                    task(*entry.get("args", ()), **entry.get("kwargs", {}))
            except Exception:  # one failing job must not stop the others or the timer
                log.exception("in-process periodic task %s failed", name)
            finally:
                close_old_connections()
        stop.wait(0.5)


def start_in_process() -> threading.Event | None:
    """Start the timer thread once per process (when no broker is configured)."""
    if not settings.BACKGROUND_IN_PROCESS or _started.is_set():
        return None
    _started.set()
    stop = threading.Event()
    threading.Thread(target=_run_schedule, args=(stop,), name="tally-background", daemon=True).start()
    log.info("periodic work runs in-process (no broker configured)")
    return stop
