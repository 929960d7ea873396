from typing import Any

from django.contrib import admin

from console.admin_mixins import AuditedAdmin
from streams.models import Application, Server, StreamKey


@admin.register(Server)
class ServerAdmin(AuditedAdmin):
    list_display = ["name", "kind", "role", "host", "rtmp_port", "enabled"]
    list_filter = ["kind", "role", "enabled"]
    search_fields = ["name", "host"]
    exclude = ["wowza_username", "wowza_password"]  # write-only: set on the console's server form or the API


@admin.register(Application)
class ApplicationAdmin(AuditedAdmin):
    list_display = ["name", "server", "kind"]
    list_filter = ["kind", "server"]


@admin.register(StreamKey)
class StreamKeyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read-only: keys are issued and revoked through the console pages or the API (audited)."""

    list_display = ["label", "public_name", "application", "prefix", "created", "expires_at", "revoked_at"]
    list_filter = ["application__server"]
    search_fields = ["label", "public_name", "prefix"]
    readonly_fields = [f.name for f in StreamKey._meta.fields]

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False
