"""``{% sparkline values label %}``: a tiny inline SVG line of recent values, drawn on the server."""

from __future__ import annotations

from collections.abc import Sequence

from django import template
from django.utils.html import format_html

register = template.Library()

WIDTH, HEIGHT = 120, 32


@register.simple_tag
def sparkline(values: Sequence[float] | None, label: str = "") -> str:
    """An SVG polyline scaled to the values' own range (zero at the bottom); empty with fewer than 2."""
    values = [v for v in values or () if isinstance(v, int | float)]
    if len(values) < 2:
        return ""
    top = max(max(values), 1e-9)
    step = WIDTH / (len(values) - 1)
    points = " ".join(f"{i * step:.1f},{HEIGHT - 1 - (v / top) * (HEIGHT - 2):.1f}" for i, v in enumerate(values))
    return format_html(
        '<svg class="spark" viewBox="0 0 {} {}" preserveAspectRatio="none" role="img" aria-label="{}" '
        'data-points="{}"><polyline points="{}"/></svg>',
        WIDTH, HEIGHT, f"{label}, last {len(values)} polls", len(values), points,
    )  # fmt: skip
