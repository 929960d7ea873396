"""The alert engine on the stored state, tick by tick (times given, not waited for): conditions, noise
control and notices. Delivery goes to real loopback receivers: aiosmtpd for e-mail, an HTTP server that
checks webhook signatures. The end-to-end runs with nginx-rtmp and ffmpeg are in test_alerts_live.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring import alerting
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
from streams import sessions
from streams.models import PublishSession
from tests import factories
from tests.nginx import free_port
from tests.receivers import SmtpServer, WebhookReceiver

pytestmark = pytest.mark.django_db
T0 = timezone.now().replace(microsecond=0)


def at(seconds):
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def app(settings):
    settings.ALERT_EMAILS = ["noc@example.test"]
    settings.ALERT_REMIND_S = 600
    factories.default_alert_rules()
    return factories.make_application(factories.make_server("gym-origin"))


def publish(app, name="cam", client="5", started=None):
    PublishSession.objects.create(server=app.server, application=app, app_name=app.name, public_name=name,
                                  client_id=client, started=started or at(-60))  # fmt: skip
    stream, _ = Stream.objects.update_or_create(
        server=app.server, app=app.name, name=name,
        defaults={"live": True, "live_since": at(-60), "first_seen": at(-60), "last_seen": at(-1)},
    )  # fmt: skip
    return stream


def drop(app, client="5", when=0, reason=PublishSession.EndReason.PUBLISH_DONE):
    sessions.close_publish(app.server.pk, client, reason, now=at(when))


def alerts(**filters):
    return list(Alert.objects.filter(**filters).order_by("pk"))


def test_a_drop_waits_for_the_grace_period_then_opens_with_its_notices_stored(app):
    publish(app)
    drop(app, when=0)
    (alert,) = alerts()
    assert (alert.state, alert.condition, alert.due_at) == ("pending", "stream_dropped", at(15))
    assert alert.title == "Stream dropped: live/cam on gym-origin"
    alerting.evaluate(at(14))
    assert Alert.objects.get().state == "pending" and not Delivery.objects.exists()
    assert alerting.evaluate(at(15)).opened == [alert.pk]
    (notice,) = Delivery.objects.all()
    assert (notice.event, notice.kind, notice.target, notice.status) == ("opened", "email", "noc@example.test",
                                                                          "pending")  # fmt: skip
    assert notice.payload["id"] == str(notice.idempotency_key) and notice.payload["alert"]["state"] == "open"
    alerting.evaluate(at(16))
    assert Delivery.objects.count() == 1  # one open alert, one notice


def test_back_within_the_grace_period_is_no_alert_and_back_later_is_a_recovery(app):
    publish(app)
    drop(app, when=0)
    publish(app, client="6", started=at(5))
    alerting.evaluate(at(15))
    assert alerts()[0].state == "cancelled" and not Delivery.objects.exists()
    drop(app, client="6", when=20)
    alerting.evaluate(at(40))
    publish(app, client="7", started=at(50))
    result = alerting.evaluate(at(51))
    alert = Alert.objects.get(state="closed")
    assert result.closed == [alert.pk] and alert.close_reason == "back live"
    assert list(Delivery.objects.order_by("pk").values_list("event", flat=True)) == ["opened", "recovered"]


@pytest.mark.parametrize("reason", ["kicked", "revoked", "refused_update"])
def test_no_drop_alert_for_a_kick_or_a_revoke(app, reason):
    publish(app)
    drop(app, reason=reason)
    assert not Alert.objects.exists()


def test_a_flapping_stream_gets_one_unstable_alert(app):
    for i in range(5):
        publish(app, client=str(i), started=at(60 * i))
        drop(app, client=str(i), when=60 * i + 30)
        publish(app, client=f"{i}b", started=at(60 * i + 35))  # back within the grace
        alerting.evaluate(at(60 * i + 45))
        sessions.close_publish(app.server.pk, f"{i}b", "kicked", now=at(60 * i + 50))  # (not a drop)
    unstable = alerts(condition=Condition.STREAM_UNSTABLE)
    assert len(unstable) == 1 and unstable[0].state == "open"
    assert "dropped 3 times" not in unstable[0].detail and "within 10 minutes" in unstable[0].detail
    assert [d.event for d in Delivery.objects.all()] == ["opened"]  # the one "unstable" notice
    assert Delivery.objects.get().payload["alert"]["condition"] == "stream_unstable"
    alerting.evaluate(at(60 * 4 + 30 + 601))  # ten minutes without a drop
    assert Alert.objects.get(condition=Condition.STREAM_UNSTABLE).state == "closed"


def test_server_down_and_recovered_follow_the_health_hysteresis(app):
    status = ServerStatus.objects.create(server=app.server, health=Health.DOWN, last_error="connection refused")
    alerting.evaluate(at(0))
    alert = Alert.objects.get()
    assert (alert.state, alert.title) == ("open", "Server down: gym-origin") and "connection refused" in alert.detail
    ServerStatus.objects.filter(pk=status.pk).update(health=Health.DEGRADED)
    alerting.evaluate(at(5))
    assert Alert.objects.get().state == "open"  # failing still
    ServerStatus.objects.filter(pk=status.pk).update(health=Health.UP)
    alerting.evaluate(at(10))
    assert Alert.objects.get().state == "closed"
    assert list(Delivery.objects.values_list("event", flat=True).order_by("pk")) == ["opened", "recovered"]


def test_low_bitrate_absolute_and_relative_and_no_video(app):
    stream = publish(app)
    AlertRule.objects.create(name="low", condition=Condition.LOW_BITRATE, threshold_kbps=300, duration_s=10)
    AlertRule.objects.create(name="black", condition=Condition.NO_VIDEO, duration_s=0)
    Stream.objects.filter(pk=stream.pk).update(latest={"bitrate_in_kbps": 250.0, "fps": 25.0})
    alerting.evaluate(at(0))
    alerting.evaluate(at(9))
    assert Alert.objects.get().state == "pending"
    Stream.objects.filter(pk=stream.pk).update(latest={"bitrate_in_kbps": 900.0, "fps": 25.0})
    alerting.evaluate(at(11))
    assert Alert.objects.get().state == "cancelled"  # it recovered before N seconds
    AlertRule.objects.filter(name="low").update(threshold_kbps=None, threshold_pct=50)
    for minute in range(5):
        StreamRollup.objects.create(stream=stream, minute=at(-60 * (minute + 1)), samples=12, bitrate_in_avg=1000.0)
    Stream.objects.filter(pk=stream.pk).update(latest={"bitrate_in_kbps": 400.0, "fps": 0})
    alerting.evaluate(at(20))
    alerting.evaluate(at(31))
    opened = {a.condition: a for a in alerts(state="open")}
    assert set(opened) == {"low_bitrate", "no_video"}
    assert "below 50 % of its median" in opened["low_bitrate"].detail
    Stream.objects.filter(pk=stream.pk).update(live=False)
    alerting.evaluate(at(40))
    assert {a.close_reason for a in alerts(state="closed")} == {"stream ended"}


def test_expected_live_on_a_weekly_schedule(app):
    key = factories.issue_key(app, "Chapel").key
    day = at(0).weekday()
    window = {"days": [day], "start": "00:00", "end": "23:59"}
    AlertRule.objects.create(name="chapel", condition=Condition.EXPECTED_LIVE, key=key, duration_s=0,
                             schedule=[window])  # fmt: skip
    alerting.evaluate(at(0))
    assert Alert.objects.get().title == f"Expected live, not live: live/{key.public_name}"
    publish(app, name=key.public_name)
    alerting.evaluate(at(5))
    assert Alert.objects.get().state == "closed"
    assert not alerting.in_schedule([{"days": [(day + 1) % 7], "start": "00:00", "end": "23:59"}], at(0))


def test_mutes_reminders_and_acknowledgement(app, operator):
    status = ServerStatus.objects.create(server=app.server, health=Health.DOWN)
    mute = Mute.objects.create(server=app.server, starts_at=at(-10), ends_at=at(100), reason="maintenance")
    alerting.evaluate(at(0))
    assert not Alert.objects.exists()  # muted: no alert
    mute.delete()
    alerting.evaluate(at(1))
    alert = Alert.objects.get()
    assert alert.next_reminder_at == at(601)
    alerting.evaluate(at(601))
    alerting.evaluate(at(602))
    assert [d.event for d in Delivery.objects.order_by("pk")] == ["opened", "reminder"]
    assert Alert.objects.get().next_reminder_at == at(601 + 1200)  # the interval doubles
    assert alerting.acknowledge(alert, operator, now=at(700))
    assert not alerting.acknowledge(alert, operator)  # already
    alerting.evaluate(at(5000))
    assert Delivery.objects.count() == 2  # no reminder once acknowledged
    ServerStatus.objects.filter(pk=status.pk).update(health=Health.UP)
    alerting.evaluate(at(5001))
    assert Delivery.objects.filter(event="recovered").exists()


def test_recipients_rule_channels_subscribers_and_the_default_list(app, viewer):
    viewer.email = "viewer@example.test"
    viewer.save()
    Subscription.objects.create(user=viewer, application=app)
    hook = NotificationChannel.objects.create(name="hook", kind="webhook", url="http://127.0.0.1:9/", secret="s")
    team = NotificationChannel.objects.create(name="team", kind="email", emails=["team@example.test"])
    rule = factories.default_alert_rules()["stream_dropped"]
    rule.emails = ["rule@example.test"]
    rule.save()
    rule.channels.set([hook, team])
    publish(app)
    drop(app)
    alerting.evaluate(at(15))
    targets = sorted(Delivery.objects.values_list("kind", "target"))
    assert targets == [("email", "noc@example.test"), ("email", "rule@example.test"), ("email", "team@example.test"),
                       ("email", "viewer@example.test"), ("webhook", "http://127.0.0.1:9/")]  # fmt: skip


# --- sending, to real loopback receivers -----------------------------------------------------------------


@pytest.fixture
def smtp(settings):
    server = SmtpServer().start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
    yield server.inbox
    server.stop()


def open_alert(app, channel=None):
    if channel is not None:
        factories.default_alert_rules()["server_down"].channels.set([channel])
    ServerStatus.objects.create(server=app.server, health=Health.DOWN)
    alerting.evaluate()
    return Alert.objects.get()


def test_email_and_signed_webhook_are_sent_with_their_idempotency_key(app, smtp):
    receiver = WebhookReceiver("hook-secret")
    channel = NotificationChannel.objects.create(name="ops", kind="webhook", url=receiver.url, secret="hook-secret")
    alert = open_alert(app, channel)
    assert alerting.send_due() == 2
    (mail,) = smtp.messages
    text = mail.content.decode()
    assert "Subject: [Tally] ALERT: Server down: gym-origin" in text and mail.rcpt_tos == ["noc@example.test"]
    assert "text/html" in text and f"/alerts/{alert.pk}/" in text
    ((headers, body, valid),) = receiver.calls
    assert valid and body["event"] == "alert.opened" and body["alert"]["id"] == alert.pk
    webhook = Delivery.objects.get(kind="webhook")
    assert headers["X-Tally-Delivery"] == body["id"] == str(webhook.idempotency_key)
    assert webhook.status == "sent" and webhook.last_status_code == 204 and webhook.latency_ms is not None
    email = Delivery.objects.get(kind="email")
    assert f"X-Tally-Idempotency-Key: {email.idempotency_key}" in text
    receiver.shutdown()


def test_a_failed_send_is_retried_with_backoff_and_nothing_is_lost(app, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", free_port(), 2  # no SMTP there
    settings.DELIVERY_RETRY_S = 5
    open_alert(app)
    assert alerting.send_due() == 0
    notice = Delivery.objects.get()
    assert (notice.status, notice.attempts) == ("pending", 1) and "refused" in notice.last_error.lower()
    first_retry = notice.next_attempt_at
    assert alerting.send_due(first_retry - timedelta(seconds=1)) == 0  # not due yet
    alerting.send_due(first_retry + timedelta(seconds=1))
    notice.refresh_from_db()
    assert notice.attempts == 2 and notice.next_attempt_at - first_retry >= timedelta(seconds=9)  # 5 s, then 10 s
    assert alerting.backlog()["pending"] == 1


def test_a_claim_left_by_a_dead_worker_is_sent_again(app, smtp):
    open_alert(app)
    notice = Delivery.objects.get()
    # A worker claimed it and died mid-send: still "sending", its lease running.
    Delivery.objects.filter(pk=notice.pk).update(status="sending", attempts=1,
                                                 claimed_until=timezone.now() + timedelta(seconds=60))  # fmt: skip
    assert alerting.send_due() == 0 and not smtp.messages  # the lease is not over
    assert alerting.send_due(timezone.now() + timedelta(seconds=61)) == 1
    assert str(notice.idempotency_key) in smtp.messages[0].content.decode()
    assert Delivery.objects.get().attempts == 2


def test_a_webhook_failing_permanently_is_disabled(app):
    receiver = WebhookReceiver("s", status=410)
    channel = NotificationChannel.objects.create(name="gone", kind="webhook", url=receiver.url, secret="s")
    for i in range(NotificationChannel.DISABLE_AFTER):
        Delivery.objects.create(channel=channel, kind="webhook", target=channel.url, event="test",
                                payload={"event": "alert.test", "id": str(i)}, next_attempt_at=timezone.now(),
                                created=timezone.now())  # fmt: skip
    alerting.send_due()
    channel.refresh_from_db()
    assert (
        not channel.enabled
        and "5 permanent failures" in channel.disabled_reason
        and "HTTP 410" in channel.disabled_reason
    )
    assert set(Delivery.objects.values_list("status", flat=True)) == {"failed"}
    receiver.shutdown()


def test_test_send_to_an_address(smtp):
    delivery = alerting.queue_test(email="me@example.test")
    assert alerting.send_now(delivery)
    assert "Subject: [Tally] Test notice" in smtp.messages[0].content.decode()
    with pytest.raises(ValueError):
        alerting.queue_test()


def test_callback_and_poll_reporting_the_same_drop_make_one_alert(app):
    publish(app)
    drop(app, when=0)
    alerting.stream_dropped(app.server.pk, "live", "cam", at(1))  # the poll noticed it too
    assert Alert.objects.count() == 1
