"""Numbers with their units, the way operators read them: kbps/Mbps, hh:mm:ss."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def bitrate(kbps: float | int | None) -> str:
    """``850 kbps``, ``2.10 Mbps``; an em dash when unknown."""
    if kbps is None or isinstance(kbps, bool) or not isinstance(kbps, int | float):
        return "—"
    if kbps >= 1000:
        return f"{kbps / 1000:.2f} Mbps"
    return f"{kbps:.0f} kbps"


@register.filter
def duration(seconds: float | int | None) -> str:
    """``1:02:03`` (hours may exceed 24: ``30:00:00``); an em dash when unknown."""
    if seconds is None or isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        return "—"
    total = int(seconds)
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


@register.filter
def uptime(since: datetime | None) -> str:
    """The ``duration`` from ``since`` to now (the page's script then ticks it every second)."""
    if not isinstance(since, datetime):
        return "—"
    return duration((timezone.now() - since).total_seconds())
