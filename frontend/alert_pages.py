"""Alerts pages: open alerts first, the notice backlog, the alert history and the "events now" feed; one
alert with its notices; mutes and maintenance windows (operators write); alert rules and notification
channels (admins), with test sends; and everyone's own subscriptions to a server's or an application's
alert e-mails.

Thin like the other pages: the state changes are ``monitoring.alerting``'s (acknowledge, test sends); the
writes here are plain rows, validated by ``frontend.forms`` and audited in the same transaction.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import models, transaction
from django.db.models import Case, CharField, Count, F, IntegerField, Q, QuerySet, Subquery, Value, When
from django.forms import RadioSelect
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme

from console import audit
from console.roles import Role, request_role
from frontend import forms
from frontend.views import ONCE_SESSION_KEY, DeleteView, RoleView, _pop_once, _show_once
from monitoring import alerting
from monitoring.models import (
    Alert,
    AlertRule,
    Condition,
    Delivery,
    HealthTransition,
    Mute,
    NotificationChannel,
    Stream,
    Subscription,
)
from streams.models import PublishReject, PublishSession, Server

log = logging.getLogger(__name__)

ACTIVE_STATES = (Alert.State.OPEN, Alert.State.PENDING)
ENDED_STATES = (Alert.State.CLOSED, Alert.State.CANCELLED)


# --- shared helpers --------------------------------------------------------------------------------------


class AlertPage(RoleView):
    """A page of the alerts section."""

    def user(self) -> Any:
        """The signed-in user (``RoleView`` let nobody else in)."""
        return self.request.user


def subnav(request: HttpRequest, current: str) -> list[tuple[str, str, bool]]:
    """The alerts pages' own navigation: (url, label, is the current page)."""
    items = [("alert-list", "Open & history"), ("alert-mutes", "Mutes")]
    if request_role(request) >= Role.ADMIN:
        items += [("alert-rules", "Rules"), ("alert-channels", "Channels")]
    return [(reverse(name), label, name == current) for name, label in items]


def next_url(request: HttpRequest, default: str) -> str:
    """The POSTed ``next`` when it is a page of this site (as SessionKickView checks), else ``default``."""
    candidate = request.POST.get("next", "")
    if any(ord(c) < 32 or ord(c) == 127 for c in candidate):
        return default  # a header cannot carry them
    if not url_has_allowed_host_and_scheme(candidate, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):  # fmt: skip
        return default
    return candidate


def _server_param(value: str, known: set[int]) -> int | None:
    value = value or ""
    server_id = int(value) if value.isascii() and value.isdigit() and len(value) < 10 else None
    return server_id if server_id in known else None


def subject_label(alert: Alert) -> str:
    """``app/name on server`` for a stream alert, the server's name for a server alert."""
    if alert.subject.startswith("stream:"):
        try:
            _, app, name = alerting.parse_stream_subject(alert.subject)
        except ValueError:
            return alert.subject
        return f"{app}/{name} on {alert.server.name}"
    return alert.server.name


def mute_subjects_of(alert: Alert) -> list[tuple[str, str]]:
    """What a mute from an alert can cover: its stream (when known), or its whole server."""
    choices = []
    if alert.stream_id:
        choices.append((f"stream:{alert.stream_id}", "this stream"))
    choices.append((f"server:{alert.server_id}", f"the whole server {alert.server.name}"))
    return choices


def quick_mute_form(alert: Alert, back: str) -> forms.MuteForm:
    """The compact mute form of one alert (subject, duration or end, reason)."""
    choices = mute_subjects_of(alert)
    form = forms.MuteForm(subjects=choices, auto_id=f"mute-{alert.pk}-%s",
                          initial={"subject": choices[0][0], "duration": "1", "next": back})  # fmt: skip
    form.fields["subject"].widget = RadioSelect(choices=choices)
    del form.fields["starts_at"]
    return form


