"""User accounts and their role, managed by admins (audited)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from console import audit
from console.roles import GROUP_NAMES, role_of


def user_snapshot(user: Any) -> dict[str, Any]:
    return {"username": user.username, "email": user.email, "is_active": user.is_active, "role": role_of(user).label}


@transaction.atomic
def save_user(
    actor: audit.Actor, *, user: Any = None, username: str, email: str, role: str, is_active: bool, password: str
) -> Any:
    """Create or update a user with exactly one role group ("" = no access); validated and audited."""
    users = get_user_model()
    is_new = user is None
    if is_new and not password:
        raise ValidationError({"password": "A new user needs a password."})
    others = users.objects.filter(username=username)
    if user is not None:
        others = others.exclude(pk=user.pk)
    if others.exists():
        raise ValidationError({"username": "This username is taken."})
    if user is not None and user == actor.user and (not is_active or role != "admin") and not user.is_superuser:
        raise ValidationError({"role": "You cannot remove your own admin access."})
    before = None if is_new else user_snapshot(user)
    user = user or users(username=username)
    user.username, user.email, user.is_active = username, email, is_active
    if password:
        validate_password(password, user)
        user.set_password(password)
    user.save()
    user.groups.remove(*Group.objects.filter(name__in=GROUP_NAMES.values()))
    if role:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    user.__dict__.pop("_tally_role", None)
    after = user_snapshot(user)
    audit.record(actor, "create" if is_new else "update", user, before=before, after=after)
    return user
