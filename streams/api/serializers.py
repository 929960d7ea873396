"""Inventory serializers: explicit fields, unknown input rejected, credentials write-only."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from rest_framework import serializers

from console.api import StrictSerializerMixin
from streams import jobs, validators
from streams.app_settings import clean_app_settings
from streams.keys import IssuedKey
from streams.models import (
    Application,
    ConfigRevision,
    DeployJob,
    DeployStep,
    ProxyMember,
    PublishReject,
    PublishSession,
    Server,
    StreamKey,
)


class ServerSerializer(StrictSerializerMixin, serializers.ModelSerializer):  # type: ignore[type-arg]
    wowza_username = serializers.CharField(write_only=True, required=False, allow_blank=True, max_length=200)
    wowza_password = serializers.CharField(
        write_only=True, required=False, allow_blank=True, max_length=500, style={"input_type": "password"}
    )
    has_wowza_credentials = serializers.SerializerMethodField()
    agent_token = serializers.CharField(
        write_only=True, required=False, allow_blank=True, max_length=500, style={"input_type": "password"}
    )
    has_agent_token = serializers.SerializerMethodField()
    tags = serializers.ListField(child=serializers.CharField(max_length=40), required=False, max_length=20)

    class Meta:
        model = Server
        fields = [
            "id", "name", "kind", "role", "host", "rtmp_port", "enabled", "poll_interval_s", "tags", "notes",
            "stat_url", "control_url", "wowza_api_url", "wowza_username", "wowza_password", "wowza_auth",
            "has_wowza_credentials", "hook_allowed_cidrs", "agent_url", "agent_token", "has_agent_token", "agent_ca",
            "nginx_prefix_paths", "reload_mode", "reconnect_delay_s", "proxy_method", "created", "updated",
        ]  # fmt: skip
        read_only_fields = ["id", "created", "updated"]

    def get_has_wowza_credentials(self, obj: Server) -> bool:
        return bool(obj.wowza_username or obj.wowza_password)

    def get_has_agent_token(self, obj: Server) -> bool:
        return bool(obj.agent_token)

    def validate_tags(self, value: Any) -> Any:
        try:
            validators.validate_tags(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None
        return value


class ApplicationSerializer(StrictSerializerMixin, serializers.ModelSerializer):  # type: ignore[type-arg]
    server = serializers.PrimaryKeyRelatedField(queryset=Server.objects.all())
    server_name = serializers.CharField(source="server.name", read_only=True)
    settings = serializers.JSONField(required=False)

    class Meta:
        model = Application
        fields = ["id", "server", "server_name", "name", "kind", "settings", "created", "updated"]
        read_only_fields = ["id", "created", "updated"]

    def validate_settings(self, value: Any) -> Any:
        try:
            return clean_app_settings(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(
                exc.message_dict if hasattr(exc, "error_dict") else exc.messages
            ) from None


class StreamKeySerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """A key as listed: never the secret, only its visible prefix."""

    state = serializers.SerializerMethodField()
    application_name = serializers.CharField(source="application.name", read_only=True)
    server = serializers.IntegerField(source="application.server_id", read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None)  # type: ignore[assignment]
    revoked_by = serializers.CharField(source="revoked_by.username", read_only=True, default=None)
    last_used_at = serializers.DateTimeField(read_only=True, allow_null=True)

    class Meta:
        model = StreamKey
        fields = [
            "id", "application", "application_name", "server", "label", "public_name", "prefix", "state",
            "created", "created_by", "expires_at", "revoked_at", "revoked_by", "revoke_reason",
            "last_used_at", "max_publishers", "allowed_cidrs",
        ]  # fmt: skip
        read_only_fields = fields

    def get_state(self, obj: StreamKey) -> str:
        return str(obj.state(self.context.get("now") or timezone.now()))


class StreamKeyIssueSerializer(StrictSerializerMixin, serializers.Serializer):  # type: ignore[type-arg]
    """Input of POST /keys/."""

    application = serializers.PrimaryKeyRelatedField(queryset=Application.objects.select_related("server"))
    label = serializers.CharField(max_length=100)  # type: ignore[assignment]
    public_name = serializers.CharField(
        max_length=128, required=False, allow_blank=True, validators=[validators.public_name_validator]
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    max_publishers = serializers.IntegerField(min_value=1, max_value=100, default=1)
    allowed_cidrs = serializers.ListField(child=serializers.CharField(max_length=64), required=False, max_length=50)

    def validate_allowed_cidrs(self, value: list[str]) -> list[str]:
        try:
            validators.validate_cidrs(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        name = attrs.get("public_name")
        if name and StreamKey.objects.filter(application=attrs["application"], public_name=name).exists():
            raise serializers.ValidationError({"public_name": ["This public name is already used in the application."]})
        return attrs


class IssuedKeySerializer(StreamKeySerializer):
    """The answer to POST /keys/: the key plus its secret, shown this once."""

    secret = serializers.SerializerMethodField()
    obs_server_url = serializers.SerializerMethodField()
    obs_stream_key = serializers.SerializerMethodField()
    publish_url = serializers.SerializerMethodField()
    username = serializers.SerializerMethodField(help_text="Wowza only: the publisher (source) username.")
    wowza = serializers.SerializerMethodField(help_text="Wowza only: what writing the publisher entry did.")

    class Meta(StreamKeySerializer.Meta):
        fields = [*StreamKeySerializer.Meta.fields, "secret", "obs_server_url", "obs_stream_key", "publish_url",
                  "username", "wowza"]  # fmt: skip
        read_only_fields = fields

    def _issued(self) -> IssuedKey:
        return self.context["issued"]  # type: ignore[no-any-return]

    def get_secret(self, obj: StreamKey) -> str:
        return self._issued().secret

    def get_obs_server_url(self, obj: StreamKey) -> str:
        return self._issued().obs_server_url

    def get_obs_stream_key(self, obj: StreamKey) -> str:
        return self._issued().obs_stream_key

    def get_username(self, obj: StreamKey) -> str:
        return self._issued().username

    def get_wowza(self, obj: StreamKey) -> str:
        outcome = self._issued().wowza
        return outcome.text if outcome else ""

    def get_publish_url(self, obj: StreamKey) -> str:
        return self._issued().publish_url


class RevokeSerializer(StrictSerializerMixin, serializers.Serializer):  # type: ignore[type-arg]
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class PublishSessionSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """A publish session: who published what, from where, with which encoder, for how long."""

    server_name = serializers.CharField(source="server.name", read_only=True)
    live = serializers.BooleanField(source="is_live", read_only=True)
    duration_s = serializers.FloatField(read_only=True)

    class Meta:
        model = PublishSession
        fields = [
            "id", "server", "server_name", "application", "key", "app_name", "public_name", "client_id",
            "publisher_addr", "encoder", "started", "last_update_at", "ended", "end_reason", "live",
            "duration_s", "bytes_in", "viewers", "peak_viewers",
        ]  # fmt: skip
        read_only_fields = fields


class KickResultSerializer(serializers.Serializer):  # type: ignore[type-arg]
    session = serializers.IntegerField(source="session.pk")
    server = serializers.CharField(source="session.server.name")
    outcome = serializers.ChoiceField(choices=["dropped", "not_live", "unreachable", "no_control"])
    detail = serializers.CharField()


class RevokedKeySerializer(StreamKeySerializer):
    """The answer to a revoke: the key, plus what happened to each of its live publishers."""

    kicks = serializers.SerializerMethodField()
    wowza = serializers.SerializerMethodField(help_text="Wowza only: publisher entry deleted, stream disconnected.")

    class Meta(StreamKeySerializer.Meta):
        fields = [*StreamKeySerializer.Meta.fields, "kicks", "wowza"]
        read_only_fields = fields

    def get_wowza(self, obj: StreamKey) -> str:
        return str(self.context.get("wowza", ""))

    def get_kicks(self, obj: StreamKey) -> list[dict[str, Any]]:
        return KickResultSerializer(self.context.get("kicks", []), many=True).data  # type: ignore[return-value]


class RotateSerializer(StrictSerializerMixin, serializers.Serializer):  # type: ignore[type-arg]
    grace_s = serializers.IntegerField(min_value=0, max_value=7 * 86400, default=3600)


class PublishRejectSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    server_name = serializers.CharField(source="server.name", read_only=True)

    class Meta:
        model = PublishReject
        fields = ["id", "created", "server", "server_name", "app_name", "addr", "key", "reason", "detail"]
        read_only_fields = fields


class UnblockSerializer(StrictSerializerMixin, serializers.Serializer):  # type: ignore[type-arg]
    addr = serializers.IPAddressField()


class ProxyMemberSerializer(StrictSerializerMixin, serializers.ModelSerializer):  # type: ignore[type-arg]
    proxy = serializers.PrimaryKeyRelatedField(queryset=Server.objects.filter(role=Server.Role.PROXY))
    origin = serializers.PrimaryKeyRelatedField(queryset=Server.objects.exclude(role=Server.Role.PROXY))

    class Meta:
        model = ProxyMember
        fields = ["id", "proxy", "origin", "weight", "backup", "max_fails", "fail_timeout_s"]
        read_only_fields = ["id"]


class ConfigRevisionSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = ConfigRevision
        fields = ["id", "server", "number", "sha256", "previous_sha256", "status", "mode", "diff", "output", "result",
                  "author_name", "created", "duration_ms", "text"]  # fmt: skip
        read_only_fields = fields


class DeployRequestSerializer(StrictSerializerMixin, serializers.Serializer):  # type: ignore[type-arg]
    dry_run = serializers.BooleanField(default=False)
    mode = serializers.ChoiceField(choices=Server.ReloadMode.choices, required=False)


class DeployStepSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    server_name = serializers.CharField(source="server.name", read_only=True)
    revision_number = serializers.IntegerField(source="revision.number", read_only=True, allow_null=True)

    class Meta:
        model = DeployStep
        fields = ["position", "server", "server_name", "status", "revision", "revision_number", "message", "started",
                  "finished"]  # fmt: skip
        read_only_fields = fields


class DeployJobSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """A multi-server deploy and the progress of each server, in the order they run."""

    steps = DeployStepSerializer(many=True, read_only=True)

    class Meta:
        model = DeployJob
        fields = ["id", "status", "mode", "stop_on_failure", "author_name", "message", "created", "started",
                  "finished", "steps"]  # fmt: skip
        read_only_fields = fields


class DeployJobCreateSerializer(StrictSerializerMixin, serializers.Serializer):  # type: ignore[type-arg]
    servers = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**63 - 1), required=False, max_length=500,
        help_text="Server ids (any order: origins run first, proxies last). Default: every deployable server.",
    )  # fmt: skip
    mode = serializers.ChoiceField(choices=Server.ReloadMode.choices, required=False, allow_blank=True, default="")
    stop_on_failure = serializers.BooleanField(default=True)

    def validate_servers(self, value: list[int]) -> list[Server]:
        try:
            return jobs.servers_by_id(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict["servers"]) from None
