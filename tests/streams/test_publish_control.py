"""Publish control end to end: a real nginx-rtmp, configured by Tally's renderer, calls back a live
console; ffmpeg publishes and plays. Waits are bounded polls, never speed assertions."""

import asyncio
import contextlib
import re
import threading
import time
from types import SimpleNamespace

import pytest
from channels.layers import channel_layers

from console import audit
from console.models import AuditEntry
from streams import keys
from streams.models import PublishReject, PublishSession
from streams.ratelimit import publish_failures
from streams.rendering import render_origin_config
from tests import factories
from tests.nginx import free_port
from tests.nginx import wait_until as poll


def stat_names(nginx):
    """Stream names listed in /stat (application names excluded)."""
    xml = nginx.stat_xml().decode()
    return set(re.findall(r"<stream>\s*<name>([^<]*)</name>", xml))


@pytest.fixture
def origin(transactional_db, live_server, nginx_factory):
    publish_failures.reset()
    server, http_port = factories.make_loopback_server("rtmp-origin")
    app = factories.make_application(server, "live", settings={"on_update_interval_s": 5})
    base = f"http://127.0.0.1:{live_server.thread.port}"
    nginx = nginx_factory(
        render_origin_config(server, [app], callback_base_url=base), http_port=http_port, rtmp_port=server.rtmp_port
    )
    yield SimpleNamespace(server=server, app=app, nginx=nginx)
    publish_failures.reset()


def live_session(**filters):
    return PublishSession.objects.filter(ended__isnull=True, **filters).first()


def start_publisher(origin, ffmpeg_factory, secret):
    publisher = ffmpeg_factory.publisher(origin.nginx.rtmp_url("live", secret))
    return publisher


def test_valid_key_publishes_under_its_public_name_plays_and_closes(origin, ffmpeg_factory):
    issued = factories.issue_key(origin.app, "Gym camera")
    publisher = start_publisher(origin, ffmpeg_factory, issued.secret)
    assert poll(lambda: "gym-camera" in stat_names(origin.nginx)), publisher.stderr_text()
    assert issued.secret not in origin.nginx.stat_xml().decode()  # stats never carry the secret
    session = live_session(key=issued.key)
    xml = origin.nginx.stat_xml().decode()
    assert f"<id>{session.client_id}</id>" in xml  # the session is the client nginx reports
    assert session.encoder.startswith("FMLE/3.0") and session.publisher_addr == "127.0.0.1"

    player = ffmpeg_factory.player(origin.nginx.rtmp_url("live", "gym-camera"), seconds=4)
    assert poll(lambda: live_session(key=issued.key).viewers == 1)
    assert player.wait(30) == 0 and player.received_frames(), player.stderr_text()
    assert poll(lambda: live_session(key=issued.key).viewers == 0)
    assert live_session(key=issued.key).peak_viewers == 1

    publisher.stop()
    assert poll(lambda: live_session(key=issued.key) is None)
    ended = PublishSession.objects.get(key=issued.key)
    assert ended.end_reason in ("publish_done", "disconnect") and ended.duration_s > 0


def test_wrong_expired_and_revoked_keys_are_rejected(origin, ffmpeg_factory):
    from datetime import timedelta

    from django.utils import timezone

    expired = factories.issue_key(origin.app, "old", expires_at=timezone.now() + timedelta(seconds=1))
    revoked = factories.issue_key(origin.app, "gone")
    keys.revoke_key(revoked.key, audit.Actor.system())
    time.sleep(1.1)  # let the expiry pass
    attempts = {"not-a-key": "unknown_key", expired.secret: "expired", revoked.secret: "revoked"}
    for secret in attempts:
        publisher = start_publisher(origin, ffmpeg_factory, secret)
        assert publisher.wait(30) != 0
    assert sorted(PublishReject.objects.values_list("reason", flat=True)) == sorted(attempts.values())
    assert not PublishSession.objects.exists() and not stat_names(origin.nginx)


def test_key_revoked_while_live_is_dropped_at_once(origin, ffmpeg_factory, admin):
    issued = factories.issue_key(origin.app, "Hall")
    publisher = start_publisher(origin, ffmpeg_factory, issued.secret)
    assert poll(lambda: live_session(key=issued.key) is not None and "hall" in stat_names(origin.nginx))
    api = factories.token_client(admin)
    response = api.post(f"/api/v1/keys/{issued.key.pk}/revoke/", {"reason": "stolen"}, format="json")
    answered = time.monotonic()
    assert response.status_code == 200
    # The control module confirmed the drop before the API answered.
    assert [k["outcome"] for k in response.json()["kicks"]] == ["dropped"]
    assert poll(lambda: not publisher.alive(), timeout_s=10)
    print(f"publisher exited {time.monotonic() - answered:.2f} s after the revoke answered")
    assert PublishSession.objects.get(key=issued.key).end_reason == "revoked"
    assert AuditEntry.objects.filter(action="kick", message__contains="dropped").exists()
    assert poll(lambda: "hall" not in stat_names(origin.nginx))
    # and it cannot come back
    assert start_publisher(origin, ffmpeg_factory, issued.secret).wait(30) != 0