def active_mutes(now: datetime, server_ids: Iterable[int] | None = None) -> dict[tuple[str, int], datetime]:
    """When the mutes in force now end, by ("server", id) and ("stream", id)."""
    mutes = Mute.objects.filter(starts_at__lte=now, ends_at__gt=now)
    if server_ids is not None:
        mutes = mutes.filter(Q(server_id__in=server_ids) | Q(stream__server_id__in=server_ids))
    until: dict[tuple[str, int], datetime] = {}
    for server_id, stream_id, ends_at in mutes.values_list("server_id", "stream_id", "ends_at"):
        for key in (("server", server_id), ("stream", stream_id)):
            if key[1] is not None:
                until[key] = max(until.get(key, ends_at), ends_at)
    return until


def muted_until(alert: Alert, mutes: dict[tuple[str, int], datetime]) -> datetime | None:
    ends = [mutes.get(("server", alert.server_id)), mutes.get(("stream", alert.stream_id or 0))]
    return max((e for e in ends if e is not None), default=None)


def save_audited(instance: models.Model, actor: audit.Actor, message: str = "",
                 channels: Iterable[NotificationChannel] | None = None) -> None:  # fmt: skip
    """``audit.save_audited`` plus a rule's channels (saved and audited with it) and a ``message`` that is
    always recorded (a webhook secret's rotation changes nothing visible: the snapshot masks it)."""
    with transaction.atomic():
        is_new = instance._state.adding
        before = None
        if not is_new:
            current = type(instance)._default_manager.select_for_update().get(pk=instance.pk)
            before = audit.snapshot(current)
            if isinstance(current, AlertRule):
                before["channels"] = sorted(current.channels.values_list("pk", flat=True))
        instance.full_clean()
        instance.save()
        after = audit.snapshot(instance)
        if isinstance(instance, AlertRule):
            if channels is not None:
                instance.channels.set(channels)
            after["channels"] = sorted(instance.channels.values_list("pk", flat=True))
        if before is None:
            audit.record(actor, "create", instance, after=after, message=message)
        elif before != after or message:
            changed = ", ".join(audit.changed(before, after))
            audit.record(actor, "update", instance, before=before, after=after,
                         message="; ".join(m for m in (message, changed) if m))  # fmt: skip


def delete_audited(instance: models.Model, actor: audit.Actor, message: str = "") -> None:
    with transaction.atomic():
        audit.record(actor, "delete", instance, before=audit.snapshot(instance), message=message)
        instance.delete()


# --- "events now" ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedEvent:
    """One line of the alerts page: what happened (``kind``), when, and the row it comes from."""

    kind: str
    at: datetime
    obj: Any


FEED_WINDOW = 5000
EVENT_KINDS = {
    "health": "Server health",
    "started": "Publish started",
    "stopped": "Publish stopped",
    "rejected": "Publish refused",
}


def _event_source(kind: str, server_id: int | None) -> QuerySet[Any]:
    """One kind of event as (at, kind, id) rows: the branches of the merged feed line up column by column."""
    qs: QuerySet[Any]
    if kind == "health":
        qs, at = HealthTransition.objects.all(), "at"
    elif kind == "started":
        qs, at = PublishSession.objects.all(), "started"
    elif kind == "stopped":
        qs, at = PublishSession.objects.filter(ended__isnull=False), "ended"
    else:
        qs, at = PublishReject.objects.all(), "created"
    # The newest FEED_WINDOW rows of each table (a primary-key range, so the feed never scans a table of
    # millions of sessions; rows are inserted in time order).
    newest = qs.model._default_manager.order_by("-pk").values("pk")[:1]
    qs = qs.filter(pk__gt=Subquery(newest) - Value(FEED_WINDOW))
    if server_id is not None:
        qs = qs.filter(server_id=server_id)
    return (
        qs.order_by()
        .annotate(ev_at=F(at), ev_kind=Value(kind, output_field=CharField()), ev_id=F("pk"))
        .values_list("ev_at", "ev_kind", "ev_id")
    )


def event_feed(kinds: Iterable[str], server_id: int | None = None) -> QuerySet[Any]:
    """Health transitions, publish starts and stops and refused publishes, newest first, in one query
    (a UNION ALL: a page of it is one query, its count another)."""
    sources = [_event_source(kind, server_id) for kind in kinds]
    feed = sources[0].union(*sources[1:], all=True) if len(sources) > 1 else sources[0]
    return feed.order_by("-ev_at", "ev_kind", "-ev_id")


