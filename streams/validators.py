"""Field validators shared by the models, forms and API serializers of the inventory."""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

# Names that end up inside nginx configs and RTMP URLs: a safe set, no spaces or quotes.
name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
    "Use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit.",
)
# nginx-rtmp writes non-ASCII bytes of stream names as spaces in /stat, so public names stay ASCII.
public_name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
    "Use 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit.",
)
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,39}$")


def validate_host(value: str) -> None:
    """A DNS hostname or an IPv4/IPv6 address (no scheme, port or path)."""
    if not isinstance(value, str) or not value or len(value) > 253:
        raise ValidationError("Enter a hostname or IP address (at most 253 characters).")
    try:
        ipaddress.ip_address(value)
        return
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    if not all(_HOST_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise ValidationError(f"{value!r} is not a valid hostname or IP address.")


def validate_http_url(value: str) -> None:
    """An absolute http(s) URL with a valid host and port."""
    if not value:
        return
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValidationError(f"{value!r} is not a valid URL.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("Enter an absolute http:// or https:// URL.")
    validate_host(parts.hostname)
    if port == 0:
        raise ValidationError("The URL's port must be between 1 and 65535.")


def validate_rtmp_url(value: str) -> None:
    """An rtmp:// URL such as rtmp://origin.example:1935/live."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValidationError(f"{value!r} is not a valid URL.") from None
    if parts.scheme != "rtmp" or not parts.hostname or not parts.path.strip("/"):
        raise ValidationError("Enter an rtmp://host[:port]/app[/name] URL.")
    validate_host(parts.hostname)
    if port == 0:
        raise ValidationError("The URL's port must be between 1 and 65535.")
    if any(ch in value for ch in " ;{}'\"\\"):
        raise ValidationError("The URL must not contain spaces, quotes, braces, ';' or backslashes.")


def validate_tags(value: Any) -> None:
    """A list of at most 20 short tags."""
    if not isinstance(value, list):
        raise ValidationError("Tags must be a list of strings.")
    if len(value) > 20:
        raise ValidationError("At most 20 tags.")
    for tag in value:
        if not isinstance(tag, str) or not _TAG.match(tag):
            raise ValidationError(f"Invalid tag {tag!r}: use 1 to 40 letters, digits or _.:/-.")


def validate_cidrs(value: Any) -> None:
    """A list of at most 50 IPv4/IPv6 networks such as 203.0.113.0/24."""
    if not isinstance(value, list):
        raise ValidationError("Allowed publisher networks must be a list of CIDR strings.")
    if len(value) > 50:
        raise ValidationError("At most 50 networks.")
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except (TypeError, ValueError):
            raise ValidationError(f"{item!r} is not a valid IP network (e.g. 203.0.113.0/24).") from None
