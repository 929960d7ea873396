"""Alerts: watch conditions, open and close alerts without noise, and store every notice before sending it.

Flow: a condition on a subject (a server, or a stream ``server/app/name``) becomes a *pending* alert; if
it still holds after the rule's ``duration_s`` (a dropped stream's grace period) the alert *opens* and
its notices (``Delivery`` rows, one per e-mail address or webhook) are written in the same transaction;
when the condition ends the alert *closes* with a recovery notice, or is *cancelled* if it was still
pending. ``evaluate`` runs every ``TALLY_ALERT_TICK_S``; ``send_due`` sends what is due, at least once.

Noise control: one pending/open alert per (condition, subject) (a unique index); a stream dropping more
than ``UNSTABLE_AFTER`` times in ``DROP_WINDOW`` gets one "unstable" alert instead; reminders at doubling
intervals until acknowledged; mutes and maintenance windows; no drop alert for a kick, a revoke or a
key refused at ``on_update`` (an admin's doing), and none while ``/stat`` only lost a stream to a reload
(``monitoring.state`` keeps such streams live through the reload grace).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import statistics
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.utils import timezone

from monitoring import live
from monitoring.models import (
    Alert,
    AlertRule,
    Condition,
    Delivery,
    Health,
    Mute,
    NotificationChannel,
    ServerStatus,
    Stream,
    StreamRollup,
    Subscription,
)
from streams.models import PublishSession, Server

log = logging.getLogger(__name__)

DROP_WINDOW = timedelta(minutes=10)
UNSTABLE_AFTER = 3  # more drops than this within DROP_WINDOW: one "unstable" alert instead
MEDIAN_MINUTES = 10  # low bitrate "below X % of its own median": the median of this many minutes
MIN_MEDIAN_MINUTES = 3  # ... once at least this many minutes are known
REMIND_MAX = timedelta(hours=24)
SEND_BATCH = 50
WEBHOOK_TIMEOUT_S = 10.0
SIGNATURE_HEADER = "X-Tally-Signature"
# Session ends that are someone's decision, not a failure: no "stream dropped" alert.
DELIBERATE_ENDS = {PublishSession.EndReason.KICKED, PublishSession.EndReason.REVOKED,
                   PublishSession.EndReason.REFUSED_UPDATE}  # fmt: skip
STREAM_CONDITIONS = (Condition.LOW_BITRATE, Condition.NO_VIDEO)


# --- subjects and rules ----------------------------------------------------------------------------------


def stream_subject(server_id: int, app: str, name: str) -> str:
    return f"stream:{server_id}:{app}/{name}"


def server_subject(server_id: int) -> str:
    return f"server:{server_id}"


def parse_stream_subject(subject: str) -> tuple[int, str, str]:
    """(server id, app, name) of a ``stream:`` subject (application names hold no ``/``)."""
    _, server_id, rest = subject.split(":", 2)
    app, _, name = rest.partition("/")
    return int(server_id), app, name


class Rules:
    """The enabled rules, loaded once per evaluation; the most specific rule of a condition applies."""

    def __init__(self) -> None:
        self.rules = list(
            AlertRule.objects.filter(enabled=True).select_related("application", "key__application").order_by("pk")
        )

    def of(self, condition: str) -> list[AlertRule]:
        return [rule for rule in self.rules if rule.condition == condition]

    def for_stream(self, condition: str, server_id: int, app: str, name: str) -> AlertRule | None:
        best, best_rank = None, -1
        for rule in self.of(condition):
            if rule.key is not None:
                key_app = rule.key.application
                rank, match = 3, (key_app.server_id, key_app.name, rule.key.public_name) == (server_id, app, name)
            elif rule.application is not None:
                rank, match = 2, (rule.application.server_id, rule.application.name) == (server_id, app)
            elif rule.server_id:
                rank, match = 1, rule.server_id == server_id
            else:
                rank, match = 0, True
            if match and rank > best_rank:
                best, best_rank = rule, rank
        return best

    def for_server(self, condition: str, server_id: int) -> AlertRule | None:
        scoped = [r for r in self.of(condition) if not r.key_id and not r.application_id]
        return next((r for r in scoped if r.server_id == server_id), None) or next(
            (r for r in scoped if r.server_id is None), None
        )


class Mutes:
    """The mutes and maintenance windows in force at ``now``."""

    def __init__(self, now: datetime) -> None:
        active = Mute.objects.filter(starts_at__lte=now, ends_at__gt=now).values_list("server_id", "stream_id")
        self.servers = {server for server, _ in active if server}
        self.streams = {stream for _, stream in active if stream}

    def covers(self, server_id: int, stream_id: int | None = None) -> bool:
        return server_id in self.servers or (stream_id is not None and stream_id in self.streams)


# --- state changes ---------------------------------------------------------------------------------------


def _create(**fields: Any) -> Alert | None:
    """Insert an alert; ``None`` when another pending/open one holds its (condition, subject) already."""
    try:
        with transaction.atomic():
            return Alert.objects.create(**fields)
    except IntegrityError:
        return None


def _open(alert: Alert, now: datetime) -> None:
    """pending -> open, with its notices stored in the same transaction."""
    with transaction.atomic():
        claimed = Alert.objects.filter(pk=alert.pk, state=Alert.State.PENDING).update(
            state=Alert.State.OPEN, opened_at=now, next_reminder_at=now + timedelta(seconds=settings.ALERT_REMIND_S)
        )
        if not claimed:
            return
        alert.state, alert.opened_at = Alert.State.OPEN, now
        queue_notices(alert, Delivery.Event.OPENED, now)
    live.publish(live.FLEET_GROUP, "alert.opened", _alert_message(alert))


def _end(alert: Alert, now: datetime, reason: str) -> None:
    """pending -> cancelled (quietly), or open -> closed with a recovery notice."""
    with transaction.atomic():
        was_open = alert.state == Alert.State.OPEN
        state = Alert.State.CLOSED if was_open else Alert.State.CANCELLED
        claimed = Alert.objects.filter(pk=alert.pk, state=alert.state).update(
            state=state, closed_at=now, close_reason=reason[:200], next_reminder_at=None
        )
        if not claimed:
            return
        alert.state, alert.closed_at, alert.close_reason = state, now, reason[:200]
        if was_open:
            queue_notices(alert, Delivery.Event.RECOVERED, now)
    if was_open:
        live.publish(live.FLEET_GROUP, "alert.closed", _alert_message(alert))


def _alert_message(alert: Alert) -> dict[str, Any]:
    return {"alert": alert.pk, "condition": alert.condition, "state": alert.state, "server": alert.server_id,
            "stream": alert.stream_id, "title": alert.title}  # fmt: skip


def acknowledge(alert: Alert, user: Any, now: datetime | None = None) -> bool:
    """An operator has seen it: no more reminders. False when it was not open or already acknowledged."""
    now = now or timezone.now()
    done = Alert.objects.filter(pk=alert.pk, state=Alert.State.OPEN, acknowledged_at__isnull=True).update(
        acknowledged_at=now, acknowledged_by=user, next_reminder_at=None
    )
    if done:
        alert.refresh_from_db()
        live.publish(live.FLEET_GROUP, "alert.acknowledged", _alert_message(alert))
    return bool(done)


# --- stream drops (events) -------------------------------------------------------------------------------


def stream_dropped(server_id: int, app: str, name: str, at: datetime, reason: str = "") -> Alert | None:
    """A live stream stopped (a ``publish_done`` callback, or polls no longer show it). Returns the alert
    it started (pending for the grace period, or an open "unstable" one), or ``None``."""
    if reason in DELIBERATE_ENDS:
        return None
    rules = Rules()
    rule = rules.for_stream(Condition.STREAM_DROPPED, server_id, app, name)
    stream = Stream.objects.filter(server_id=server_id, app=app, name=name).first()
    if rule is None or Mutes(at).covers(server_id, stream.pk if stream else None):
        return None
    subject = stream_subject(server_id, app, name)
    label = f"{app}/{name}"
    server_name = Server.objects.filter(pk=server_id).values_list("name", flat=True).first() or f"#{server_id}"
    earlier = Alert.objects.filter(condition=Condition.STREAM_DROPPED, subject=subject,
                                   state__in=[Alert.State.PENDING, Alert.State.OPEN]).first()  # fmt: skip
    if earlier is not None:
        if not _back_since(server_id, app, name, stream, earlier.started_at):
            return None  # the same drop, reported by the callback and by a poll
        _end(earlier, at, "back live")  # it came back and dropped again before a tick saw it
    drops = Alert.objects.filter(condition=Condition.STREAM_DROPPED, subject=subject, started_at__gte=at - DROP_WINDOW)
    common = {"rule": rule, "subject": subject, "server_id": server_id, "stream": stream, "started_at": at}
    if drops.count() >= UNSTABLE_AFTER:
        # Counted (a cancelled record keeps the tally), but told once, as "unstable".
        Alert.objects.create(condition=Condition.STREAM_DROPPED, title=f"Stream dropped: {label} on {server_name}",
                             state=Alert.State.CANCELLED, closed_at=at, close_reason="counted into 'unstable'",
                             **common)  # fmt: skip
        unstable = _create(
            condition=Condition.STREAM_UNSTABLE, title=f"Stream unstable: {label} on {server_name}",
            detail=f"{label} dropped {drops.count()} times within {DROP_WINDOW.seconds // 60} minutes.",
            due_at=at, **common,
        )  # fmt: skip
        if unstable is not None:
            _open(unstable, at)
        return unstable
    why = f" ({PublishSession.EndReason(reason).label.lower()})" if reason in PublishSession.EndReason.values else ""
    return _create(
        condition=Condition.STREAM_DROPPED, title=f"Stream dropped: {label} on {server_name}",
        detail=f"{label} stopped publishing{why} and was not back within {rule.duration_s} s.",
        due_at=at + timedelta(seconds=rule.duration_s), **common,
    )  # fmt: skip


def _back_since(server_id: int, app: str, name: str, stream: Stream | None, since: datetime) -> bool:
    """Did the stream start publishing again after ``since`` (a new callback session, or polls)?"""
    if stream is not None and stream.live_since is not None and stream.live_since > since:
        return True
    return PublishSession.objects.filter(
        server_id=server_id, app_name=app, public_name=name, started__gt=since
    ).exists()


def on_publish_stopped(sender: Any, session: PublishSession, **kwargs: Any) -> None:
    """``streams.events.publish_stopped`` receiver: a callback ended a session. A drop, unless another
    session of the same name still publishes."""
    still = PublishSession.objects.filter(
        server_id=session.server_id, app_name=session.app_name, public_name=session.public_name, ended__isnull=True
    )
    if not still.exists():
        stream_dropped(session.server_id, session.app_name, session.public_name, session.ended or timezone.now(),
                       session.end_reason)  # fmt: skip


def _is_live(server_id: int, app: str, name: str) -> bool:
    """Live by the polls or by an open callback session."""
    return (
        Stream.objects.filter(server_id=server_id, app=app, name=name, live=True).exists()
        or PublishSession.objects.filter(
            server_id=server_id, app_name=app, public_name=name, ended__isnull=True
        ).exists()
    )


# --- config deploys --------------------------------------------------------------------------------------

DEPLOY_MUTE_EXTRA_S = 15  # after the reload grace: polls must have seen the new worker settle


def on_config_deployed(sender: Any, server: Server, revision: Any, **kwargs: Any) -> None:
    """``streams.deploys.config_deployed`` receiver. A reload is a window without drop alerts (streams move
    to the new worker or reconnect); a deploy rolled back or failed on the host is an alert, closed by
    the next good deploy. Its notices go where the server's "server down" rule sends them."""
    now = timezone.now()
    subject = server_subject(server.pk)
    active = Alert.objects.filter(condition=Condition.DEPLOY_FAILED, subject=subject,
                                  state__in=[Alert.State.PENDING, Alert.State.OPEN]).first()  # fmt: skip
    if revision.status in ("applied", "rollback"):
        window = settings.RELOAD_GRACE_S + DEPLOY_MUTE_EXTRA_S
        if revision.mode == "reconnect":
            window += server.reconnect_delay_s
        Mute.objects.create(server=server, starts_at=now, ends_at=now + timedelta(seconds=window),
                            reason=f"config reload (revision {revision.number})")  # fmt: skip
        if active is not None:
            _end(active, now, f"revision {revision.number} deployed")
        return
    if revision.status not in ("rolled_back", "failed") or active is not None:
        return
    what = "rolled back: nginx was unhealthy after the reload" if revision.status == "rolled_back" else "failed"
    alert = _create(condition=Condition.DEPLOY_FAILED, subject=subject, server=server, started_at=now, due_at=now,
                    rule=Rules().for_server(Condition.SERVER_DOWN, server.pk),
                    title=f"Config deploy failed: {server.name}",
                    detail=f"Revision {revision.number} {what}. {revision.output[:500]}")  # fmt: skip
    if alert is not None:
        _open(alert, now)