def load_events(rows: Iterable[tuple[datetime, str, int]]) -> list[FeedEvent]:
    """The rows behind a page of the feed: one query per table, whatever the page holds."""
    rows = list(rows)
    wanted: dict[str, set[int]] = {"health": set(), "session": set(), "rejected": set()}
    for _at, kind, pk in rows:
        wanted["session" if kind in ("started", "stopped") else kind].add(pk)
    objects: dict[str, dict[int, Any]] = {
        "health": HealthTransition.objects.select_related("server").in_bulk(wanted["health"])
        if wanted["health"]
        else {},
        "session": PublishSession.objects.select_related("server", "key").in_bulk(wanted["session"])
        if wanted["session"]
        else {},
        "rejected": PublishReject.objects.select_related("server", "key").in_bulk(wanted["rejected"])
        if wanted["rejected"]
        else {},
    }
    events = []
    for at, kind, pk in rows:
        obj = objects["session" if kind in ("started", "stopped") else kind].get(pk)
        if obj is not None:  # deleted between the two queries
            events.append(FeedEvent(kind=kind, at=at, obj=obj))
    return events


# --- the alerts page -------------------------------------------------------------------------------------


class AlertListView(AlertPage):
    """Open alerts first (then those waiting for their grace period), the notice backlog, your
    subscriptions, the alert history (filtered by condition and server), and the "events now" feed.
    A fixed number of queries, however many alerts and events there are."""

    PER_PAGE = 50
    HISTORY_PER_PAGE = 50
    OPEN_LIMIT = 200

    def get(self, request: HttpRequest) -> HttpResponse:
        now = timezone.now()
        visible = Server.objects.visible_to(request.user)
        servers = list(visible.values_list("pk", "name"))
        known = {pk for pk, _name in servers}

        kind = request.GET.get("kind", "")
        kind = kind if kind in EVENT_KINDS else ""
        server_id = _server_param(request.GET.get("server", ""), known)
        condition = request.GET.get("condition", "")
        condition = condition if condition in Condition.values else ""
        alert_server = _server_param(request.GET.get("alert_server", ""), known)
        event_filters = {k: v for k, v in (("kind", kind), ("server", str(server_id or ""))) if v}
        history_filters = {k: v for k, v in (("condition", condition), ("alert_server", str(alert_server or ""))) if v}

        # open, then pending: the newest first in each
        active = list(
            Alert.objects.filter(state__in=ACTIVE_STATES, server__in=visible)
            .select_related("server", "acknowledged_by")
            .order_by(Case(When(state=Alert.State.OPEN, then=0), default=1, output_field=IntegerField()),
                      "-started_at", "-id")[: self.OPEN_LIMIT + 1]
        )  # fmt: skip
        more_active = len(active) > self.OPEN_LIMIT
        active = active[: self.OPEN_LIMIT]
        mutes = active_mutes(now) if active else {}
        back = request.get_full_path()
        operator = request_role(request) >= Role.OPERATOR
        for alert in active:
            alert.subject_label = subject_label(alert)  # type: ignore[attr-defined]
            alert.muted_until = muted_until(alert, mutes)  # type: ignore[attr-defined]
            if operator:
                alert.mute_form = quick_mute_form(alert, back)  # type: ignore[attr-defined]

        history_qs = Alert.objects.filter(state__in=ENDED_STATES, server__in=visible)
        if condition:
            history_qs = history_qs.filter(condition=condition)
        if alert_server is not None:
            history_qs = history_qs.filter(server_id=alert_server)
        history_qs = (
            history_qs.select_related("server", "acknowledged_by")
            .annotate(lasted=F("closed_at") - F("started_at"))
            .order_by("-started_at", "-id")
        )
        history = Paginator(history_qs, self.HISTORY_PER_PAGE).get_page(request.GET.get("hpage"))
        for alert in history.object_list:
            alert.subject_label = subject_label(alert)

        feed = event_feed([kind] if kind else list(EVENT_KINDS), server_id)
        page = Paginator(feed, self.PER_PAGE).get_page(request.GET.get("page"))
        keep_history = {**history_filters, **({"hpage": str(history.number)} if history.number > 1 else {})}
        keep_events = {**event_filters, **({"page": str(page.number)} if page.number > 1 else {})}
        context = {
            "subnav": subnav(request, "alert-list"),
            "open_alerts": [a for a in active if a.state == Alert.State.OPEN],
            "pending_alerts": [a for a in active if a.state == Alert.State.PENDING],
            "more_active": more_active,
            "open_limit": self.OPEN_LIMIT,
            "backlog": alerting.backlog(),
            "enabled_rules": AlertRule.objects.filter(enabled=True).count,  # counted only for the empty state
            "subscriptions": Subscription.objects.filter(user=self.user())
            .select_related("server", "application__server")
            .order_by("pk"),
            "history": history,
            "conditions": Condition.choices,
            "condition": condition,
            "condition_label": Condition(condition).label if condition else "",
            "alert_server": alert_server,
            "alert_server_name": dict(servers).get(alert_server or 0, ""),
            "history_filters": history_filters,
            "history_query": urlencode({**history_filters, **keep_events}),
            "history_clear": urlencode(keep_events),
            # "events now", as before
            "page": page,
            "events": load_events(page.object_list),
            "kinds": EVENT_KINDS,
            "kind": kind,
            "kind_label": EVENT_KINDS.get(kind, ""),
            "servers": servers,
            "server_id": server_id,
            "server_name": dict(servers).get(server_id or 0, ""),
            "filters": event_filters,
            "query_string": urlencode({**event_filters, **keep_history}),
            "events_clear": urlencode(keep_history),
        }
        return render(request, "frontend/alerts.html", context)


