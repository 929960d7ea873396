"""Monitoring tasks. Thin: each calls one function of ``monitoring.polling``. Polls never retry: the next
poll is the retry."""

from celery import shared_task

from monitoring import polling


@shared_task(name="monitoring.poll_all", ignore_result=True)
def poll_all() -> None:
    polling.poll_all()
