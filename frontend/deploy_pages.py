"""Config deploys in the console (admins): preview (dry run with diff and nginx -t), deploy, roll back, and
every revision with its diff and outcome. The work is ``streams.deploys``; this page only calls it."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from console.roles import Role
from frontend.views import RoleView
from streams import deploys
from streams.models import Server

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
        except deploys.AgentError as exc:
            messages.error(request, f"Nothing changed: {exc}")
            return redirect("server-deploys", pk=server.pk)
        level, text = OUTCOMES.get(revision.status, (messages.INFO, "Revision {n}: {status}."))
        messages.add_message(request, level, text.format(n=revision.number, status=revision.status))
        return redirect("server-deploys", pk=server.pk)
