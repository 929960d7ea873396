"""The nginx-rtmp callback endpoint: a plain Django view, one indexed lookup and a fast answer."""

from __future__ import annotations

import logging

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from console.audit import client_ip
from streams import hooks, hotpath

log = logging.getLogger(__name__)


def _answer(decision: hooks.Decision) -> HttpResponse:
    response = HttpResponse(decision.reason or "", status=decision.status, content_type="text/plain")
    if decision.location:
        response["Location"] = decision.location
    return response


@csrf_exempt
def nginx_rtmp_callback(request: HttpRequest, server_id: int, event: str) -> HttpResponse:
    """``POST /hooks/nginx-rtmp/<server-id>/<event>?secret=…``: allow (2xx), rename (302) or refuse (403)."""
    if request.method != "POST":
        return HttpResponse("POST only\n", status=405, headers={"Allow": "POST"}, content_type="text/plain")
    if event not in hooks.EVENTS:
        return HttpResponse("unknown event\n", status=404, content_type="text/plain")
    source = client_ip(request)
    try:
        callback = hooks.Callback.from_form(event, request.POST)
    except Exception:  # an unparsable or oversized body
        log.warning("unreadable %s callback for server %s from %s", event, server_id, source)
        return HttpResponse("bad callback body\n", status=400, content_type="text/plain")
    try:
        server = hotpath.load_server(server_id)
        if server is None or not server.hook_secret_matches(request.GET.get("secret", "")):
            log.warning("refused %s callback: bad server %s or secret, from %s", event, server_id, source)
            return HttpResponse("forbidden\n", status=403, content_type="text/plain")
        if not server.hook_source_allowed(source):
            log.warning("refused %s callback for %s: source %s not allowed", event, server.name, source)
            return HttpResponse("forbidden\n", status=403, content_type="text/plain")
        return _answer(hooks.handle(server, callback))
    except DatabaseError as exc:
        decision = hooks.decide_without_database(callback, server_id, request.GET.get("fail_open") == "1")
        log.error("database unavailable for %s callback (server %s): %s -> %s", event, server_id, exc, decision.status)
        return _answer(decision)
