"""Console forms. Validation is the models' own (full_clean) plus the app-settings schema."""

from __future__ import annotations

import json
import re
import zoneinfo
from datetime import datetime, timedelta, tzinfo
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, validate_email
from django.utils import timezone

from console.roles import ROLE_CHOICES
from monitoring import alerts_api
from monitoring.models import AlertRule, Condition, NotificationChannel, Stream
from streams import validators
from streams.app_settings import clean_app_settings
from streams.models import Application, Server, StreamKey


class ServerForm(forms.ModelForm):  # type: ignore[type-arg]
    tags_text = forms.CharField(required=False, label="Tags", help_text="Comma-separated, e.g. school, north")
    wowza_username = forms.CharField(
        required=False, label="Wowza user", help_text="Leave blank to keep the stored one."
    )
    wowza_password = forms.CharField(
        required=False, label="Wowza password", widget=forms.PasswordInput(render_value=False),
        help_text="Write-only. Leave blank to keep the stored one.",
    )  # fmt: skip
    agent_token = forms.CharField(
        required=False, label="Agent token", widget=forms.PasswordInput(render_value=False), max_length=500,
        help_text="tally-agent's token on this host. Write-only. Leave blank to keep the stored one.",
    )  # fmt: skip

    class Meta:
        model = Server
        fields = [
            "name", "kind", "role", "host", "rtmp_port", "enabled", "poll_interval_s", "stat_url", "control_url",
            "wowza_api_url", "wowza_auth", "notes", "agent_url", "agent_ca", "reload_mode", "reconnect_delay_s",
            "proxy_method",
        ]  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["tags_text"].initial = ", ".join(self.instance.tags or [])
        self.fields["poll_interval_s"].required = False  # blank: the default
        for name in ("reload_mode", "reconnect_delay_s", "proxy_method"):  # deploy options: blank keeps the default
            self.fields[name].required = False
        self._stored = (self.instance.wowza_username, self.instance.wowza_password, self.instance.agent_token)

    def clean_poll_interval_s(self) -> int:
        value = self.cleaned_data.get("poll_interval_s")
        return int(value) if value is not None else int(Server._meta.get_field("poll_interval_s").get_default())

    def _or_default(self, name: str) -> Any:
        value = self.cleaned_data.get(name)
        return value if value not in (None, "") else getattr(self.instance, name)

    def clean_reload_mode(self) -> Any:
        return self._or_default("reload_mode")

    def clean_reconnect_delay_s(self) -> Any:
        return self._or_default("reconnect_delay_s")

    def clean_proxy_method(self) -> Any:
        return self._or_default("proxy_method")

    def clean_tags_text(self) -> list[str]:
        tags = [t.strip() for t in self.cleaned_data["tags_text"].split(",") if t.strip()]
        validators.validate_tags(tags)
        return tags

    def _post_clean(self) -> None:
        self.instance.tags = self.cleaned_data.get("tags_text", self.instance.tags)
        self.instance.wowza_username = self.cleaned_data.get("wowza_username") or self._stored[0]
        self.instance.wowza_password = self.cleaned_data.get("wowza_password") or self._stored[1]
        self.instance.agent_token = self.cleaned_data.get("agent_token") or self._stored[2]
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


# --- alerts ----------------------------------------------------------------------------------------------

# The same limits as the alerts API.
MAX_ALERT_EMAILS = alerts_api.MAX_EMAILS
MAX_SCHEDULE_WINDOWS = alerts_api.MAX_WINDOWS
MAX_RULE_DURATION_S = alerts_api.MAX_DURATION_S
MAX_KBPS = alerts_api.MAX_KBPS
MAX_MUTE = alerts_api.MAX_MUTE
MAX_MUTE_LEAD = alerts_api.MAX_MUTE_LEAD
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAYS = {
    **{name.lower(): i for i, name in enumerate(DAY_NAMES)},
    **{f"{name}day": i for i, name in enumerate(("mon", "tues", "wednes", "thurs", "fri", "satur", "sun"))},
    **{str(i): i for i in range(7)},
}
_WINDOW = re.compile(r"(?P<days>.+?)\s+(?P<start>\d{1,2}:\d{2})\s*[-–]\s*(?P<end>\d{1,2}:\d{2})")
MUTE_SUBJECT = re.compile(r"(server|stream):([1-9][0-9]{0,8})")
DATETIME_LOCAL = {"type": "datetime-local"}


