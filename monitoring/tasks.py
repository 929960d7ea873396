"""Monitoring tasks. Thin: each calls one function. Polls never retry: the next poll is the retry."""

from celery import shared_task

from monitoring import history, polling


@shared_task(name="monitoring.poll_all", ignore_result=True)
def poll_all() -> None:
    polling.poll_due()


@shared_task(name="monitoring.roll_up", ignore_result=True)
def roll_up() -> None:
    history.roll_up()


@shared_task(name="monitoring.prune", ignore_result=True)
def prune() -> None:
    history.prune()