def delivery_target(delivery: Delivery, admin: bool) -> str:
    """Where a notice went: in full for admins (as the API shows deliveries), else without the address."""
    if delivery.kind == NotificationChannel.Kind.WEBHOOK:
        name = delivery.channel.name if delivery.channel else "deleted channel"
        if admin:
            return f"{name}: {delivery.target}"
        host = urlsplit(delivery.target).hostname or "?"
        return f"webhook {name} ({host})"
    if admin:
        return delivery.target
    return f"an address at {delivery.target.rpartition('@')[2]}"


class AlertDetailView(AlertPage):
    """One alert: what, where, since when, acknowledgement and mutes, and the log of its notices."""

    DELIVERIES = 200

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        alert = get_object_or_404(
            Alert.objects.filter(server__in=Server.objects.visible_to(request.user)).select_related(
                "server", "stream", "rule", "acknowledged_by"
            ),
            pk=pk,
        )
        now = timezone.now()
        admin = request_role(request) >= Role.ADMIN
        deliveries = list(alert.deliveries.select_related("channel").order_by("-created", "-id")[: self.DELIVERIES])
        for delivery in deliveries:
            delivery.target_label = delivery_target(delivery, admin)  # type: ignore[attr-defined]
        alert.subject_label = subject_label(alert)  # type: ignore[attr-defined]
        active = alert.state in ACTIVE_STATES
        mutes = active_mutes(now, [alert.server_id]) if active else {}
        alert.muted_until = muted_until(alert, mutes)  # type: ignore[attr-defined]
        if active and request_role(request) >= Role.OPERATOR:
            alert.mute_form = quick_mute_form(alert, request.get_full_path())  # type: ignore[attr-defined]
        context = {
            "subnav": subnav(request, ""),
            "alert": alert,
            "deliveries": deliveries,
            "n_deliveries": alert.deliveries.count() if len(deliveries) == self.DELIVERIES else len(deliveries),
            "open_seconds": ((alert.closed_at or now) - alert.started_at).total_seconds(),
        }
        return render(request, "frontend/alert_detail.html", context)