def _datetime_input() -> forms.DateTimeInput:
    return forms.DateTimeInput(attrs=DATETIME_LOCAL, format="%Y-%m-%dT%H:%M")


def parse_emails(text: str) -> list[str]:
    """Addresses separated by commas, semicolons, spaces or new lines: each valid, no repeats, ≤ 50."""
    found: list[str] = []
    errors: list[str] = []
    for address in re.split(r"[\s,;]+", text or ""):
        if not address or address.lower() in (a.lower() for a in found):
            continue
        try:
            if len(address) > 254:
                raise ValidationError("too long")
            validate_email(address)
        except ValidationError:
            errors.append(f"“{address[:80]}” is not a valid e-mail address.")
        else:
            found.append(address)
    if len(found) > MAX_ALERT_EMAILS:
        errors.append(f"At most {MAX_ALERT_EMAILS} addresses ({len(found)} given): use a mailing list instead.")
    if errors:
        raise ValidationError(errors[:10])
    return found


def _clock(text: str, end: bool = False) -> str:
    hours, minutes = (int(part) for part in text.split(":"))
    if (hours > 23 or minutes > 59) and not (end and (hours, minutes) == (24, 0)):
        raise ValueError(text)
    return f"{hours:02d}:{minutes:02d}"


def _days(text: str) -> list[int]:
    days: set[int] = set()
    if text.strip().lower() in ("daily", "every day", "all"):
        return list(range(7))
    for part in text.split(","):
        first, dash, last = (piece.strip().lower() for piece in part.partition("-"))
        if first not in _DAYS or (dash and last not in _DAYS):
            raise ValueError(part.strip())
        start, end = _DAYS[first], _DAYS[last] if dash else _DAYS[first]
        if end < start:
            raise ValueError(part.strip())
        days.update(range(start, end + 1))
    return sorted(days)


def parse_schedule(text: str) -> list[dict[str, Any]]:
    """Weekly windows, one a line: ``Mon-Fri 08:00-17:00``, ``Sat,Sun 10:00-12:00``, ``0,6 09:00-10:30``,
    ``daily 06:00-24:00`` (days 0–6 with Monday = 0, or their names; times HH:MM, start before end)."""
    windows: list[dict[str, Any]] = []
    errors: list[str] = []
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    for number, line in enumerate(lines, 1):
        match = _WINDOW.fullmatch(line)
        if match is None:
            errors.append(f"Line {number}: write days then hours, e.g. “Mon-Fri 08:00-17:00”.")
            continue
        try:
            days = _days(match["days"])
        except ValueError as exc:
            errors.append(f"Line {number}: “{str(exc)[:40]}” is not a day or a range of days (0–6, Monday = 0, "
                          "or Mon … Sun; a range goes forward: Mon-Fri).")  # fmt: skip
            continue
        try:
            start, end = _clock(match["start"]), _clock(match["end"], end=True)
        except ValueError as exc:
            errors.append(f"Line {number}: “{exc}” is not a time of day (00:00 to 23:59; an end may be 24:00).")
            continue
        if start >= end:
            errors.append(f"Line {number}: the window must start before it ends ({start} is not before {end}); "
                          "split a window across midnight into two lines.")  # fmt: skip
            continue
        windows.append({"days": days, "start": start, "end": end})
    if len(windows) > MAX_SCHEDULE_WINDOWS:
        errors.append(f"At most {MAX_SCHEDULE_WINDOWS} windows.")
    if errors:
        raise ValidationError(errors[:10])
    return windows


def format_days(days: Any) -> str:
    days = sorted({d for d in days if isinstance(d, int) and 0 <= d <= 6})
    if days == list(range(7)):
        return "daily"
    runs: list[list[int]] = []
    for day in days:
        if runs and day == runs[-1][-1] + 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    parts = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{DAY_NAMES[run[0]]}-{DAY_NAMES[run[-1]]}")
        else:
            parts.extend(DAY_NAMES[d] for d in run)
    return ",".join(parts)


def format_schedule(schedule: Any) -> str:
    """The text ``parse_schedule`` reads back into the same windows."""
    lines = []
    for window in schedule or []:
        if isinstance(window, dict):
            days = format_days(window.get("days", range(7)))
            lines.append(f"{days} {window.get('start', '')}-{window.get('end', '')}")
    return "\n".join(lines)