# --- evaluation (every tick) -----------------------------------------------------------------------------


@dataclass
class Evaluation:
    opened: list[int] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)
    reminders: int = 0


def evaluate(now: datetime | None = None) -> Evaluation:
    """One pass over every condition: open what is due, close what recovered, remind what is open."""
    now = now or timezone.now()
    result = Evaluation()
    rules, mutes = Rules(), Mutes(now)
    active = {
        (a.condition, a.subject): a for a in Alert.objects.filter(state__in=[Alert.State.PENDING, Alert.State.OPEN])
    }
    _drops(active, mutes, now, result)
    _servers(rules, mutes, active, now, result)
    if any(rules.of(c) for c in STREAM_CONDITIONS):
        _stream_figures(rules, mutes, active, now, result)
    if rules.of(Condition.EXPECTED_LIVE):
        _expected_live(rules, mutes, active, now, result)
    _reminders(mutes, now, result)
    return result


def _drops(active: dict[tuple[str, str], Alert], mutes: Mutes, now: datetime, result: Evaluation) -> None:
    """Dropped streams: open when the grace period passed, cancel or close when back; "unstable" closes
    after DROP_WINDOW without a drop."""
    for (condition, subject), alert in active.items():
        if condition == Condition.STREAM_DROPPED:
            back = _is_live(*parse_stream_subject(subject))
            if back:
                _end(alert, now, "back live")
                if alert.state == Alert.State.CLOSED:
                    result.closed.append(alert.pk)
            elif alert.state == Alert.State.PENDING and alert.due_at and alert.due_at <= now:
                if mutes.covers(alert.server_id, alert.stream_id):
                    _end(alert, now, "muted")
                else:
                    _open(alert, now)
                    result.opened.append(alert.pk)
        elif condition == Condition.STREAM_UNSTABLE:
            recent = Alert.objects.filter(
                condition=Condition.STREAM_DROPPED, subject=subject, started_at__gte=now - DROP_WINDOW
            )
            if not recent.exists():
                _end(alert, now, f"no drop for {DROP_WINDOW.seconds // 60} minutes")
                result.closed.append(alert.pk)


