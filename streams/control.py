"""Dropping live publishers through the nginx-rtmp control module (``/control/drop/publisher``).

The module answers 200 with the number of sessions affected (0 when the stream is not live on the
worker that answered, e.g. after a reload).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from django.conf import settings

from console import http
from streams.models import Server


@dataclass(frozen=True)
class DropResult:
    """What a drop did: ``dropped`` (n > 0), ``not_live`` (n == 0), ``unreachable`` or ``no_control``."""

    outcome: str
    dropped: int = 0
    detail: str = ""


def drop_publisher(server: Server, app: str, name: str, client_id: str | None = None) -> DropResult:
    """Ask the server's control module to drop the publisher of ``app``/``name`` (or one client)."""
    if not server.control_url:
        return DropResult("no_control", detail=f"{server.name} has no control URL")
    params = {"app": app, "name": name}
    action = "publisher"
    if client_id:
        params["clientid"] = client_id
        action = "client"
    url = f"{server.control_url.rstrip('/')}/drop/{action}?{urlencode(params)}"
    try:
        body = http.get_bytes(url, timeout_s=settings.CONTROL_TIMEOUT_S, max_bytes=64)
    except http.HttpError as exc:
        return DropResult("unreachable", detail=str(exc)[:200])
    text = body.decode("ascii", "replace").strip()
    if not text.isdigit():
        return DropResult("unreachable", detail=f"unexpected control answer {text[:40]!r}")
    count = int(text)
    return DropResult("dropped" if count else "not_live", dropped=count)