def test_revoke_without_control_is_enforced_at_next_update(origin, ffmpeg_factory):
    origin.server.control_url = f"http://127.0.0.1:{free_port()}/control"  # nothing listens there
    origin.server.save()
    issued = factories.issue_key(origin.app)
    publisher = start_publisher(origin, ffmpeg_factory, issued.secret)
    assert poll(lambda: live_session(key=issued.key) is not None)
    result = keys.revoke_key(issued.key, audit.Actor.system())
    assert [k.outcome for k in result.kicks] == ["unreachable"]
    # on_update comes every 5 s here; the refused update drops the publisher.
    assert poll(lambda: not publisher.alive(), timeout_s=20), "publisher survived the refused on_update"


def test_duplicate_publish_is_refused_without_harming_the_first(origin, ffmpeg_factory):
    issued = factories.issue_key(origin.app, "Stage")
    first = start_publisher(origin, ffmpeg_factory, issued.secret)
    assert poll(lambda: live_session(key=issued.key) is not None and "stage" in stat_names(origin.nginx))
    first_session = live_session(key=issued.key)
    second = start_publisher(origin, ffmpeg_factory, issued.secret)
    assert second.wait(30) != 0
    assert first.alive()
    assert PublishReject.objects.get().reason == "too_many_publishers"
    assert list(PublishSession.objects.filter(ended__isnull=True)) == [first_session]
    assert "stage" in stat_names(origin.nginx)


def test_repeated_failures_trip_the_rate_limit(origin, ffmpeg_factory):
    for n in range(publish_failures.limit):
        assert start_publisher(origin, ffmpeg_factory, f"guess-{n}").wait(30) != 0
    assert PublishReject.objects.filter(reason="unknown_key").count() == publish_failures.limit
    assert publish_failures.is_blocked("127.0.0.1")
    good = factories.issue_key(origin.app)
    assert start_publisher(origin, ffmpeg_factory, good.secret).wait(30) != 0  # even a good key, while blocked
    assert PublishReject.objects.count() == publish_failures.limit  # blocked attempts cost no database write
    publish_failures.unblock("127.0.0.1")
    publisher = start_publisher(origin, ffmpeg_factory, good.secret)
    assert poll(lambda: live_session(key=good.key) is not None), publisher.stderr_text()


def test_operator_kick_drops_without_revoking(origin, ffmpeg_factory, operator):
    issued = factories.issue_key(origin.app, "Lab")
    publisher = start_publisher(origin, ffmpeg_factory, issued.secret)
    assert poll(lambda: live_session(key=issued.key) is not None)
    session = live_session(key=issued.key)
    api = factories.token_client(operator, "operator")
    response = api.post(f"/api/v1/sessions/{session.pk}/kick/")
    assert response.status_code == 200 and response.json()["outcome"] == "dropped"
    assert poll(lambda: not publisher.alive(), timeout_s=10)
    issued.key.refresh_from_db()
    assert issued.key.state() == "active"
    again = start_publisher(origin, ffmpeg_factory, issued.secret)  # the encoder may come back
    assert poll(lambda: live_session(key=issued.key) is not None), again.stderr_text()
    history = api.get(f"/api/v1/sessions/?key={issued.key.pk}&ordering=started").json()["results"]
    assert [(h["end_reason"], h["live"]) for h in history] == [("kicked", False), ("", True)]


class FleetListener:
    """Receives the ``fleet`` group through the real Redis channel layer, on one event loop in a thread."""

    def __init__(self):
        self.messages = []
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.task = self.loop.create_task(self._listen())
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _run(self):
        # Closing cancels a pending receive; redis-py may surface that as its own error. Missing
        # messages still fail the test through wait_for.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            self.loop.run_until_complete(self.task)

    def close(self):
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(10)

    async def _listen(self):
        # A layer of its own: cancelling a receive on another event loop must not leave the process's
        # shared layer (used by the push thread and other tests) in a broken state.
        layer = channel_layers.make_backend("default")
        channel = await layer.new_channel()
        await layer.group_add("fleet", channel)
        self.ready.set()
        while True:
            self.messages.append((await layer.receive(channel))["message"])

    def wait_for(self, wanted):
        assert poll(lambda: any(m["type"] == wanted for m in self.messages)), [m["type"] for m in self.messages]
        return next(m for m in self.messages if m["type"] == wanted)


def test_publish_events_reach_the_fleet_group_at_once(origin, ffmpeg_factory):
    listener = FleetListener()
    issued = factories.issue_key(origin.app, "Events")
    publisher = start_publisher(origin, ffmpeg_factory, issued.secret)
    started = listener.wait_for("publish.started")
    assert started["name"] == "events" and started["server"] == origin.server.pk and "secret" not in str(started)
    assert issued.secret not in str(started)
    publisher.stop()
    assert listener.wait_for("publish.stopped")["reason"] in ("publish_done", "disconnect")
    start_publisher(origin, ffmpeg_factory, "wrong").wait(30)
    assert listener.wait_for("publish.rejected")["reason"] == "unknown_key"
    listener.close()