def _hold(
    condition: str, subject: str, holds: bool, rule: AlertRule | None, muted: bool, now: datetime,
    active: dict[tuple[str, str], Alert], result: Evaluation, **fields: Any,
) -> None:  # fmt: skip
    """The state machine of a condition evaluated each tick: pending while it holds for less than the
    rule's duration, then open; cancelled or closed when it stops holding (or its rule is gone)."""
    alert = active.get((condition, subject))
    if alert is None:
        if holds and rule is not None and not muted:
            alert = _create(condition=condition, subject=subject, rule=rule, started_at=now,
                            due_at=now + timedelta(seconds=rule.duration_s), **fields)  # fmt: skip
            if alert is not None and rule.duration_s == 0:
                _open(alert, now)
                result.opened.append(alert.pk)
        return
    if not holds or rule is None:
        _end(alert, now, "recovered" if not holds else "rule removed")
        if alert.state == Alert.State.CLOSED:
            result.closed.append(alert.pk)
    elif alert.state == Alert.State.PENDING and alert.due_at and alert.due_at <= now and not muted:
        _open(alert, now)
        result.opened.append(alert.pk)


def _servers(rules: Rules, mutes: Mutes, active: dict[tuple[str, str], Alert], now: datetime,
             result: Evaluation) -> None:  # fmt: skip
    """Server down / recovered, from the poll health hysteresis (down after N failed polls, up after M)."""
    watched = {k[1] for k in active if k[0] == Condition.SERVER_DOWN}
    statuses = ServerStatus.objects.filter(Q(health=Health.DOWN, server__enabled=True) | Q(
        server_id__in=[int(s.split(":")[1]) for s in watched])).select_related("server")  # fmt: skip
    for status in statuses:
        subject = server_subject(status.server_id)
        down = status.health == Health.DOWN and status.server.enabled
        recovered = status.health == Health.UP or not status.server.enabled
        if not down and not recovered:
            continue  # degraded after down: still failing, not back yet
        _hold(Condition.SERVER_DOWN, subject, down, rules.for_server(Condition.SERVER_DOWN, status.server_id),
              mutes.covers(status.server_id), now, active, result, server_id=status.server_id,
              title=f"Server down: {status.server.name}",
              detail=f"{status.server.name} failed its last polls: {status.last_error or 'no answer'}.")  # fmt: skip
    for subject in watched:  # alerts of servers deleted meanwhile
        if not any(server_subject(s.server_id) == subject for s in statuses):
            alert = active[(Condition.SERVER_DOWN, subject)]
            _end(alert, now, "server removed")


