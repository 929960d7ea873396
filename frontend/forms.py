"""Console forms. Validation is the models' own (full_clean) plus the app-settings schema."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError

from console.roles import ROLE_CHOICES
from streams import validators
from streams.app_settings import clean_app_settings
from streams.models import Application, Server


class ServerForm(forms.ModelForm):  # type: ignore[type-arg]
    tags_text = forms.CharField(required=False, label="Tags", help_text="Comma-separated, e.g. school, north")
    wowza_username = forms.CharField(
        required=False, label="Wowza user", help_text="Leave blank to keep the stored one."
    )
    wowza_password = forms.CharField(
        required=False, label="Wowza password", widget=forms.PasswordInput(render_value=False),
        help_text="Write-only. Leave blank to keep the stored one.",
    )  # fmt: skip

    class Meta:
        model = Server
        fields = [
            "name", "kind", "role", "host", "rtmp_port", "enabled", "poll_interval_s", "stat_url", "control_url",
            "wowza_api_url", "wowza_auth", "notes",
        ]  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["tags_text"].initial = ", ".join(self.instance.tags or [])
        self.fields["poll_interval_s"].required = False  # blank: the default
        self._stored = (self.instance.wowza_username, self.instance.wowza_password)

    def clean_poll_interval_s(self) -> int:
        value = self.cleaned_data.get("poll_interval_s")
        return int(value) if value is not None else int(Server._meta.get_field("poll_interval_s").get_default())

    def clean_tags_text(self) -> list[str]:
        tags = [t.strip() for t in self.cleaned_data["tags_text"].split(",") if t.strip()]
        validators.validate_tags(tags)
        return tags

    def _post_clean(self) -> None:
        self.instance.tags = self.cleaned_data.get("tags_text", self.instance.tags)
        self.instance.wowza_username = self.cleaned_data.get("wowza_username") or self._stored[0]
        self.instance.wowza_password = self.cleaned_data.get("wowza_password") or self._stored[1]
        super()._post_clean()  # type: ignore[misc]


class ApplicationForm(forms.ModelForm):  # type: ignore[type-arg]
    settings_json = forms.CharField(
        label="Settings (JSON)", widget=forms.Textarea(attrs={"rows": 14, "class": "mono"}),
        help_text="Unknown keys are rejected. Defaults are filled in.",
    )  # fmt: skip

    class Meta:
        model = Application
        fields = ["name", "kind"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["settings_json"].initial = json.dumps(self.instance.settings, indent=2, sort_keys=True)

    def clean_settings_json(self) -> dict[str, Any]:
        raw = self.cleaned_data["settings_json"]
        if len(raw) > 20000:
            raise ValidationError("Settings are too long.")
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise ValidationError(f"Not valid JSON: {exc}") from None
        except RecursionError:
            raise ValidationError("Not valid JSON: nested too deeply.") from None
        try:
            return clean_app_settings(value)
        except ValidationError as exc:
            raise ValidationError(
                [f"{k}: {'; '.join(v)}" for k, v in exc.message_dict.items()]
                if hasattr(exc, "error_dict")
                else exc.messages
            ) from None

    def _post_clean(self) -> None:
        if "settings_json" in self.cleaned_data:
            self.instance.settings = self.cleaned_data["settings_json"]
        super()._post_clean()  # type: ignore[misc]


class KeyIssueForm(forms.Form):
    label = forms.CharField(max_length=100, help_text="Who or what publishes with it, e.g. 'Gym camera'.")
    public_name = forms.CharField(
        max_length=128, required=False, validators=[validators.public_name_validator],
        help_text="The stream name viewers use. Blank: derived from the label.",
    )  # fmt: skip
    expires_at = forms.DateTimeField(
        required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}), help_text="Optional."
    )
    max_publishers = forms.IntegerField(min_value=1, max_value=100, initial=1)
    allowed_cidrs = forms.CharField(
        required=False, label="Allowed publisher networks", help_text="Optional, comma-separated CIDRs."
    )

    def clean_allowed_cidrs(self) -> list[str]:
        cidrs = [c.strip() for c in self.cleaned_data["allowed_cidrs"].split(",") if c.strip()]
        validators.validate_cidrs(cidrs)
        return cidrs


class RevokeForm(forms.Form):
    reason = forms.CharField(max_length=200, required=False)


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100)
    owner = forms.ModelChoiceField(queryset=get_user_model().objects.filter(is_active=True), to_field_name="username")
    role_ceiling = forms.ChoiceField(choices=ROLE_CHOICES, initial="viewer")
    expires_at = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))


class RotateForm(forms.Form):
    grace_hours = forms.IntegerField(
        min_value=0, max_value=168, initial=1, label="Old secret stays valid for (hours)",
        help_text="Switch the encoder to the new secret within this time; then the old one is refused.",
    )  # fmt: skip


class UserForm(forms.Form):
    """Create a user or change one's role and state (admins)."""

    username = forms.CharField(max_length=150, validators=[UnicodeUsernameValidator()])
    email = forms.EmailField(required=False)
    role = forms.ChoiceField(choices=[("", "no access"), *ROLE_CHOICES], required=False)
    is_active = forms.BooleanField(required=False, initial=True, label="Active")
    password = forms.CharField(
        required=False, widget=forms.PasswordInput(render_value=False),
        help_text="Required for a new user; leave blank to keep the current one.",
    )  # fmt: skip
