"""Django admin writes go through the same audited save/delete as pages and the API."""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from console import audit


class AuditedAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    def save_model(self, request: Any, obj: Any, form: Any, change: bool) -> None:
        audit.save_audited(obj, audit.Actor.from_request(request))

    def delete_model(self, request: Any, obj: Any) -> None:
        audit.delete_audited(obj, audit.Actor.from_request(request))

    def delete_queryset(self, request: Any, queryset: Any) -> None:
        for obj in queryset:
            audit.delete_audited(obj, audit.Actor.from_request(request))