class AlertAcknowledgeView(AlertPage):
    """Operators: "I have seen it" (no more reminders)."""

    read_role = Role.OPERATOR
    write_role = Role.OPERATOR

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        alert = get_object_or_404(Alert, pk=pk)
        if alerting.acknowledge(alert, request.user):
            audit.record(self.actor(), "acknowledge", alert, message=alert.title)
            messages.success(request, f"Acknowledged “{alert.title}”: no more reminders for it.")
        elif alert.state == Alert.State.OPEN:
            messages.info(request, f"“{alert.title}” was acknowledged already.")
        else:
            messages.info(request, f"“{alert.title}” is {alert.get_state_display().lower()}: only an open alert "
                                   "can be acknowledged.")  # fmt: skip
        return redirect(next_url(request, reverse("alert-detail", args=[alert.pk])))


# --- mutes -----------------------------------------------------------------------------------------------


def mute_subjects(limit: int = 500) -> list[Any]:
    """The mute form's choices: every server, and the streams live now or with an active alert."""
    servers = [(f"server:{pk}", name) for pk, name in Server.objects.order_by("name").values_list("pk", "name")]
    alerting_streams = Alert.objects.filter(state__in=ACTIVE_STATES, stream__isnull=False).values("stream_id")
    streams = (
        Stream.objects.filter(Q(live=True) | Q(pk__in=alerting_streams))
        .select_related("server")
        .order_by("server__name", "app", "name")[:limit]
    )
    stream_choices = [(f"stream:{s.pk}", f"{s.app}/{s.name} on {s.server.name}") for s in streams]
    return [("", "— choose —"), ("Servers (all their streams)", servers),
            ("Streams (live or alerting)", stream_choices)]  # fmt: skip


class MuteListView(AlertPage):
    """Mutes in force and maintenance windows to come; operators add one or end one early."""

    write_role = Role.OPERATOR
    LIMIT = 500

    def get(self, request: HttpRequest) -> HttpResponse:
        initial: dict[str, Any] = {"duration": "1"}
        subject = request.GET.get("subject", "")
        if forms.MUTE_SUBJECT.fullmatch(subject):
            initial["subject"] = subject
        form = forms.MuteForm(subjects=mute_subjects(), initial=initial) if self._operator() else None
        return self._render(form)

    def post(self, request: HttpRequest) -> HttpResponse:
        form = forms.MuteForm(request.POST, subjects=mute_subjects())
        if not form.is_valid():
            return self._render(form, status=400)
        target = form.target
        mute = Mute(
            server=target if isinstance(target, Server) else None,
            stream=target if isinstance(target, Stream) else None,
            starts_at=form.cleaned_data["starts"], ends_at=form.cleaned_data["ends"],
            reason=form.cleaned_data["reason"], created_by=self.user(),
        )  # fmt: skip
        save_audited(mute, self.actor())
        zone = form.zone or timezone.get_current_timezone()
        ends = timezone.localtime(mute.ends_at, zone).strftime("%Y-%m-%d %H:%M")
        label = forms.subject_choices_of(target)[1] if target is not None else ""
        if mute.starts_at > timezone.now():
            starts = timezone.localtime(mute.starts_at, zone).strftime("%Y-%m-%d %H:%M")
            messages.success(request, f"Planned a maintenance window for {label}: {starts} to {ends} ({zone}).")
        else:
            messages.success(request, f"Muted {label} until {ends} ({zone}): no alerts and no reminders for it.")
        return redirect(next_url(request, reverse("alert-mutes")))

    def _operator(self) -> bool:
        return request_role(self.request) >= Role.OPERATOR

    def _render(self, form: forms.MuteForm | None, status: int = 200) -> HttpResponse:
        now = timezone.now()
        mutes = list(
            Mute.objects.filter(ends_at__gt=now)
            .select_related("server", "stream__server", "created_by")
            .order_by("starts_at", "pk")[: self.LIMIT]
        )
        context = {
            "subnav": subnav(self.request, "alert-mutes"),
            "sections": [
                ("active", "In force now", [m for m in mutes if m.starts_at <= now]),
                ("upcoming", "Maintenance windows to come", [m for m in mutes if m.starts_at > now]),
            ],
            "truncated": len(mutes) >= self.LIMIT,
            "limit": self.LIMIT,
            "form": form,
        }
        return render(self.request, "frontend/alert_mutes.html", context, status=status)


