"""Server pages: the fleet's servers with their health and live figures, and one server's page."""

from __future__ import annotations

from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from frontend.views import RoleView
from streams.models import Server


class ServerListView(RoleView):
    def get(self, request: HttpRequest) -> HttpResponse:
        servers = Server.objects.visible_to(request.user).annotate(n_apps=Count("applications"))
        return render(request, "frontend/server_list.html", {"servers": servers})


class ServerDetailView(RoleView):
    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        server = get_object_or_404(Server.objects.visible_to(request.user), pk=pk)
        apps = server.applications.annotate(n_keys=Count("keys", filter=Q(keys__revoked_at__isnull=True))).order_by(
            "name"
        )
        return render(request, "frontend/server_detail.html", {"server": server, "apps": apps})
