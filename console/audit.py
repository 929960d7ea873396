"""The audit log: who changed what, when, from which address, with before/after.

Domain functions call ``record`` inside the same transaction as the change, so an entry exists exactly
when the change does. Secret and credential fields never reach an entry: ``snapshot`` masks them.
"""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import models

from console.models import ApiToken, AuditEntry

MASKED = "********"


@dataclass(frozen=True)
class Actor:
    """Who is acting: a user, possibly through an API token, from an address."""

    user: Any = None
    token: ApiToken | None = None
    ip: str | None = None

    @classmethod
    def from_request(cls, request: Any) -> Actor:
        token = getattr(request, "auth", None)
        user = request.user if getattr(request, "user", None) and request.user.is_authenticated else None
        return cls(user=user, token=token if isinstance(token, ApiToken) else None, ip=client_ip(request))

    @classmethod
    def system(cls) -> Actor:
        return cls()


def client_ip(request: Any) -> str | None:
    """The client's address: REMOTE_ADDR, or the first X-Forwarded-For hop when configured."""
    meta = getattr(request, "META", {})
    candidate = meta.get("REMOTE_ADDR", "")
    if settings.USE_X_FORWARDED_FOR and meta.get("HTTP_X_FORWARDED_FOR"):
        candidate = meta["HTTP_X_FORWARDED_FOR"].split(",")[0].strip()
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    return value


def snapshot(instance: models.Model) -> dict[str, Any]:
    """The instance's concrete fields as JSON, with secret fields masked.

    A model lists the fields to mask in ``AUDIT_MASKED_FIELDS`` and those to leave out entirely in
    ``AUDIT_EXCLUDED_FIELDS``.
    """
    masked = set(getattr(instance, "AUDIT_MASKED_FIELDS", ()))
    excluded = set(getattr(instance, "AUDIT_EXCLUDED_FIELDS", ()))
    data: dict[str, Any] = {}
    for field in instance._meta.concrete_fields:
        if field.name in excluded:
            continue
        value = getattr(instance, field.attname)
        if field.name in masked:
            value = MASKED if value else ""
        data[field.name] = _jsonable(value)
    return data


def changed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Only the keys whose value differs, as {"field": [old, new]}."""
    return {key: [before.get(key), after.get(key)] for key in after if before.get(key) != after.get(key)}


def record(
    actor: Actor,
    action: str,
    instance: models.Model | None = None,
    *,
    object_type: str = "",
    object_id: str = "",
    object_repr: str = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    message: str = "",
) -> AuditEntry:
    """Write one audit entry. Call it inside the transaction that makes the change."""
    if instance is not None:
        object_type = object_type or instance._meta.label_lower
        object_id = object_id or str(instance.pk)
        object_repr = object_repr or str(instance)[:200]
    user = actor.user
    return AuditEntry.objects.create(
        actor=user,
        actor_name=getattr(user, "username", "") if user else ("system" if actor.token is None else ""),
        token=actor.token,
        token_name=str(actor.token)[:120] if actor.token else "",
        ip=actor.ip,
        action=action,
        object_type=object_type,
        object_id=object_id,
        object_repr=object_repr[:200],
        before=before,
        after=after,
        message=message[:500],
    )


def save_audited(instance: models.Model, actor: Actor) -> models.Model:
    """Validate (``full_clean``), save and audit a create or update, in one transaction.

    The "before" side is read from the database under a row lock, not from the edited instance.
    """
    from django.db import transaction

    with transaction.atomic():
        is_new = instance._state.adding
        before = None
        if not is_new:
            current = type(instance)._default_manager.select_for_update().get(pk=instance.pk)
            before = snapshot(current)
        instance.full_clean()
        instance.save()
        after = snapshot(instance)
        if is_new:
            record(actor, "create", instance, after=after)
        elif before is not None and before != after:
            record(actor, "update", instance, before=before, after=after, message=", ".join(changed(before, after)))
    return instance


def delete_audited(instance: models.Model, actor: Actor) -> None:
    """Delete and audit in one transaction (cascaded children are listed in the message)."""
    from django.contrib.admin.utils import NestedObjects
    from django.db import router, transaction

    with transaction.atomic():
        collector = NestedObjects(using=router.db_for_write(type(instance)))
        collector.collect([instance])
        cascaded = sum(len(objs) for model, objs in collector.data.items() if model is not type(instance))
        before = snapshot(instance)
        pk = str(instance.pk)
        record(
            actor,
            "delete",
            instance,
            object_id=pk,
            before=before,
            message=f"also deleted {cascaded} dependent object(s)" if cascaded else "",
        )
        instance.delete()