class MuteEndView(AlertPage):
    """Operators end a mute early, or cancel a maintenance window before it starts."""

    read_role = Role.OPERATOR
    write_role = Role.OPERATOR

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        mute = get_object_or_404(Mute.objects.select_related("server", "stream__server"), pk=pk)
        now = timezone.now()
        what = mute.server.name if mute.server else f"{mute.stream.app}/{mute.stream.name}" if mute.stream else "?"
        if mute.ends_at <= now:
            messages.info(request, f"The mute of {what} had already ended.")
        else:
            upcoming = mute.starts_at > now
            delete_audited(mute, self.actor(), message="cancelled before it started" if upcoming else "ended early")
            messages.success(request, f"Cancelled the maintenance window of {what}." if upcoming
                             else f"Ended the mute of {what}: its alerts and reminders go out again.")  # fmt: skip
        return redirect(next_url(request, reverse("alert-mutes")))


# --- rules (admins) --------------------------------------------------------------------------------------


class RuleListView(AlertPage):
    read_role = Role.ADMIN

    def get(self, request: HttpRequest) -> HttpResponse:
        rules = list(
            AlertRule.objects.select_related("server", "application__server", "key__application__server")
            .prefetch_related("channels")
            .annotate(n_active=Count("alerts", filter=Q(alerts__state__in=ACTIVE_STATES)))
            .order_by("condition", "name", "pk")
        )
        for rule in rules:
            rule.schedule_text = forms.format_schedule(rule.schedule)  # type: ignore[attr-defined]
        context = {"subnav": subnav(request, "alert-rules"), "rules": rules,
                   "has_channels": NotificationChannel.objects.exists()}  # fmt: skip
        return render(request, "frontend/alert_rules.html", context)


class RuleFormView(AlertPage):
    """Create or edit a rule (its channels saved and audited with it)."""

    read_role = Role.ADMIN

    def get(self, request: HttpRequest, pk: int | None = None) -> HttpResponse:
        rule = get_object_or_404(AlertRule, pk=pk) if pk else AlertRule()
        return self._render(forms.AlertRuleForm(instance=rule), rule)

    def post(self, request: HttpRequest, pk: int | None = None) -> HttpResponse:
        rule = get_object_or_404(AlertRule, pk=pk) if pk else AlertRule()
        form = forms.AlertRuleForm(request.POST, instance=rule)
        if form.is_valid():
            save_audited(form.instance, self.actor(), channels=form.cleaned_data["channels"])
            messages.success(request, f"Saved the rule “{form.instance.name}”.")
            return redirect("alert-rules")
        return self._render(form, rule, status=400)

    def _render(self, form: forms.AlertRuleForm, rule: AlertRule, status: int = 200) -> HttpResponse:
        context = {"subnav": subnav(self.request, "alert-rules"), "form": form, "rule": rule,
                   "title": f"Edit the rule “{rule.name}”" if rule.pk else "New alert rule"}  # fmt: skip
        return render(self.request, "frontend/alert_rule_form.html", context, status=status)


class RuleDeleteView(DeleteView):
    model = AlertRule

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        rule = self.target(pk)
        delete_audited(rule, self.actor())
        messages.success(request, f"Deleted the rule “{rule.name}”; its open alerts close at the next check.")
        return redirect("alert-rules")


# --- notification channels (admins) ----------------------------------------------------------------------


def new_secret() -> str:
    return secrets.token_urlsafe(32)