def _stream_figures(rules: Rules, mutes: Mutes, active: dict[tuple[str, str], Alert], now: datetime,
                    result: Evaluation) -> None:  # fmt: skip
    """Low bitrate and no video on live streams (and closing them when the stream is gone)."""
    streams = list(Stream.objects.filter(live=True).select_related("server"))
    medians = _medians([s.pk for s in streams], now) if rules.of(Condition.LOW_BITRATE) else {}
    seen: set[tuple[str, str]] = set()
    for stream in streams:
        subject = stream_subject(stream.server_id, stream.app, stream.name)
        latest = stream.latest or {}
        label = f"{stream.app}/{stream.name} on {stream.server.name}"
        for condition in STREAM_CONDITIONS:
            rule = rules.for_stream(condition, stream.server_id, stream.app, stream.name)
            if rule is None and (condition, subject) not in active:
                continue
            seen.add((condition, subject))
            if condition == Condition.NO_VIDEO:
                holds, title = latest.get("fps") == 0, f"No video: {label}"
                detail = "The stream has sent no video frames (0 fps)."
            else:
                holds, detail = _low_bitrate(rule, latest.get("bitrate_in_kbps"), medians.get(stream.pk))
                title = f"Low bitrate: {label}"
            _hold(condition, subject, holds, rule, mutes.covers(stream.server_id, stream.pk), now, active, result,
                  server_id=stream.server_id, stream=stream, title=title, detail=detail)  # fmt: skip
    for key, alert in active.items():
        if key[0] in STREAM_CONDITIONS and key not in seen:
            _end(alert, now, "stream ended")


