"""The nginx-rtmp callback endpoint: one indexed lookup and a fast answer.

Two doors lead to the same ``callback_response``:
- ``nginx_rtmp_callback``, a plain Django view behind ``/hooks/`` in the URLconf (ASGI, the test client);
- ``CallbackApplication``, the WSGI application uWSGI serves (``console.wsgi``). nginx-rtmp blocks
  every publish on its callback, and on a small server Django's full request cycle (eight middleware,
  the URL resolver) cost about as much CPU as the decision itself. This door builds the same
  ``WSGIRequest``, sends the same request signals, applies the only middleware that act on a callback
  response, and hands every other path to Django.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.exception import response_for_exception
from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import request_started
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.utils.log import log_response
from django.views.decorators.csrf import csrf_exempt

from console.audit import client_ip
from streams import hooks, hotpath

log = logging.getLogger(__name__)

# The URLconf's "hooks/nginx-rtmp/<int:server_id>/<str:event>" (see streams/urls.py).
# ASCII only, so the raw PATH_INFO is already the decoded path Django would match; other event names
# (all unknown) are Django's to answer.
CALLBACK_PATH = re.compile(r"/hooks/nginx-rtmp/(?P<server_id>[0-9]+)/(?P<event>[a-z_]+)")

MALFORMED = b"malformed request\n"

WSGIApplication = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _answer(decision: hooks.Decision) -> HttpResponse:
    response = HttpResponse(decision.reason or "", status=decision.status, content_type="text/plain")
    if decision.location:
        response["Location"] = decision.location
    return response


def _form(request: HttpRequest) -> Mapping[str, str]:
    """The callback's form fields, as ``request.POST`` gives them (last value of a repeated field, the
    same size and field-count limits), without building a QueryDict for nginx-rtmp's dozen short fields."""
    if request.content_type != "application/x-www-form-urlencoded":
        return request.POST  # multipart (parsed or refused by Django), or nothing
    text = request.body.decode("utf-8", "replace")  # RequestDataTooBig beyond DATA_UPLOAD_MAX_MEMORY_SIZE
    limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    return dict(parse_qsl(text, keep_blank_values=True, errors="replace", max_num_fields=limit))


def callback_response(request: HttpRequest, server_id: int, event: str) -> HttpResponse:
    """``POST /hooks/nginx-rtmp/<server-id>/<event>?secret=…``: allow (2xx), rename (302) or refuse (403)."""
    if request.method != "POST":
        return HttpResponse("POST only\n", status=405, headers={"Allow": "POST"}, content_type="text/plain")
    if event not in hooks.EVENTS:
        return HttpResponse("unknown event\n", status=404, content_type="text/plain")
    source = client_ip(request)
    try:
        callback = hooks.Callback.from_form(event, _form(request))
    except Exception:  # an unparsable or oversized body
        log.warning("unreadable %s callback for server %s from %s", event, server_id, source)
        return HttpResponse("bad callback body\n", status=400, content_type="text/plain")
    try:
        digest = hooks.publish_digest(callback)
        context = hotpath.load_publish_context(server_id, digest, callback.client_id) if digest else None
        server = context.server if context else hotpath.load_server(server_id)
        if server is None or not server.hook_secret_matches(request.GET.get("secret", "")):
            log.warning("refused %s callback: bad server %s or secret, from %s", event, server_id, source)
            return HttpResponse("forbidden\n", status=403, content_type="text/plain")
        if not server.hook_source_allowed(source):
            log.warning("refused %s callback for %s: source %s not allowed", event, server.name, source)
            return HttpResponse("forbidden\n", status=403, content_type="text/plain")
        return _answer(hooks.handle(server, callback, context=context))
    except DatabaseError as exc:
        decision = hooks.decide_without_database(callback, server_id, request.GET.get("fail_open") == "1")
        log.error("database unavailable for %s callback (server %s): %s -> %s", event, server_id, exc, decision.status)
        return _answer(decision)


nginx_rtmp_callback = csrf_exempt(callback_response)


def _unused_get_response(request: HttpRequest) -> HttpResponse:
    raise AssertionError("only the middleware's request and response hooks are called")


class CallbackApplication:
    """WSGI: nginx-rtmp callbacks answered directly, every other request passed to ``django_application``.

    A callback goes through what Django's ``WSGIHandler`` does for it, minus what has no effect on it:
    request_started/request_finished (so the pooled database connection goes back, as after any
    request), the ALLOWED_HOSTS check, ``SecurityMiddleware`` and ``XFrameOptionsMiddleware`` (the
    headers every response gets), Content-Length (``CommonMiddleware``), Django's own answer to an
    exception (``response_for_exception``: 400 for a suspicious request, 500 with a log line for a bug)
    and its "Forbidden: /hooks/…" log line for every 4xx/5xx. Skipped: WhiteNoise (static paths only),
    and the session, CSRF, auth and messages middleware (the view is CSRF-exempt and never reads a
    session, a user or a message). A request Django would refuse for its Host is passed on to Django,
    which answers and logs it as before. tests/streams/test_callback_wsgi_route.py holds both doors to
    the same answers, headers included.
    """

    def __init__(self, django_application: WSGIApplication) -> None:
        self.django_application = django_application
        self.security = SecurityMiddleware(_unused_get_response)
        self.xframe = XFrameOptionsMiddleware(_unused_get_response)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if "REQUEST_METHOD" not in environ:  # uWSGI passes on a request line it could not parse
            start_response("400 Bad Request", [("Content-Type", "text/plain"), ("Content-Length", str(len(MALFORMED)))])
            return [MALFORMED]
        match = CALLBACK_PATH.fullmatch(environ.get("PATH_INFO", ""))
        if match is None:
            return self.django_application(environ, start_response)
        request = WSGIRequest(environ)
        try:
            request.get_host()
        except DisallowedHost:
            return self.django_application(environ, start_response)
        request_started.send(sender=self.__class__, environ=environ)
        try:
            response = self.security.process_request(request) or callback_response(
                request, int(match["server_id"]), match["event"]
            )
        except Exception as exc:
            response = response_for_exception(request, exc)
        # Django's order: the innermost middleware's response hook first.
        response = self.xframe.process_response(request, response)
        if not response.has_header("Content-Length"):
            response.headers["Content-Length"] = str(len(response.content))
        response = self.security.process_response(request, response)
        request.close()  # uploaded files, if a client sent any
        if response.status_code >= 400:
            log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
        start_response(f"{response.status_code} {response.reason_phrase}", list(response.items()))
        return response  # the WSGI server calls response.close() once it is sent: that sends request_finished
