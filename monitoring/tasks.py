"""Monitoring tasks. Thin: each calls one function. Polls never retry: the next poll is the retry."""

from celery import shared_task

from monitoring import alerting, history, polling


@shared_task(name="monitoring.poll_all", ignore_result=True)
def poll_all() -> None:
    polling.poll_due()


@shared_task(name="monitoring.roll_up", ignore_result=True)
def roll_up() -> None:
    history.roll_up()


@shared_task(name="monitoring.prune", ignore_result=True)
def prune() -> None:
    history.prune()


@shared_task(name="monitoring.evaluate_alerts", ignore_result=True)
def evaluate_alerts() -> None:
    alerting.evaluate()


@shared_task(name="monitoring.send_notices", ignore_result=True)
def send_notices() -> None:
    alerting.send_due()
