"""The schema of ``Application.settings``: what later issues render into nginx-rtmp and Wowza configs.

``clean_app_settings`` is the one validator: it rejects unknown keys and wrong types with a message per
field, and returns the settings with every default filled in.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from rest_framework import serializers

from streams import validators


def _django_validator(func: Any) -> Any:
    def run(value: Any) -> None:
        try:
            func(value)
        except ValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None

    return run


class ApplicationSettingsSchema(serializers.Serializer):  # type: ignore[type-arg]
    """Fields, types, ranges and defaults of an application's settings."""

    callbacks = serializers.BooleanField(
        default=True, help_text="Send on_publish/on_play/... to Tally (needed to enforce publish keys)."
    )
    on_update = serializers.BooleanField(
        default=True,
        help_text="Render on_update: revocations apply to live streams, but a failing console drops them.",
    )
    on_update_interval_s = serializers.IntegerField(default=30, min_value=5, max_value=300)
    fail_open = serializers.BooleanField(
        default=False, help_text="When Tally's database is unreachable, allow publishing instead of refusing."
    )
    drop_idle_publisher_s = serializers.IntegerField(default=10, min_value=0, max_value=3600)
    hls = serializers.BooleanField(default=False)
    hls_fragment_s = serializers.IntegerField(default=3, min_value=1, max_value=30)
    hls_playlist_length_s = serializers.IntegerField(default=30, min_value=3, max_value=600)
    record = serializers.BooleanField(default=False)
    push_targets = serializers.ListField(
        child=serializers.CharField(max_length=500, validators=[_django_validator(validators.validate_rtmp_url)]),
        default=list,
        max_length=10,
    )
    publish_allow_cidrs = serializers.ListField(
        child=serializers.CharField(max_length=64),
        default=list,
        validators=[_django_validator(validators.validate_cidrs)],
    )
    play_allow_cidrs = serializers.ListField(
        child=serializers.CharField(max_length=64),
        default=list,
        validators=[_django_validator(validators.validate_cidrs)],
    )


SETTINGS_FIELDS = frozenset(ApplicationSettingsSchema().fields)


def default_app_settings() -> dict[str, Any]:
    return clean_app_settings({})


def clean_app_settings(value: Any) -> dict[str, Any]:
    """Validate and normalise; raises Django ValidationError naming each bad key."""
    if not isinstance(value, dict):
        raise ValidationError("Settings must be a JSON object.")
    errors: dict[str, list[str]] = {key: ["Unknown setting."] for key in value if key not in SETTINGS_FIELDS}
    schema = ApplicationSettingsSchema(data=value)
    if not schema.is_valid():
        for key, messages in schema.errors.items():
            errors[f"{key}"] = [str(m) for m in (messages if isinstance(messages, list) else [messages])]
    if errors:
        raise ValidationError({f"settings.{key}": msgs for key, msgs in errors.items()})
    return dict(schema.validated_data)