def _low_bitrate(rule: AlertRule | None, kbps: Any, median: float | None) -> tuple[bool, str]:
    if rule is None or not isinstance(kbps, int | float):
        return False, ""
    if rule.threshold_kbps is not None and kbps < rule.threshold_kbps:
        return True, f"Input bitrate {kbps:.0f} kbps is below {rule.threshold_kbps:.0f} kbps."
    if rule.threshold_pct is not None and median and kbps < median * rule.threshold_pct / 100:
        return True, (f"Input bitrate {kbps:.0f} kbps is below {rule.threshold_pct:.0f} % of its median "
                      f"of the last {MEDIAN_MINUTES} minutes ({median:.0f} kbps).")  # fmt: skip
    return False, ""


def _medians(stream_ids: list[int], now: datetime) -> dict[int, float]:
    """Each stream's median input bitrate over its last MEDIAN_MINUTES one-minute averages."""
    rows = StreamRollup.objects.filter(
        stream_id__in=stream_ids, minute__gte=now - timedelta(minutes=MEDIAN_MINUTES), bitrate_in_avg__isnull=False
    ).values_list("stream_id", "bitrate_in_avg")
    values: dict[int, list[float]] = {}
    for stream_id, kbps in rows:
        if kbps is not None:
            values.setdefault(stream_id, []).append(kbps)
    return {sid: statistics.median(v) for sid, v in values.items() if len(v) >= MIN_MEDIAN_MINUTES}


def in_schedule(schedule: Iterable[dict[str, Any]], now: datetime) -> bool:
    """Is ``now`` (UTC) inside one of the weekly windows? An empty schedule means always."""
    windows = list(schedule or [])
    if not windows:
        return True
    moment = now.astimezone(UTC)
    clock = moment.strftime("%H:%M")
    return any(moment.weekday() in w.get("days", range(7)) and w["start"] <= clock < w["end"] for w in windows)


