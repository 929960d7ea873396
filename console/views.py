"""Console-level plain views: health, and JSON-aware error handlers."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import TooManyFieldsSent
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views import defaults
from django.views.decorators.cache import never_cache

from console.models import Heartbeat


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers and systemd: the database answers; background runners' last beat."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        beats = {b.name: round((timezone.now() - b.at).total_seconds(), 1) for b in Heartbeat.objects.all()}
    except Exception as exc:  # the point of this endpoint is to report, not to crash
        return JsonResponse({"status": "error", "database": str(exc)[:200]}, status=503)
    return JsonResponse({"status": "ok", "database": "ok", "background_last_beat_s": beats})


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith(("/api/", "/hooks/")) or "application/json" in request.headers.get("Accept", "")


def bad_request(request: HttpRequest, exception: Exception, **kwargs: Any) -> HttpResponse:
    if not isinstance(exception, TooManyFieldsSent):
        detail = "Bad request."
    else:  # a reason the sender can act on
        detail = f"The form sent too many fields (more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS})."
    if _wants_json(request):
        return JsonResponse({"detail": detail}, status=400)
    page = f"<!doctype html><title>Bad request</title><h1>Bad request</h1><p>{detail}</p>"
    return HttpResponse(page, status=400)


def permission_denied(request: HttpRequest, exception: Exception, **kwargs: Any) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"detail": "You do not have permission to perform this action."}, status=403)
    return defaults.permission_denied(request, exception, template_name="frontend/403.html")


def page_not_found(request: HttpRequest, exception: Exception, **kwargs: Any) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest, **kwargs: Any) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"detail": "Server error."}, status=500)
    return defaults.server_error(request)
