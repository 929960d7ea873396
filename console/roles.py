"""Roles: viewer < operator < admin, held as Django groups and enforced the same way everywhere.

Pages, the API and websockets all ask ``effective_role(user, token)`` and compare against the role an
action needs. Superusers are admins. A user with no group (the "outsider") has no role and is refused.
"""

from __future__ import annotations

import enum
from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request


class Role(enum.IntEnum):
    """Ordered so that a higher role includes every lower one."""

    NONE = 0
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> Role:
        return cls[label.upper()]


GROUP_NAMES = {Role.VIEWER: "viewer", Role.OPERATOR: "operator", Role.ADMIN: "admin"}
ROLE_CHOICES = [(role.label, role.label) for role in (Role.VIEWER, Role.OPERATOR, Role.ADMIN)]


def role_of(user: Any) -> Role:
    """The highest role the user's groups grant; NONE for anonymous, inactive or group-less users."""
    if user is None or not user.is_authenticated or not user.is_active:
        return Role.NONE
    if getattr(user, "is_superuser", False):
        return Role.ADMIN
    cached = getattr(user, "_tally_role", None)
    if cached is not None:
        return Role(cached)
    names = set(user.groups.values_list("name", flat=True))
    role = max((r for r, name in GROUP_NAMES.items() if name in names), default=Role.NONE)
    user._tally_role = int(role)
    return role


def effective_role(user: Any, token: Any = None) -> Role:
    """The user's role, capped by the API token's ceiling when the request came with a token."""
    role = role_of(user)
    if token is not None and hasattr(token, "role_ceiling"):
        role = min(role, Role.from_label(token.role_ceiling))
    return role


def request_role(request: Any) -> Role:
    """Role of an HTTP request (Django or DRF), remembering it on the request."""
    cached = getattr(request, "_tally_role", None)
    if cached is None:
        token = getattr(request, "auth", None)
        cached = effective_role(request.user, token)
        request._tally_role = cached
    return Role(cached)


# What each action of the REST API needs. Viewsets name their actions; unknown actions need ADMIN.
DEFAULT_ACTION_ROLES: dict[str, Role] = {
    "list": Role.VIEWER,
    "retrieve": Role.VIEWER,
    "create": Role.ADMIN,
    "update": Role.ADMIN,
    "partial_update": Role.ADMIN,
    "destroy": Role.ADMIN,
}


class RolePermission(BasePermission):
    """DRF permission: the view's ``action_roles`` (or the defaults) say what each action needs."""

    message = "Your role does not allow this action."

    def has_permission(self, request: Request, view: Any) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        action = getattr(view, "action", None) or (request.method or "").lower()
        needed = {**DEFAULT_ACTION_ROLES, **getattr(view, "action_roles", {})}.get(action, Role.ADMIN)
        return request_role(request) >= needed
