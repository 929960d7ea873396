from typing import Any

from django.contrib import admin

from console.models import ApiToken, AuditEntry, Heartbeat


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["created", "actor_name", "token_name", "ip", "action", "object_type", "object_repr"]
    list_filter = ["action", "object_type"]
    search_fields = ["object_repr", "actor_name", "message"]

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read-only here: tokens are issued and revoked on the API tokens page or the API (audited)."""

    list_display = ["name", "owner", "prefix", "role_ceiling", "created", "expires_at", "last_used_at", "revoked_at"]
    readonly_fields = [f.name for f in ApiToken._meta.fields]

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False


admin.site.register(Heartbeat)
admin.site.site_header = "Tally administration"