class ChannelListView(AlertPage):
    """Channels with their state; the form adds one or edits one; a webhook's secret is shown once."""

    read_role = Role.ADMIN

    def get(self, request: HttpRequest, pk: int | None = None) -> HttpResponse:
        channel = get_object_or_404(NotificationChannel, pk=pk) if pk else NotificationChannel()
        return self._render(forms.ChannelForm(instance=channel), channel)

    def post(self, request: HttpRequest, pk: int | None = None) -> HttpResponse:
        channel = get_object_or_404(NotificationChannel, pk=pk) if pk else NotificationChannel()
        was_enabled = channel.enabled
        form = forms.ChannelForm(request.POST, instance=channel)
        if not form.is_valid():
            return self._render(form, channel, status=400)
        secret = ""
        if channel.kind == NotificationChannel.Kind.WEBHOOK and not channel.secret:
            channel.secret = secret = new_secret()
        if channel.enabled and not was_enabled:
            channel.consecutive_failures, channel.disabled_reason = 0, ""
        save_audited(channel, self.actor())
        if secret:
            _show_once(request, "channel", channel.pk, secret)
        messages.success(request, f"Saved the channel “{channel.name}”.")
        return redirect("alert-channels")

    def _render(self, form: forms.ChannelForm, editing: NotificationChannel, status: int = 200,
                test_form: forms.TestAddressForm | None = None) -> HttpResponse:  # fmt: skip
        request = self.request
        once = request.session.get(ONCE_SESSION_KEY)
        if isinstance(once, dict) and once.get("kind") == "channel":
            once = _pop_once(request, "channel", once.get("id"))  # type: ignore[arg-type]
        else:
            once = None
        channels = list(NotificationChannel.objects.annotate(n_rules=Count("rules")).order_by("name"))
        if once:
            once["channel"] = next((c for c in channels if c.pk == once["id"]), None)
        context = {
            "subnav": subnav(request, "alert-channels"),
            "channels": channels,
            "form": form,
            "editing": editing if editing.pk else None,
            "test_form": test_form or forms.TestAddressForm(),
            "once": once,
            "signature_header": alerting.SIGNATURE_HEADER,
        }
        response = render(request, "frontend/alert_channels.html", context, status=status)
        if once:
            response["Cache-Control"] = "no-store"
        return response


def test_send(channel: NotificationChannel | None, email: str, actor: audit.Actor) -> tuple[bool, str]:
    """Queue a test notice (audited), then send it at once: (sent, what to tell the admin)."""
    try:
        with transaction.atomic():
            delivery = alerting.queue_test(channel=channel, email=email)
            audit.record(actor, "test", channel or delivery, object_type="" if channel else "monitoring.delivery",
                         message=f"test notice {delivery.pk} to {delivery.target}")  # fmt: skip
    except ValueError as exc:
        return False, str(exc)
    where = f"“{channel.name}”" if channel is not None and channel.kind == NotificationChannel.Kind.WEBHOOK else (
        delivery.target)  # fmt: skip
    error = ""
    try:
        alerting.send_now(delivery)
    except Exception as exc:  # never a 500: the notice stays queued and the worker retries it
        log.exception("test notice %s raised", delivery.pk)
        error = f"{type(exc).__name__}: {exc}"[:500]
    delivery.refresh_from_db()
    if delivery.status == Delivery.Status.SENT:
        code = f"HTTP {delivery.last_status_code}, " if delivery.kind == NotificationChannel.Kind.WEBHOOK else ""
        latency = f"{delivery.latency_ms:.0f} ms" if delivery.latency_ms is not None else "sent"
        return True, f"Test notice sent to {where} ({code}{latency})."
    last_error = delivery.last_error or error or "unknown error"
    if delivery.status == Delivery.Status.FAILED:
        return False, f"The test notice to {where} failed and is not retried: {last_error}"
    return False, (f"The test notice to {where} failed: {last_error}. It stays queued and Tally retries it in the "
                   f"background (attempt {delivery.attempts} so far).")  # fmt: skip


class ChannelTestView(AlertPage):
    """ "Send test": one test notice to the channel (its first address, or the webhook), now."""

    read_role = Role.ADMIN

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        channel = get_object_or_404(NotificationChannel, pk=pk)
        sent, text = test_send(channel, "", self.actor())
        messages.add_message(request, messages.SUCCESS if sent else messages.ERROR, text)
        return redirect("alert-channels")


