"""Streams tasks. Thin: each calls one function."""

from celery import shared_task

from streams import jobs, wowza


@shared_task(name="streams.run_deploy_job", ignore_result=True)
def run_deploy_job(job_id: int) -> None:
    jobs.run_job(job_id)


@shared_task(name="streams.deploy_jobs", ignore_result=True)
def deploy_jobs() -> None:
    jobs.sweep()


@shared_task(name="streams.sync_wowza", ignore_result=True)
def sync_wowza() -> None:
    wowza.sync_all()