def _expected_live(rules: Rules, mutes: Mutes, active: dict[tuple[str, str], Alert], now: datetime,
                   result: Evaluation) -> None:  # fmt: skip
    """A publish key marked "expected live" whose stream is not live inside its schedule."""
    for rule in rules.of(Condition.EXPECTED_LIVE):
        key = rule.key
        if key is None:
            continue
        app = key.application
        subject = stream_subject(app.server_id, app.name, key.public_name)
        stream = Stream.objects.filter(server_id=app.server_id, app=app.name, name=key.public_name).first()
        holds = in_schedule(rule.schedule, now) and not _is_live(app.server_id, app.name, key.public_name)
        _hold(Condition.EXPECTED_LIVE, subject, holds, rule, mutes.covers(app.server_id, stream.pk if stream else None),
              now, active, result, server_id=app.server_id, stream=stream,
              title=f"Expected live, not live: {app.name}/{key.public_name}",
              detail=f"{key.label or key.public_name} should be publishing now and is not.")  # fmt: skip


def _reminders(mutes: Mutes, now: datetime, result: Evaluation) -> None:
    """Open, unacknowledged alerts get reminders at doubling intervals (not while muted)."""
    due = Alert.objects.filter(state=Alert.State.OPEN, acknowledged_at__isnull=True, next_reminder_at__lte=now)
    for alert in due:
        if mutes.covers(alert.server_id, alert.stream_id):
            continue
        wait = min(timedelta(seconds=settings.ALERT_REMIND_S * 2 ** (alert.reminders_sent + 1)), REMIND_MAX)
        with transaction.atomic():
            if Alert.objects.filter(pk=alert.pk, next_reminder_at=alert.next_reminder_at).update(
                reminders_sent=F("reminders_sent") + 1, next_reminder_at=now + wait
            ):
                queue_notices(alert, Delivery.Event.REMINDER, now)
                result.reminders += 1


# --- notices ---------------------------------------------------------------------------------------------


def recipients(alert: Alert) -> tuple[set[str], list[NotificationChannel]]:
    """(e-mail addresses, webhook channels) of an alert: its rule's addresses and channels, the users
    subscribed to its server or application, and TALLY_ALERT_EMAILS."""
    emails = set(settings.ALERT_EMAILS)
    webhooks: list[NotificationChannel] = []
    rule = alert.rule
    if rule is not None:
        emails.update(rule.emails or [])
        for channel in rule.channels.filter(enabled=True):
            if channel.kind == NotificationChannel.Kind.EMAIL:
                emails.update(channel.emails or [])
            else:
                webhooks.append(channel)
    app = parse_stream_subject(alert.subject)[1] if alert.subject.startswith("stream:") else None
    subscribed = Subscription.objects.filter(
        Q(server_id=alert.server_id) | Q(application__server_id=alert.server_id, application__name=app)
    ).values_list("user__email", flat=True)
    emails.update(address for address in subscribed if address)
    return emails, webhooks


def notice_payload(alert: Alert | None, event: str, key: uuid.UUID, now: datetime) -> dict[str, Any]:
    """The JSON a webhook receives (and what an e-mail is written from). ``id`` is the idempotency key:
    a notice sent twice (at least once) carries the same one."""
    data: dict[str, Any] = {"id": str(key), "event": f"alert.{event}", "sent_at": now.isoformat()}
    if alert is None:
        data["alert"] = None
        return data
    stream = None
    if alert.subject.startswith("stream:"):
        _, app, name = parse_stream_subject(alert.subject)
        stream = {"id": alert.stream_id, "app": app, "name": name}
    iso = lambda value: value.isoformat() if value else None  # noqa: E731
    data["alert"] = {
        "id": alert.pk, "condition": alert.condition, "state": alert.state, "title": alert.title,
        "detail": alert.detail, "subject": alert.subject,
        "server": {"id": alert.server_id, "name": alert.server.name}, "stream": stream,
        "started_at": iso(alert.started_at), "opened_at": iso(alert.opened_at), "closed_at": iso(alert.closed_at),
        "close_reason": alert.close_reason or None, "acknowledged": alert.acknowledged_at is not None,
        "url": f"{settings.CONSOLE_URL}/alerts/{alert.pk}/",
    }  # fmt: skip
    return data


def queue_notices(alert: Alert, event: str, now: datetime) -> list[Delivery]:
    """Store one notice per recipient (call inside the transaction that changes the alert)."""
    emails, webhooks = recipients(alert)
    targets: list[tuple[str, str, NotificationChannel | None]] = [
        (NotificationChannel.Kind.EMAIL, address, None) for address in sorted(emails)
    ]
    targets += [(NotificationChannel.Kind.WEBHOOK, channel.url, channel) for channel in webhooks]
    deliveries = []
    for kind, target, channel in targets:
        key = uuid.uuid4()
        deliveries.append(Delivery(alert=alert, channel=channel, kind=kind, target=target, event=event,
                                   idempotency_key=key, payload=notice_payload(alert, event, key, now),
                                   next_attempt_at=now, created=now))  # fmt: skip
    return Delivery.objects.bulk_create(deliveries)