class TestAddressView(ChannelListView):
    """ "Test an address": one test e-mail to the address given."""

    def get(self, request: HttpRequest, pk: int | None = None) -> HttpResponse:
        return redirect("alert-channels")

    def post(self, request: HttpRequest, pk: int | None = None) -> HttpResponse:
        test_form = forms.TestAddressForm(request.POST)
        if not test_form.is_valid():
            empty = NotificationChannel()
            return self._render(forms.ChannelForm(instance=empty), empty, status=400, test_form=test_form)
        sent, text = test_send(None, test_form.cleaned_data["email"], self.actor())
        messages.add_message(request, messages.SUCCESS if sent else messages.ERROR, text)
        return redirect("alert-channels")


class ChannelRotateView(AlertPage):
    """A new signing secret for a webhook, shown once; the old one stops working now."""

    read_role = Role.ADMIN

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        channel = get_object_or_404(NotificationChannel, pk=pk)
        if channel.kind != NotificationChannel.Kind.WEBHOOK:
            messages.error(request, "Only webhook channels have a secret.")
            return redirect("alert-channels")
        channel.secret = secret = new_secret()
        save_audited(channel, self.actor(), message="webhook secret rotated")
        _show_once(request, "channel", channel.pk, secret, action="rotate")
        return redirect("alert-channels")


class ChannelEnableView(AlertPage):
    """Enable a channel again (a webhook disabled after permanent failures): its failure count restarts."""

    read_role = Role.ADMIN

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        channel = get_object_or_404(NotificationChannel, pk=pk)
        channel.enabled, channel.consecutive_failures, channel.disabled_reason = True, 0, ""
        save_audited(channel, self.actor(), message="enabled again")
        messages.success(request, f"Enabled “{channel.name}” again. Send a test to check it works.")
        return redirect("alert-channels")


class ChannelDeleteView(DeleteView):
    model = NotificationChannel

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        channel = self.target(pk)
        rules = channel.rules.count()
        delete_audited(channel, self.actor(), message=f"removed from {rules} rule(s)" if rules else "")
        messages.success(request, f"Deleted the channel “{channel.name}”" + (f" (it was used by {rules} rule(s))."
                                                                             if rules else "."))  # fmt: skip
        return redirect("alert-channels")


# --- subscriptions ---------------------------------------------------------------------------------------


class SubscribeView(AlertPage):
    """Anyone with a role: subscribe themselves to a server's or an application's alert e-mails, or stop."""

    write_role = Role.VIEWER

    def post(self, request: HttpRequest) -> HttpResponse:
        back = next_url(request, reverse("alert-list"))
        form = forms.SubscribeForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Choose a server or an application to subscribe to.")
            return redirect(back)
        server, application = form.cleaned_data["server"], form.cleaned_data["application"]
        what = f"server {server.name}" if server else f"application {application}"
        user = self.user()
        with transaction.atomic():
            # One subscription per subject: the database cannot tell (NULL columns), so a user's changes are
            # serialized on their user row.
            get_user_model().objects.select_for_update().filter(pk=user.pk).first()
            existing = list(Subscription.objects.filter(user=user, server=server, application=application))
            if form.cleaned_data["action"] == "unsubscribe":
                for subscription in existing:
                    audit.delete_audited(subscription, self.actor())
                if existing:
                    messages.success(request, f"You no longer get the alert e-mails of {what}.")
                else:
                    messages.info(request, f"You were not subscribed to {what}.")
                return redirect(back)
            if existing:
                messages.info(request, f"You are already subscribed to {what}.")
                return redirect(back)
            try:
                audit.save_audited(Subscription(user=user, server=server, application=application), self.actor())
            except ValidationError:  # subscribed meanwhile (the database has one per user and subject)
                messages.info(request, f"You are already subscribed to {what}.")
                return redirect(back)
        if user.email:
            messages.success(request, f"Subscribed: the alert e-mails of {what} go to {user.email}.")
        else:
            messages.warning(request, f"Subscribed to {what}, but your account has no e-mail address: ask an admin "
                                      "to add one (Users page), or nothing reaches you.")  # fmt: skip
        return redirect(back)
