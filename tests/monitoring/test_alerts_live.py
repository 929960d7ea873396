"""Alerts end to end: a real nginx-rtmp configured by Tally calls back a running console (daphne with its
in-process timer, on the test PostgreSQL and Redis); ffmpeg publishes; notices go to an SMTP server
(aiosmtpd) and a webhook receiver on loopback that checks signatures. The worker-crash case runs a real
Celery worker and kills it.

Waits are bounded (a broken build fails instead of hanging), never speed assertions; latencies are
printed (``-s``) and measured by bench/alert_latency.py. The grace period is GRACE_S here (15 s by
default) to keep the suite short.
"""

import time
from types import SimpleNamespace

import pytest

from console import audit
from monitoring.models import Alert, Condition, Delivery, Health, NotificationChannel, ServerStatus
from streams import keys
from streams.models import PublishSession
from streams.rendering import render_origin_config
from tests import factories
from tests.live_console import kill_worker, run_console, run_worker
from tests.nginx import wait_until
from tests.receivers import SmtpServer, WebhookReceiver

GRACE_S = 6
BOUND_S = 60  # against hanging only


@pytest.fixture
def stack(transactional_db, tmp_path, nginx_factory, ffmpeg_factory):
    smtp = SmtpServer().start()
    hook = WebhookReceiver("whsec-test")
    channel = NotificationChannel.objects.create(name="ops", kind="webhook", url=hook.url, secret="whsec-test")
    rule = factories.default_alert_rules()["stream_dropped"]
    rule.duration_s = GRACE_S
    rule.save()
    rule.channels.set([channel])
    env = {"TALLY_EMAIL_HOST": "127.0.0.1", "TALLY_EMAIL_PORT": str(smtp.port), "TALLY_EMAIL_TIMEOUT_S": "5",
           "TALLY_ALERT_EMAILS": "noc@example.test", "TALLY_ALERT_TICK_S": "1", "TALLY_DELIVERY_RETRY_S": "1",
           "TALLY_DELIVERY_RETRY_MAX_S": "2"}  # fmt: skip
    with run_console(tmp_path, **env) as console:
        server, http_port = factories.make_loopback_server("gym-origin", poll_interval_s=1)
        app = factories.make_application(server, "live")
        nginx = nginx_factory(render_origin_config(server, [app], callback_base_url=console.base),
                              http_port=http_port, rtmp_port=server.rtmp_port)  # fmt: skip
        issued = factories.issue_key(app, "Gym camera")
        yield SimpleNamespace(smtp=smtp, hook=hook, console=console, nginx=nginx, issued=issued,
                              url=nginx.rtmp_url("live", issued.secret), ffmpeg=ffmpeg_factory)  # fmt: skip
    hook.shutdown()
    smtp.stop()


def live_sessions():
    return PublishSession.objects.filter(public_name="gym-camera", ended__isnull=True).count()


def start(stack):
    publisher = stack.ffmpeg.publisher(stack.url)
    assert wait_until(lambda: live_sessions() == 1, timeout_s=BOUND_S), publisher.stderr_text()
    return publisher


def stop(publisher):
    publisher.stop()
    assert wait_until(lambda: live_sessions() == 0, timeout_s=BOUND_S)


def drop_mails(stack):
    return [t for t in stack.smtp.inbox.texts() if "Stream dropped: live/gym-camera" in t]


def quiet_for(seconds):
    time.sleep(seconds)  # a window in which nothing may arrive (not a speed assertion)


def test_a_killed_publisher_gives_exactly_one_email_and_one_signed_webhook(stack):
    publisher = start(stack)
    killed = time.monotonic()
    publisher.kill()
    assert wait_until(lambda: drop_mails(stack), timeout_s=BOUND_S)
    print(f"\ndrop e-mail {time.monotonic() - killed:.1f} s after the kill (grace {GRACE_S} s)")
    assert wait_until(lambda: stack.hook.calls, timeout_s=BOUND_S)
    quiet_for(3)
    (mail,) = drop_mails(stack)
    assert "Subject: [Tally] ALERT: Stream dropped: live/gym-camera on gym-origin" in mail
    ((headers, body, signed),) = stack.hook.calls
    assert signed and body["event"] == "alert.opened" and body["alert"]["stream"]["name"] == "gym-camera"
    assert headers["X-Tally-Delivery"] == body["id"]


