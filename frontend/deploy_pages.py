"""Config deploys in the console (admins): preview (dry run with diff and nginx -t), deploy, roll back, and
every revision with its diff and outcome; deploy jobs over several servers with live progress. The work is
``streams.deploys`` and ``streams.jobs``; these pages only call them."""

from __future__ import annotations

import re

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from console.roles import Role
from frontend.views import RoleView
from streams import deploys, jobs
from streams.models import DeployJob, Server

SERVER_ID = re.compile(r"[0-9]{1,18}")
OUTCOMES = {
    "applied": (messages.SUCCESS, "Revision {n} applied: nginx reloaded and a new worker answers /stat."),
    "rollback": (messages.SUCCESS, "Revision {n}: the previous config is back."),
    "invalid": (messages.ERROR, "Revision {n} refused by nginx -t; the live config is unchanged."),
    "rolled_back": (messages.ERROR, "Revision {n}: nginx was unhealthy after the reload; the old config is back."),
    "failed": (messages.ERROR, "Revision {n} failed on the host; see its output."),
}


class ServerDeployView(RoleView):
    """``/servers/<id>/deploys/``: the deploy history, and the preview, deploy and rollback actions."""

    read_role = Role.ADMIN  # configs carry the callback secret
    write_role = Role.ADMIN
    PER_PAGE = 20

    def get(self, request: HttpRequest, pk: int, preview: deploys.DeployResult | None = None) -> HttpResponse:
        server = get_object_or_404(Server, pk=pk)
        page = Paginator(server.config_revisions.select_related("author").order_by("-number"), self.PER_PAGE)
        context = {"server": server, "page": page.get_page(request.GET.get("page")), "preview": preview,
                   "modes": Server.ReloadMode.choices}  # fmt: skip
        return render(request, "frontend/server_deploys.html", context)

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        server = get_object_or_404(Server, pk=pk)
        action = request.POST.get("action", "")
        mode = request.POST.get("mode") or server.reload_mode
        if action not in ("preview", "deploy", "rollback") or mode not in Server.ReloadMode.values:
            messages.error(request, "Unknown action or reload mode.")
            return redirect("server-deploys", pk=server.pk)
        try:
            if action == "rollback":
                revision = deploys.rollback(server, self.actor())
            else:
                result = deploys.deploy(server, self.actor(), dry_run=action == "preview", mode=mode)
                if result.revision is None:
                    return self.get(request, pk, preview=result)
                revision = result.revision
        except ValueError as exc:
            messages.error(request, f"Cannot render this server's config: {exc}")
            return redirect("server-deploys", pk=server.pk)
        except deploys.RollbackUnavailable as exc:
            messages.error(request, str(exc))
            return redirect("server-deploys", pk=server.pk)
        except deploys.AgentError as exc:
            messages.error(request, f"Nothing changed: {exc}")
            return redirect("server-deploys", pk=server.pk)
        level, text = OUTCOMES.get(revision.status, (messages.INFO, "Revision {n}: {status}."))
        if server.kind == Server.Kind.WOWZA and revision.status == "applied":
            text = "Revision {n} applied through Wowza's REST API and read back."
        messages.add_message(request, level, text.format(n=revision.number, status=revision.status))
        return redirect("server-deploys", pk=server.pk)


class DeployJobsView(RoleView):
    """``/deploys/``: deploy several servers as one job (origins first, then proxies), and recent jobs."""

    read_role = Role.ADMIN
    write_role = Role.ADMIN

    def get(self, request: HttpRequest, errors: list[str] | None = None) -> HttpResponse:
        servers = [(server, jobs.deployable(server)) for server in jobs.deploy_order(list(Server.objects.all()))]
        recent = Paginator(DeployJob.objects.prefetch_related("steps__server"), 20).get_page(request.GET.get("page"))
        context = {"servers": servers, "page": recent, "modes": Server.ReloadMode.choices, "errors": errors or []}
        return render(request, "frontend/deploy_jobs.html", context, status=400 if errors else 200)

    def post(self, request: HttpRequest) -> HttpResponse:
        values = [value for value in request.POST.getlist("servers") if value != ""]
        if len(values) > jobs.MAX_SERVERS:
            return self.get(request, errors=[f"At most {jobs.MAX_SERVERS} servers per job."])
        if any(not SERVER_ID.fullmatch(value) for value in values):  # ASCII digits: str.isdigit() passes "²"
            return self.get(request, errors=["Server ids must be numbers."])
        try:
            job = jobs.create_job(self.actor(), jobs.servers_by_id([int(value) for value in values]),
                                  mode=request.POST.get("mode", ""),
                                  stop_on_failure=request.POST.get("stop_on_failure") == "on")  # fmt: skip
        except ValidationError as exc:
            return self.get(request, errors=exc.messages)
        messages.success(request, f"Deploy job {job.pk} queued.")
        return redirect("deploy-job", pk=job.pk)


class DeployJobView(RoleView):
    """``/deploys/<id>/``: one job's steps, refreshed in place as the worker reports; cancel."""

    read_role = Role.ADMIN
    write_role = Role.ADMIN

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        job = get_object_or_404(DeployJob.objects.prefetch_related("steps__server", "steps__revision"), pk=pk)
        steps = list(job.steps.all())
        finished = sum(1 for step in steps if step.status not in ("pending", "running"))
        return render(request, "frontend/deploy_job.html", {"job": job, "steps": steps, "finished": finished})

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        job = get_object_or_404(DeployJob, pk=pk)
        if request.POST.get("action") != "cancel":
            messages.error(request, "Unknown action.")
        elif jobs.cancel(job, self.actor()):
            messages.success(request, "Cancelled: the server being deployed now finishes, the rest are skipped.")
        else:
            messages.info(request, f"The job has already finished ({job.get_status_display().lower()}).")
        return redirect("deploy-job", pk=pk)
