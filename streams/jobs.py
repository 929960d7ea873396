"""Deploys to several servers as one job, run by a worker one server at a time.

Origins and edges (nginx-rtmp and Wowza) go first and proxies last, so a proxy never starts sending
publishers to an origin whose new config is not live yet; by default the first failure stops the job and
the remaining servers are skipped. Every step is a normal deploy (``streams.deploys.deploy``) and keeps its
``ConfigRevision``.

Who runs it: with a broker, the Celery task ``streams.run_deploy_job``; without one (the embedded default),
a thread of the web process. Either way ``run_job`` claims the job with a conditional UPDATE, so it runs
once, and the beat task ``streams.deploy_jobs`` (``sweep``) starts a queued job whose start message was lost
and fails a running job whose worker died (no heartbeat), so no job stays "running" forever.

Progress goes to the ``fleet`` group as ``deploy.job`` messages the moment a step starts or ends.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import close_old_connections, transaction
from django.utils import timezone

from console import audit, push
from streams import deploys
from streams.models import ConfigRevision, DeployJob, DeployStep, Server

log = logging.getLogger(__name__)

FLEET_GROUP = "fleet"
MAX_SERVERS = 500
QUEUED_GRACE = timedelta(seconds=10)  # a queued job older than this had its start message lost
# No heartbeat (set when each step starts and ends) for this long means the worker died. An nginx step
# takes at most the agent's timeout (30 s); a Wowza step makes a few REST calls per application and key.
STALE_AFTER = timedelta(minutes=10)


def deployable(server: Server) -> str:
    """Why ``server`` cannot be deployed to, or "" when it can."""
    if not server.enabled:
        return "disabled"
    if server.kind == Server.Kind.WOWZA:
        return "" if server.wowza_api_url else "no Wowza REST API URL"
    return "" if server.agent_url and server.agent_token else "no tally-agent URL and token"


def servers_by_id(ids: list[int]) -> list[Server]:
    """The servers of ``ids`` in that order (duplicates once), read in one query; ``ValidationError`` naming
    the ids that are no server's."""
    found = {server.pk: server for server in Server.objects.filter(pk__in=ids)}
    if missing := sorted(set(ids) - set(found)):
        raise ValidationError({"servers": f"No such server: {', '.join(map(str, missing))}."})
    return [found[pk] for pk in dict.fromkeys(ids)]


def deploy_order(servers: list[Server]) -> list[Server]:
    """Origins and edges first, then proxies; by name within each."""
    return sorted(servers, key=lambda s: (s.role == Server.Role.PROXY, s.name))


def create_job(
    actor: audit.Actor, servers: list[Server] | None = None, *, mode: str = "", stop_on_failure: bool = True
) -> DeployJob:
    """Queue a deploy of ``servers`` (every deployable server when None) and start it after the commit.

    Raises ``ValidationError`` naming the servers that cannot be deployed to, or when nothing is left.
    """
    if mode and mode not in Server.ReloadMode.values:
        raise ValidationError({"mode": f"mode must be one of {', '.join(Server.ReloadMode.values)}, or empty."})
    if servers is None:
        servers = [s for s in Server.objects.order_by("name") if not deployable(s)]
        if not servers:
            raise ValidationError({"servers": "No server can be deployed to (each needs an agent or a Wowza API)."})
    if not servers:
        raise ValidationError({"servers": "Choose at least one server."})
    if len(servers) > MAX_SERVERS:
        raise ValidationError({"servers": f"At most {MAX_SERVERS} servers per job."})
    refused = [f"{s.name}: {why}" for s in servers if (why := deployable(s))]
    if refused:
        raise ValidationError({"servers": [f"Cannot deploy to {reason}." for reason in refused]})
    ordered = deploy_order(list({s.pk: s for s in servers}.values()))
    with transaction.atomic():
        job = DeployJob.objects.create(mode=mode, stop_on_failure=stop_on_failure, author=actor.user,
                                       author_name=deploys.actor_name(actor))  # fmt: skip
        DeployStep.objects.bulk_create(
            DeployStep(job=job, server=server, position=n) for n, server in enumerate(ordered, start=1)
        )
        audit.record(actor, "deploy_job", job, after={"servers": [s.name for s in ordered], "mode": mode or "server",
                                                      "stop_on_failure": stop_on_failure})  # fmt: skip
        transaction.on_commit(lambda: start(job.pk))
    return job


def start(job_id: int) -> None:
    """Hand the job to a worker (Celery) or, without a broker, to a thread of this process."""
    if settings.BACKGROUND_IN_PROCESS:
        threading.Thread(target=_run_in_thread, args=(job_id,), name=f"deploy-job-{job_id}", daemon=True).start()
        return
    from streams.tasks import run_deploy_job

    try:
        run_deploy_job.delay(job_id)
    except Exception:  # the broker is down: the beat sweep starts the job when it is back
        log.warning("could not queue deploy job %s; the periodic sweep will start it", job_id, exc_info=True)


def _run_in_thread(job_id: int) -> None:
    try:
        run_job(job_id)
    finally:
        close_old_connections()


