"""Periodic work: a real Celery worker (Redis broker) runs the beat schedule's tasks, and the embedded
default runs the same tasks on its in-process timer."""

import time

import pytest
from celery.contrib.testing.worker import start_worker

from console import background
from console.celery import app
from console.models import Heartbeat


def wait_for(predicate, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.django_db(transaction=True)
def test_real_worker_runs_heartbeat_through_redis(real_redis):
    assert app.conf.broker_url == real_redis
    # No result backend is configured (results are ignored), so no ping check: the heartbeat is the proof.
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        app.send_task("console.heartbeat", args=["celery-test"])
        assert wait_for(lambda: Heartbeat.objects.filter(name="celery-test").exists())


@pytest.mark.django_db(transaction=True)
def test_in_process_timer_runs_the_beat_schedule(settings):
    settings.BACKGROUND_IN_PROCESS = True
    background._started.clear()
    stop = background.start_in_process()
    try:
        assert stop is not None
        assert background.start_in_process() is None  # once per process
        assert wait_for(lambda: Heartbeat.objects.filter(name="in-process").exists())
    finally:
        stop.set()
        background._started.clear()


@pytest.mark.django_db
def test_healthz_reports_database_and_beats(client):
    background.beat("celery")
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and "celery" in body["background_last_beat_s"]
