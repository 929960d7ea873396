"""Inventory workflows beyond plain create/update/delete (those go through ``console.audit``)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from console import audit
from streams.models import Server, new_hook_secret


@transaction.atomic
def rotate_hook_secret(server: Server, actor: audit.Actor) -> Server:
    """Give the server a new callback secret, keeping the old one valid for ``HOOK_SECRET_GRACE``.

    The new secret reaches nginx with the next config deploy; until then callbacks carry the old one.
    """
    locked = Server.objects.select_for_update().get(pk=server.pk)
    locked.hook_secret_previous = locked.hook_secret
    locked.hook_secret = new_hook_secret()
    locked.hook_secret_rotated_at = timezone.now()
    locked.save(update_fields=["hook_secret_previous", "hook_secret", "hook_secret_rotated_at", "updated"])
    audit.record(actor, "rotate_hook_secret", locked, message="previous secret valid for 24 h")
    return locked
