"""Console-level periodic tasks. Thin: each calls one domain function."""

from celery import shared_task

from console import background


@shared_task(name="console.heartbeat", ignore_result=True)
def heartbeat(runner: str = "celery") -> None:
    background.beat(runner)