def queue_test(channel: NotificationChannel | None = None, email: str = "", now: datetime | None = None) -> Delivery:
    """A "test send" notice to a channel (its first address, or the webhook) or to one address."""
    now = now or timezone.now()
    key = uuid.uuid4()
    if channel is not None and channel.kind == NotificationChannel.Kind.WEBHOOK:
        kind, target = NotificationChannel.Kind.WEBHOOK, channel.url
    else:
        kind, target = (
            NotificationChannel.Kind.EMAIL,
            email or (channel.emails[0] if channel and channel.emails else ""),
        )
    if not target:
        raise ValueError("Nothing to send a test to: give an e-mail address or a channel with one.")
    return Delivery.objects.create(kind=kind, target=target, channel=channel, event=Delivery.Event.TEST,
                                   idempotency_key=key, payload=notice_payload(None, "test", key, now),
                                   next_attempt_at=now, created=now)  # fmt: skip


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Tally-Signature`` value ``t=<timestamp>,v1=<hex>``: HMAC-SHA256 with the channel's secret
    over ``"<timestamp>." + body``."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def send_due(now: datetime | None = None, limit: int = SEND_BATCH) -> int:
    """Claim and send the notices that are due (and those whose claim expired: their worker died).
    Returns how many were sent."""
    now = now or timezone.now()
    sent = 0
    for delivery in _claim(now, limit):
        sent += _send(delivery, now)
    return sent


def send_now(delivery: Delivery) -> bool:
    """Send one notice at once (test sends); it stays queued for retries if this attempt fails."""
    now = timezone.now()
    claimed = Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.PENDING).update(
        status=Delivery.Status.SENDING, claimed_until=now + timedelta(seconds=settings.DELIVERY_LEASE_S),
        attempts=F("attempts") + 1,
    )  # fmt: skip
    if not claimed:
        return False
    delivery.refresh_from_db()
    return bool(_send(delivery, now))


def _claim(now: datetime, limit: int) -> list[Delivery]:
    due = Q(status=Delivery.Status.PENDING, next_attempt_at__lte=now) | Q(
        status=Delivery.Status.SENDING, claimed_until__lt=now
    )
    with transaction.atomic():
        rows = Delivery.objects.filter(due).order_by("next_attempt_at")
        if connection.features.has_select_for_update_skip_locked:
            rows = rows.select_for_update(skip_locked=True)
        ids = list(rows.values_list("pk", flat=True)[:limit])
        Delivery.objects.filter(pk__in=ids).update(
            status=Delivery.Status.SENDING, claimed_until=now + timedelta(seconds=settings.DELIVERY_LEASE_S),
            attempts=F("attempts") + 1,
        )  # fmt: skip
    return list(Delivery.objects.filter(pk__in=ids).select_related("channel").order_by("next_attempt_at"))