def test_a_publisher_back_within_the_grace_period_sends_nothing(stack):
    publisher = start(stack)
    stop(publisher)
    start(stack)
    quiet_for(GRACE_S + 4)
    assert stack.smtp.inbox.messages == [] and stack.hook.calls == []
    assert Alert.objects.get().state == Alert.State.CANCELLED


def test_five_flaps_give_one_unstable_email(stack):
    for _ in range(5):
        stop(start(stack))
        start(stack).stop()  # the last one stays down; the ones before came back within the grace
    assert wait_until(lambda: any("Stream unstable" in t for t in stack.smtp.inbox.texts()), timeout_s=BOUND_S)
    quiet_for(GRACE_S + 4)
    texts = stack.smtp.inbox.texts()
    assert sum("Stream unstable: live/gym-camera" in t for t in texts) == 1 and drop_mails(stack) == []


def test_revoking_the_key_drops_the_stream_without_a_drop_alert(stack):
    start(stack)
    result = keys.revoke_key(stack.issued.key, audit.Actor.system(), "stolen")
    assert [kick.outcome for kick in result.kicks] == ["dropped"]
    quiet_for(GRACE_S + 4)
    assert not Alert.objects.filter(condition=Condition.STREAM_DROPPED).exists() and drop_mails(stack) == []


def test_an_email_waits_for_smtp_to_come_back(stack):
    publisher = start(stack)
    stack.smtp.stop()
    publisher.kill()
    assert wait_until(lambda: Delivery.objects.filter(kind="email").exclude(last_error="").exists(),
                      timeout_s=BOUND_S)  # fmt: skip
    assert drop_mails(stack) == []
    stack.smtp.start()
    assert wait_until(lambda: drop_mails(stack), timeout_s=BOUND_S)
    email = Delivery.objects.get(kind="email")
    assert email.status == Delivery.Status.SENT and email.attempts >= 2


def test_a_worker_killed_mid_send_delivers_after_restart(transactional_db, tmp_path):
    smtp = SmtpServer().start()
    smtp.inbox.stall = True  # the first send hangs in DATA, as on a stuck relay
    env = {"TALLY_EMAIL_HOST": "127.0.0.1", "TALLY_EMAIL_PORT": str(smtp.port), "TALLY_EMAIL_TIMEOUT_S": "30",
           "TALLY_ALERT_EMAILS": "noc@example.test", "TALLY_ALERT_TICK_S": "1", "TALLY_DELIVERY_LEASE_S": "3",
           "TALLY_POLL_INTERVAL_S": "3600"}  # fmt: skip
    factories.default_alert_rules()
    server = factories.make_server("edge-9")
    ServerStatus.objects.create(server=server, health=Health.DOWN, last_error="connection refused")
    try:
        with run_worker(tmp_path, **env) as worker:
            assert wait_until(smtp.inbox.stalled.is_set, timeout_s=BOUND_S)  # stored, claimed, mid-send
            notice = Delivery.objects.get()
            assert notice.status == Delivery.Status.SENDING and smtp.inbox.messages == []
            kill_worker(worker)
        smtp.inbox.stall = False
        with run_worker(tmp_path, **env):
            assert wait_until(lambda: smtp.inbox.messages, timeout_s=BOUND_S)
            # (the worker records the send right after the SMTP answer: let it, before it is stopped)
            assert wait_until(lambda: Delivery.objects.get().status == Delivery.Status.SENT, timeout_s=BOUND_S)
        (text,) = smtp.inbox.texts()
        assert "Server down: edge-9" in text and str(notice.idempotency_key) in text
        notice.refresh_from_db()
        assert notice.status == Delivery.Status.SENT and notice.attempts == 2
    finally:
        smtp.stop()