def _zone(name: Any) -> tzinfo | None:
    """A time zone the browser named (IANA), or ``None``."""
    if not isinstance(name, str) or not name or len(name) > 64 or not re.fullmatch(r"[A-Za-z0-9_+\-/]+", name):
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None


class BrowserTimeZoneForm(forms.Form):
    """Date-times typed into ``datetime-local`` inputs are read in the browser's time zone (a hidden ``tz``
    field the page's script fills in); without it, in the server's (UTC)."""

    tz = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)

    def full_clean(self) -> None:
        self.zone = _zone(self.data.get(self.add_prefix("tz"))) if self.is_bound else None
        if self.zone is None:
            super().full_clean()
            return
        with timezone.override(self.zone):
            super().full_clean()


def subject_choices_of(target: Server | Stream) -> tuple[str, str]:
    if isinstance(target, Stream):
        return f"stream:{target.pk}", f"stream {target.app}/{target.name} on {target.server.name}"
    return f"server:{target.pk}", f"server {target.name} (all its streams)"


class MuteForm(BrowserTimeZoneForm):
    """Mute a server or a stream now for a while, or plan a maintenance window (a future start)."""

    DURATIONS = [("1", "1 hour"), ("4", "4 hours"), ("24", "24 hours"), ("until", "until a given time")]

    subject = forms.CharField(label="Mute", widget=forms.Select)  # "server:<id>" or "stream:<id>"
    starts_at = forms.DateTimeField(
        required=False, label="From", widget=_datetime_input(),
        help_text="Blank: now. A later start plans a maintenance window.",
    )  # fmt: skip
    duration = forms.ChoiceField(choices=DURATIONS, initial="1", label="For")
    ends_at = forms.DateTimeField(
        required=False, label="Until", widget=_datetime_input(), help_text="With “until a given time”."
    )
    reason = forms.CharField(
        max_length=200, required=False, help_text="Optional, e.g. “firmware update” (shown on the mutes page)."
    )
    next = forms.CharField(required=False, max_length=2000, widget=forms.HiddenInput)

    def __init__(self, *args: Any, subjects: list[Any] | None = None, now: datetime | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.now = now or timezone.now()
        self.target: Server | Stream | None = None
        if subjects is not None:
            self.fields["subject"].widget.choices = subjects

    def clean_subject(self) -> str:
        value = self.cleaned_data["subject"]
        match = MUTE_SUBJECT.fullmatch(value)
        if match:
            kind, pk = match.groups()
            if kind == "server":
                self.target = Server.objects.filter(pk=int(pk)).first()
            else:
                self.target = Stream.objects.select_related("server").filter(pk=int(pk)).first()
        if self.target is None:
            raise ValidationError("Choose a server or a stream to mute.")
        choices = self.fields["subject"].widget.choices
        if not any(value == v or (isinstance(c, list | tuple) and any(value == x for x, _ in c)) for v, c in choices):
            self.fields["subject"].widget.choices = [*choices, subject_choices_of(self.target)]
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        starts, ends, duration = data.get("starts_at"), data.get("ends_at"), data.get("duration")
        if starts is not None and starts > self.now + MAX_MUTE_LEAD:
            self.add_error("starts_at", "A mute may start at most 365 days from now.")
            return data
        start = max(starts or self.now, self.now)  # a start already past means now
        if duration == "until":
            if ends is None:
                self.add_error("ends_at", "Give the end time (or choose a duration).")
                return data
            if ends <= start:
                self.add_error("ends_at", "The end must be after the start, and in the future.")
                return data
            if ends - start > MAX_MUTE:
                self.add_error("ends_at", f"A mute lasts at most {MAX_MUTE.days} days.")
                return data
        elif duration:
            if ends is not None:
                self.add_error("ends_at", "An end time goes with “until a given time”: choose that, or clear it.")
                return data
            ends = start + timedelta(hours=int(duration))
        else:
            return data
        data["starts"], data["ends"] = start, ends
        return data


class AlertRuleForm(forms.ModelForm):  # type: ignore[type-arg]
    """A rule, validated the way the engine reads it (``monitoring.alerting.Rules``)."""

    schedule_text = forms.CharField(
        required=False, label="Schedule", widget=forms.Textarea(attrs={"rows": 3, "class": "mono"}),
        help_text="“Expected live” only: when the stream should be live, one weekly window a line, e.g. "
                  "“Mon-Fri 08:00-17:00” or “Sat,Sun 10:00-12:00” (days 0–6 with Monday = 0, or names; UTC). "
                  "Blank: always.",
    )  # fmt: skip
    emails_text = forms.CharField(
        required=False, label="Extra e-mail addresses", widget=forms.Textarea(attrs={"rows": 2}),
        help_text=f"Besides the channels and the subscribers: up to {MAX_ALERT_EMAILS}, separated by commas or "
                  "new lines.",
    )  # fmt: skip

    class Meta:
        model = AlertRule
        fields = ["name", "condition", "enabled", "server", "application", "key", "duration_s", "threshold_kbps",
                  "threshold_pct", "channels"]  # fmt: skip
        labels = {"duration_s": "Holds for (s)", "threshold_kbps": "Below (kbps)",
                  "threshold_pct": "Below (% of its median)", "key": "Publish key"}  # fmt: skip
        help_texts = {
            "server": "Scope: at most one of server, application or key. None: every server and stream.",
            "duration_s": "How long the condition must hold before the alert opens (a dropped stream's grace "
                          "period), 0 to 86400 s.",
            "threshold_kbps": "Low bitrate only: input bitrate below this.",
            "threshold_pct": "Low bitrate only: below this share of the stream's own median of the last "
                             "10 minutes.",
            "channels": "Where the notices go (e-mail lists and webhooks).",
        }  # fmt: skip
        widgets = {"channels": forms.CheckboxSelectMultiple}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fields: dict[str, Any] = self.fields
        fields["condition"].choices = [
            (value, label)
            for value, label in Condition.choices
            if value not in (Condition.STREAM_UNSTABLE, Condition.DEPLOY_FAILED)  # raised without a rule of their own
        ]
        fields["application"].queryset = Application.objects.select_related("server").order_by("server__name", "name")
        fields["key"].queryset = StreamKey.objects.select_related("application__server").order_by(
            "application__server__name", "application__name", "public_name"
        )
        fields["channels"].label_from_instance = (  # type: ignore[attr-defined]
            lambda c: f"{c.name} ({c.get_kind_display()}{'' if c.enabled else ', disabled'})"
        )
        fields["key"].label_from_instance = (  # type: ignore[attr-defined]
            lambda key: f"{key.application.server.name}/{key.application.name}/{key.public_name} ({key.label})"
        )
        fields["duration_s"].validators.append(MaxValueValidator(MAX_RULE_DURATION_S))
        fields["duration_s"].widget.attrs["max"] = MAX_RULE_DURATION_S
        for name, high in (("threshold_kbps", MAX_KBPS), ("threshold_pct", 100)):
            fields[name].validators.append(MaxValueValidator(high))
            fields[name].widget.attrs.update(min=0, max=high)
        fields["schedule_text"].initial = format_schedule(self.instance.schedule)
        fields["emails_text"].initial = ", ".join(self.instance.emails or [])

    def _above_zero(self, name: str) -> float | None:
        value: float | None = self.cleaned_data.get(name)
        if value is not None and value <= 0:
            raise ValidationError("Must be above 0.")
        return value

    def clean_threshold_kbps(self) -> float | None:
        return self._above_zero("threshold_kbps")

    def clean_threshold_pct(self) -> float | None:
        return self._above_zero("threshold_pct")

    def clean_channels(self) -> Any:
        channels = self.cleaned_data["channels"]
        if len(channels) > alerts_api.MAX_RULE_CHANNELS:
            raise ValidationError(f"At most {alerts_api.MAX_RULE_CHANNELS} channels.")
        return channels

    def clean_schedule_text(self) -> list[dict[str, Any]]:
        return parse_schedule(self.cleaned_data["schedule_text"])

    def clean_emails_text(self) -> list[str]:
        return parse_emails(self.cleaned_data["emails_text"])

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        condition = data.get("condition")
        scopes = [name for name in ("server", "application", "key") if data.get(name)]
        if len(scopes) > 1:
            self.add_error(None, f"Choose at most one scope (a server, an application or a key), not {len(scopes)}.")
        if condition == Condition.EXPECTED_LIVE and not data.get("key") and "key" not in self.errors:
            self.add_error("key", "An “Expected live” rule needs the publish key of the stream that should be live.")
        if condition == Condition.SERVER_DOWN and (data.get("application") or data.get("key")):
            self.add_error(None, "A “Server down” rule is about a whole server: scope it to a server, or to none.")
        thresholds = [data.get("threshold_kbps"), data.get("threshold_pct")]
        if condition == Condition.LOW_BITRATE:
            if all(t is None for t in thresholds) and not any(
                f in self.errors for f in ("threshold_kbps", "threshold_pct")
            ):
                self.add_error("threshold_kbps", "A low-bitrate rule needs a threshold: in kbps, in % of the "
                                                 "stream's median, or both.")  # fmt: skip
        elif condition and any(t is not None for t in thresholds):
            self.add_error("threshold_kbps", "Thresholds apply to low-bitrate rules only: clear them.")
        if condition and condition != Condition.EXPECTED_LIVE and data.get("schedule_text"):
            self.add_error("schedule_text", "A schedule applies to “Expected live” rules only: clear it.")
        return data

    def _post_clean(self) -> None:
        if "schedule_text" in self.cleaned_data:
            self.instance.schedule = self.cleaned_data["schedule_text"]
        if "emails_text" in self.cleaned_data:
            self.instance.emails = self.cleaned_data["emails_text"]
        super()._post_clean()  # type: ignore[misc]


class ChannelForm(forms.ModelForm):  # type: ignore[type-arg]
    """An e-mail list or a webhook (its signing secret is generated, never typed)."""

    emails_text = forms.CharField(
        required=False, label="E-mail addresses", widget=forms.Textarea(attrs={"rows": 3}),
        help_text=f"E-mail channels: up to {MAX_ALERT_EMAILS} addresses, separated by commas or new lines.",
    )  # fmt: skip
    url = forms.CharField(
        required=False, max_length=500, label="Webhook URL", validators=[validators.validate_http_url],
        help_text="Webhooks: the http:// or https:// address Tally POSTs each notice to (JSON, signed).",
    )  # fmt: skip
    kind = forms.ChoiceField(
        choices=NotificationChannel.Kind.choices, widget=forms.RadioSelect,
        help_text="Fixed once the channel exists.",
    )  # fmt: skip

    class Meta:
        model = NotificationChannel
        fields = ["name", "kind", "enabled", "url"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["emails_text"].initial = ", ".join(self.instance.emails or [])
        self.order_fields(["name", "kind", "emails_text", "url", "enabled"])
        if self.instance.pk:
            self.fields["kind"].disabled = True  # the API refuses a change of kind too

    def clean_emails_text(self) -> list[str]:
        return parse_emails(self.cleaned_data["emails_text"])

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        kind, emails, url = data.get("kind"), data.get("emails_text"), data.get("url")
        if kind == NotificationChannel.Kind.EMAIL:
            if url:
                self.add_error("url", "A webhook URL belongs to a webhook channel: clear it, or choose Webhook.")
            if not emails and "emails_text" not in self.errors:
                self.add_error("emails_text", "An e-mail channel needs at least one address.")
        elif kind == NotificationChannel.Kind.WEBHOOK:
            if emails:
                self.add_error("emails_text", "Addresses belong to an e-mail channel: clear them, or choose E-mail.")
            if not url and "url" not in self.errors:
                self.add_error("url", "A webhook channel needs its URL.")
        return data

    def _post_clean(self) -> None:
        if "emails_text" in self.cleaned_data:
            self.instance.emails = self.cleaned_data["emails_text"]
        super()._post_clean()  # type: ignore[misc]


class TestAddressForm(forms.Form):
    email = forms.EmailField(max_length=254, label="E-mail address", help_text="Sends one test notice there now.")


class SubscribeForm(forms.Form):
    server = forms.ModelChoiceField(queryset=Server.objects.all(), required=False)
    application = forms.ModelChoiceField(queryset=Application.objects.select_related("server"), required=False)
    action = forms.ChoiceField(choices=[("subscribe", "Subscribe"), ("unsubscribe", "Unsubscribe")])

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if bool(data.get("server")) == bool(data.get("application")) and not self.errors:
            raise ValidationError("Choose a server or an application.")
        return data