class SendError(Exception):
    def __init__(self, message: str, *, permanent: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status


def _send(delivery: Delivery, now: datetime) -> int:
    """Send one claimed notice; on failure, schedule the retry from ``now`` (the time of the claim)."""
    started = time.monotonic()
    try:
        if delivery.channel is not None and not delivery.channel.enabled and delivery.event != Delivery.Event.TEST:
            raise SendError(f"channel disabled: {delivery.channel.disabled_reason or 'by an admin'}", permanent=True)
        status = _send_email(delivery) if delivery.kind == NotificationChannel.Kind.EMAIL else _send_webhook(delivery)
    except Exception as exc:  # any failure of one notice is its own: retried, logged, shown
        _failed(delivery, exc, now)
        return 0
    Delivery.objects.filter(pk=delivery.pk).update(
        status=Delivery.Status.SENT, sent_at=timezone.now(), claimed_until=None, last_error="",
        last_status_code=status, latency_ms=round((time.monotonic() - started) * 1000, 1),
    )  # fmt: skip
    if delivery.channel_id:
        NotificationChannel.objects.filter(pk=delivery.channel_id).update(consecutive_failures=0)
    return 1


def _failed(delivery: Delivery, exc: Exception, now: datetime) -> None:
    permanent = isinstance(exc, SendError) and exc.permanent
    status = exc.status if isinstance(exc, SendError) else None
    webhook = delivery.kind == NotificationChannel.Kind.WEBHOOK
    test = delivery.event == Delivery.Event.TEST  # someone is waiting for the answer; a typo must not retry forever
    give_up = (webhook and (permanent or delivery.attempts >= Delivery.MAX_WEBHOOK_ATTEMPTS)) or (
        test and delivery.attempts >= Delivery.MAX_TEST_ATTEMPTS
    )
    wait = min(settings.DELIVERY_RETRY_S * 2 ** max(delivery.attempts - 1, 0), settings.DELIVERY_RETRY_MAX_S)
    message = f"{type(exc).__name__}: {exc}"[:500]
    log.warning("notice %s to %s failed (attempt %d): %s", delivery.pk, delivery.target, delivery.attempts, message)
    Delivery.objects.filter(pk=delivery.pk).update(
        status=Delivery.Status.FAILED if give_up else Delivery.Status.PENDING, claimed_until=None,
        next_attempt_at=now + timedelta(seconds=wait), last_error=message, last_status_code=status,
    )  # fmt: skip
    if webhook and permanent and delivery.channel_id:
        _count_permanent_failure(delivery.channel_id, message)


def _count_permanent_failure(channel_id: int, message: str) -> None:
    NotificationChannel.objects.filter(pk=channel_id).update(consecutive_failures=F("consecutive_failures") + 1)
    NotificationChannel.objects.filter(
        pk=channel_id, enabled=True, consecutive_failures__gte=NotificationChannel.DISABLE_AFTER
    ).update(enabled=False, disabled_reason=f"{NotificationChannel.DISABLE_AFTER} permanent failures in a row; "
                                            f"last: {message}"[:300])  # fmt: skip


def email_subject(payload: dict[str, Any]) -> str:
    alert, event = payload.get("alert"), payload["event"].split(".", 1)[1]
    if alert is None:
        return "[Tally] Test notice"
    prefix = {"opened": "ALERT", "recovered": "RECOVERED", "reminder": "REMINDER"}.get(event, event.upper())
    title = alert["title"]
    return f"[Tally] {prefix}: {title}"[:250]


def _send_email(delivery: Delivery) -> int:
    payload = delivery.payload
    context = {"payload": payload, "alert": payload.get("alert"), "event": payload["event"].split(".", 1)[1]}
    message = EmailMultiAlternatives(
        subject=email_subject(payload),
        body=render_to_string("monitoring/alert_email.txt", context),
        to=[delivery.target],
        headers={"X-Tally-Idempotency-Key": str(delivery.idempotency_key)},
        connection=get_connection(timeout=settings.EMAIL_TIMEOUT),
    )
    message.attach_alternative(render_to_string("monitoring/alert_email.html", context), "text/html")
    message.send()
    return 250


def _send_webhook(delivery: Delivery) -> int:
    channel = delivery.channel
    if channel is None:
        raise SendError("webhook channel deleted", permanent=True)
    if not channel.secret:  # unreadable after an encryption key change: never send unsigned
        raise SendError("the channel's signing secret cannot be read (encryption key changed?); rotate it",
                        permanent=True)  # fmt: skip
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    timestamp = math.floor(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Tally-Webhook/1",
        "X-Tally-Event": delivery.payload["event"],
        "X-Tally-Delivery": str(delivery.idempotency_key),
        SIGNATURE_HEADER: sign(channel.secret, timestamp, body),
    }
    response = httpx.post(channel.url, content=body, headers=headers, timeout=WEBHOOK_TIMEOUT_S,
                          follow_redirects=False)  # fmt: skip
    if 200 <= response.status_code < 300:
        return response.status_code
    permanent = 400 <= response.status_code < 500 and response.status_code not in (408, 429)
    raise SendError(f"HTTP {response.status_code}", permanent=permanent, status=response.status_code)


def backlog() -> dict[str, int]:
    """Notices not sent yet, by status (pages and the API show it: nothing is dropped silently)."""
    counts: dict[str, int] = {
        status: 0 for status in (Delivery.Status.PENDING, Delivery.Status.SENDING, Delivery.Status.FAILED)
    }
    for status in counts:
        counts[status] = Delivery.objects.filter(status=status).count()
    return counts