def cancel(job: DeployJob, actor: audit.Actor) -> bool:
    """Stop a queued or running job after its current step; False when it had finished already."""
    cancelled = DeployJob.objects.filter(pk=job.pk, status__in=[DeployJob.Status.QUEUED, DeployJob.Status.RUNNING])
    if not cancelled.update(status=DeployJob.Status.CANCELLED, message=f"cancelled by {deploys.actor_name(actor)}"):
        return False
    audit.record(actor, "cancel", job)
    job.refresh_from_db()
    if job.started is None:  # never started: close it here
        _skip_rest(job, "the job was cancelled")
        _finish(job, DeployJob.Status.CANCELLED)
    _push(job)
    return True


def run_job(job_id: int) -> DeployJob | None:
    """Run a queued job to its end; None when another runner has it (or it is not queued)."""
    now = timezone.now()
    claimed = DeployJob.objects.filter(pk=job_id, status=DeployJob.Status.QUEUED).update(
        status=DeployJob.Status.RUNNING, started=now, heartbeat=now
    )
    if not claimed:
        return None
    job = DeployJob.objects.select_related("author").get(pk=job_id)
    actor = audit.Actor(user=job.author)
    _push(job)
    failed = False
    for step in job.steps.select_related("server").order_by("position"):
        if job.status == DeployJob.Status.CANCELLED:  # read by each _push, so a cancel is seen between steps
            _skip_rest(job, "the job was cancelled")
            break
        if failed and job.stop_on_failure:
            _skip_rest(job, "an earlier server failed")
            break
        failed |= not _run_step(job, step, actor)
    final = DeployJob.Status.FAILED if failed else DeployJob.Status.SUCCEEDED
    _finish(job, final)
    job.refresh_from_db()
    _push(job)
    return job


def _run_step(job: DeployJob, step: DeployStep, actor: audit.Actor) -> bool:
    """Deploy one server; True when it applied (or had nothing to change)."""
    step.status, step.started = DeployStep.Status.RUNNING, timezone.now()
    step.save(update_fields=["status", "started"])
    DeployJob.objects.filter(pk=job.pk).update(heartbeat=step.started)
    _push(job, step)
    try:
        result = deploys.deploy(step.server, actor, mode=job.mode or None)
    except (deploys.AgentError, ValueError) as exc:
        step.status, step.message = DeployStep.Status.FAILED, str(exc)[:5000]
    except Exception as exc:  # never leave a step "running": record it and go on to the job's end
        log.exception("deploy job %s: step %s failed", job.pk, step.pk)
        step.status, step.message = DeployStep.Status.FAILED, f"internal error: {type(exc).__name__}: {exc}"[:5000]
    else:
        revision = step.revision = result.revision
        assert revision is not None  # not a dry run
        if revision.status == ConfigRevision.Status.APPLIED:
            step.status = DeployStep.Status.APPLIED if result.changed else DeployStep.Status.UNCHANGED
            step.message = revision.output[:5000]
        else:
            step.status = DeployStep.Status.FAILED
            step.message = f"{revision.get_status_display()}: {revision.output}"[:5000]
    step.finished = timezone.now()
    step.save(update_fields=["status", "message", "revision", "finished"])
    DeployJob.objects.filter(pk=job.pk).update(heartbeat=step.finished)
    _push(job, step)
    return step.status in (DeployStep.Status.APPLIED, DeployStep.Status.UNCHANGED)


def _skip_rest(job: DeployJob, why: str) -> None:
    job.steps.filter(status=DeployStep.Status.PENDING).update(status=DeployStep.Status.SKIPPED, message=why)


def _finish(job: DeployJob, status: str) -> None:
    """Close the job unless it was cancelled meanwhile (then it stays cancelled)."""
    now = timezone.now()
    DeployJob.objects.filter(pk=job.pk, status=DeployJob.Status.RUNNING).update(status=status, finished=now)
    DeployJob.objects.filter(pk=job.pk, finished__isnull=True).update(finished=now)


def sweep() -> None:
    """Beat: start queued jobs whose start was lost; fail running jobs whose worker stopped."""
    now = timezone.now()
    stale = DeployJob.objects.filter(status=DeployJob.Status.RUNNING, heartbeat__lt=now - STALE_AFTER)
    for job in stale:
        job.steps.filter(status=DeployStep.Status.RUNNING).update(
            status=DeployStep.Status.FAILED, message="interrupted: the worker running it stopped", finished=now
        )
        _skip_rest(job, "the worker running the job stopped")
        if DeployJob.objects.filter(pk=job.pk, status=DeployJob.Status.RUNNING).update(
            status=DeployJob.Status.FAILED, finished=now, message="the worker running the job stopped"
        ):
            job.refresh_from_db()
            _push(job)
    lost = DeployJob.objects.filter(status=DeployJob.Status.QUEUED, created__lt=now - QUEUED_GRACE).order_by("created")
    for job_id in lost.values_list("pk", flat=True):
        run_job(job_id)


def job_payload(job: DeployJob, step: DeployStep | None = None) -> dict[str, Any]:
    counts = {status: 0 for status in DeployStep.Status.values}
    for status in job.steps.values_list("status", flat=True):
        counts[status] += 1
    payload: dict[str, Any] = {"type": "deploy.job", "job": job.pk, "status": job.status,
                               "total": sum(counts.values()), "counts": counts}  # fmt: skip
    if step is not None:
        payload["step"] = {"position": step.position, "server": step.server_id, "status": step.status}
    return payload


def _push(job: DeployJob, step: DeployStep | None = None) -> None:
    job.refresh_from_db(fields=["status"])
    push.send_soon(FLEET_GROUP, job_payload(job, step))
