"""The callback endpoint and the publish decision, driven with the exact fields nginx-rtmp sends
(see tests/fixtures/nginx_rtmp/callbacks.txt). Real nginx runs in test_publish_control.py."""

import threading
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from console import audit
from streams import hooks, keys
from streams.models import PlaySession, PublishReject, PublishSession, StreamKey
from streams.ratelimit import publish_failures
from tests import factories

pytestmark = pytest.mark.django_db

FFMPEG_FLASHVER = "FMLE/3.0 (compatible; Lavf59.27"


@pytest.fixture(autouse=True)
def _fresh_limiter():
    publish_failures.reset()
    yield
    publish_failures.reset()


@pytest.fixture
def app():
    return factories.make_application(factories.make_server(control_url="http://127.0.0.1:9/control"))


def callback(server, event, *, secret=None, **fields):
    """POST a callback the way nginx-rtmp does (HTTP/1.0 form, Host without port)."""
    body = {"app": "live", "flashver": FFMPEG_FLASHVER, "swfurl": "", "tcurl": "rtmp://127.0.0.1:1935/live",
            "pageurl": "", "addr": "127.0.0.1", "clientid": "7", "call": event, **fields}  # fmt: skip
    query = urlencode({"secret": server.hook_secret if secret is None else secret})
    return Client().post(
        f"/hooks/nginx-rtmp/{server.pk}/{event}?{query}",
        urlencode(body),
        content_type="application/x-www-form-urlencoded",
    )


def test_valid_key_is_renamed_to_its_public_name_and_opens_a_session(app):
    issued = factories.issue_key(app, "Gym camera")
    response = callback(app.server, "publish", name=issued.secret, type="live", clientid="42", addr="203.0.113.9")
    assert response.status_code == 302 and response["Location"] == "gym-camera"
    session = PublishSession.objects.get()
    assert (session.client_id, session.public_name, session.publisher_addr) == ("42", "gym-camera", "203.0.113.9")
    assert session.encoder == FFMPEG_FLASHVER and session.key == issued.key and session.is_live
    issued.key.refresh_from_db()
    assert issued.key.last_used_at is not None
    # nginx sends the same on_publish again: same answer, still one session.
    again = callback(app.server, "publish", name=issued.secret, clientid="42", addr="203.0.113.9")
    assert again.status_code == 302 and PublishSession.objects.count() == 1


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda app: ("not-a-key", None), "unknown_key"),
        (lambda app: (factories.issue_key(app, expires_at=timezone.now() + timedelta(seconds=1)), "expire"), "expired"),
        (lambda app: (factories.issue_key(app), "revoke"), "revoked"),
        (lambda app: (factories.issue_key(factories.make_application(app.server, "other")), None), "wrong_application"),
        (lambda app: (factories.issue_key(app, allowed_cidrs=["10.0.0.0/8"]), None), "address_not_allowed"),
    ],
)
def test_refused_keys_get_403_and_a_recorded_reason(app, make, reason):
    issued, change = make(app)
    secret = issued if isinstance(issued, str) else issued.secret
    if change == "expire":
        StreamKey.objects.filter(pk=issued.key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    if change == "revoke":
        keys.revoke_key(issued.key, audit.Actor.system())
    response = callback(app.server, "publish", name=secret)
    assert response.status_code == 403
    reject = PublishReject.objects.get()
    assert reject.reason == reason and reject.addr == "127.0.0.1"
    assert secret not in str(PublishReject.objects.values()) and not PublishSession.objects.exists()


def test_concurrent_publisher_limit(app):
    issued = factories.issue_key(app, max_publishers=1)
    assert callback(app.server, "publish", name=issued.secret, clientid="1").status_code == 302
    second = callback(app.server, "publish", name=issued.secret, clientid="2")
    assert second.status_code == 403 and PublishReject.objects.get().reason == "too_many_publishers"
    first = PublishSession.objects.get()
    assert first.client_id == "1" and first.is_live  # the first session is untouched
    # the refused client disconnects: nothing of the first session changes
    callback(app.server, "disconnect", clientid="2")
    first.refresh_from_db()
    assert first.is_live


@pytest.mark.django_db(transaction=True)
def test_concurrent_publishes_never_exceed_the_limit():
    """Simultaneous publishes of one key race for its publisher places: the unique (key, place) index
    among open sessions lets exactly max_publishers of them in, and the rest get a clean 403."""
    app = factories.make_application(factories.make_server())
    issued = factories.issue_key(app, max_publishers=2)
    start = threading.Barrier(8)
    statuses: list[int] = []

    def publish(client_id: int) -> None:
        try:
            start.wait()
            statuses.append(callback(app.server, "publish", name=issued.secret, clientid=str(client_id)).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [302, 302] + [403] * 6
    assert sorted(PublishSession.objects.filter(ended__isnull=True).values_list("publisher_slot", flat=True)) == [0, 1]
    assert set(PublishReject.objects.values_list("reason", flat=True)) == {"too_many_publishers"}


def test_a_freed_publisher_place_is_taken_again(app):
    issued = factories.issue_key(app, max_publishers=2)
    for client_id in ("1", "2"):
        assert callback(app.server, "publish", name=issued.secret, clientid=client_id).status_code == 302
    callback(app.server, "publish_done", name=issued.secret, clientid="1")
    assert callback(app.server, "publish", name=issued.secret, clientid="3").status_code == 302
    open_places = dict(PublishSession.objects.filter(ended__isnull=True).values_list("client_id", "publisher_slot"))
    assert open_places == {"2": 1, "3": 0}


def test_sessions_close_by_client_id_not_by_name(app):
    issued = factories.issue_key(app, max_publishers=2)
    callback(app.server, "publish", name=issued.secret, clientid="1")
    other = factories.make_server("other-origin")
    factories.make_application(other, "live")
    # same name, other server, same client id: independent
    callback(app.server, "publish_done", name=issued.secret, clientid="99")
    assert PublishSession.objects.get().is_live
    callback(app.server, "publish_done", name=issued.secret, clientid="1")
    session = PublishSession.objects.get()
    assert session.ended and session.end_reason == "publish_done"
    callback(app.server, "done", name=issued.secret, clientid="1")  # on_done follows: idempotent
    session.refresh_from_db()
    assert session.end_reason == "publish_done"


def test_abrupt_drop_order_disconnect_then_publish_done(app):
    issued = factories.issue_key(app)
    callback(app.server, "publish", name=issued.secret, clientid="5")
    callback(app.server, "disconnect", clientid="5")
    callback(app.server, "publish_done", name=issued.secret, clientid="5")
    callback(app.server, "done", name=issued.secret, clientid="5")
    assert PublishSession.objects.get().end_reason == "disconnect"


def test_players_are_counted_per_session(app):
    issued = factories.issue_key(app, "Hall")
    callback(app.server, "publish", name=issued.secret, clientid="1")
    for client in ("10", "11", "10"):  # a repeated on_play for client 10 counts once
        assert callback(app.server, "play", name="hall", clientid=client, start="4294965296").status_code == 200
    session = PublishSession.objects.get()
    assert (session.viewers, session.peak_viewers) == (2, 2)
    callback(app.server, "play_done", name="hall", clientid="10")
    callback(app.server, "done", name="hall", clientid="10")
    session.refresh_from_db()
    assert (session.viewers, session.peak_viewers) == (1, 2)
    assert PlaySession.objects.filter(ended__isnull=True).count() == 1


def test_update_keeps_valid_and_refuses_revoked_keys(app):
    issued = factories.issue_key(app)
    callback(app.server, "publish", name=issued.secret, clientid="3")
    # later callbacks carry the original name (the secret)
    assert (
        callback(app.server, "update", call="update_publish", name=issued.secret, clientid="3", time="5").status_code
        == 200
    )
    StreamKey.objects.filter(pk=issued.key.pk).update(revoked_at=timezone.now())  # revoked behind the control module
    refused = callback(app.server, "update", call="update_publish", name=issued.secret, clientid="3", time="10")
    assert refused.status_code == 403
    assert PublishSession.objects.get().end_reason == "refused_update"
    assert callback(app.server, "update", call="update_play", name="x", clientid="9").status_code == 200


def test_update_adopts_a_live_publisher_tally_lost(app):
    issued = factories.issue_key(app)
    response = callback(app.server, "update", call="update_publish", name=issued.secret, clientid="77")
    assert response.status_code == 200
    assert PublishSession.objects.get().client_id == "77"
    assert callback(app.server, "update", call="update_publish", name="unknown", clientid="78").status_code == 403


def test_rotation_keeps_old_secret_for_the_grace_then_refuses_it(app):
    issued = factories.issue_key(app)
    rotated = keys.rotate_key(issued.key, audit.Actor.system(), timedelta(hours=1))
    assert rotated.key.public_name == issued.key.public_name and rotated.secret != issued.secret
    assert callback(app.server, "publish", name=issued.secret, clientid="1")["Location"] == issued.key.public_name
    callback(app.server, "publish_done", clientid="1", name=issued.secret)
    assert callback(app.server, "publish", name=rotated.secret, clientid="2").status_code == 302
    callback(app.server, "publish_done", clientid="2", name=rotated.secret)
    StreamKey.objects.filter(pk=issued.key.pk).update(previous_valid_until=timezone.now() - timedelta(seconds=1))
    refused = callback(app.server, "publish", name=issued.secret, clientid="3")
    assert refused.status_code == 403 and PublishReject.objects.get().reason == "rotated_out"


def test_rotation_grace_ends_live_publishers_at_next_update(app):
    issued = factories.issue_key(app)
    callback(app.server, "publish", name=issued.secret, clientid="1")
    keys.rotate_key(issued.key, audit.Actor.system(), timedelta(0))
    assert callback(app.server, "update", call="update_publish", name=issued.secret, clientid="1").status_code == 403


def test_brute_force_blocks_the_address_without_database_work(app, django_assert_num_queries):
    for n in range(10):
        assert (
            callback(app.server, "publish", name=f"guess-{n}", clientid=str(n), addr="198.51.100.7").status_code == 403
        )
    assert PublishReject.objects.filter(reason="unknown_key").count() == 10
    good = factories.issue_key(app)
    with django_assert_num_queries(1):  # the server lookup only: no key lookup, no reject row
        blocked = callback(app.server, "publish", name=good.secret, addr="198.51.100.7")
    assert blocked.status_code == 403 and blocked.content == b"rate_limited"
    # another address is unaffected
    assert callback(app.server, "publish", name=good.secret, addr="198.51.100.8").status_code == 302
    # admins see the block and can lift it
    api = factories.token_client(factories.make_user("boss", "admin"))
    blocks = api.get("/api/v1/publish-blocks/").json()
    assert [b["addr"] for b in blocks["blocked"]] == ["198.51.100.7"] and blocks["limit"] == 10
    assert api.get("/api/v1/publish-rejects/?addr=198.51.100.7").json()["count"] == 10
    assert api.post("/api/v1/publish-blocks/unblock/", {"addr": "198.51.100.7"}, format="json").json()["was_blocked"]
    assert not publish_failures.is_blocked("198.51.100.7")


def test_too_many_publishers_does_not_count_as_brute_force(app):
    issued = factories.issue_key(app)
    callback(app.server, "publish", name=issued.secret, clientid="1")
    for n in range(15):
        callback(app.server, "publish", name=issued.secret, clientid=str(100 + n))
    assert not publish_failures.is_blocked("127.0.0.1")


def test_local_relays_pass_without_a_key(app):
    response = callback(app.server, "publish", name="s1", flashver="ngx-local-relay", addr="127.0.0.1:19351/live/s1")
    assert response.status_code == 200 and not PublishReject.objects.exists()
    faked = callback(app.server, "publish", name="s1", flashver="ngx-local-relay", addr="203.0.113.5")
    assert faked.status_code == 403  # a remote client cannot pose as a relay


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        (lambda s: {"secret": "wrong"}, 403),
        (lambda s: {"secret": ""}, 403),
        (lambda s: {"server_id": 999999}, 403),
        (lambda s: {"event": "explode"}, 404),
        (lambda s: {"method": "GET"}, 405),
    ],
)
def test_callback_authentication(app, mutate, status):
    change = mutate(app.server)
    server_id = change.get("server_id", app.server.pk)
    url = f"/hooks/nginx-rtmp/{server_id}/{change.get('event', 'publish')}?secret={change.get('secret', app.server.hook_secret)}"
    client = Client()
    response = client.get(url) if change.get("method") == "GET" else client.post(url, {"app": "live", "name": "x"})
    assert response.status_code == status
    assert not PublishSession.objects.exists()


def test_source_allowlist_and_secret_rotation(app, admin):
    server = app.server
    issued = factories.issue_key(app)
    server.hook_allowed_cidrs = ["10.9.0.0/16"]
    server.save()
    assert callback(server, "publish", name=issued.secret).status_code == 403  # test client is 127.0.0.1
    server.hook_allowed_cidrs = ["127.0.0.0/8"]
    server.save()
    old_secret = server.hook_secret
    api = factories.token_client(admin)
    assert api.post(f"/api/v1/servers/{server.pk}/rotate-hook-secret/").status_code == 200
    server.refresh_from_db()
    assert server.hook_secret != old_secret
    assert callback(server, "publish", name=issued.secret, secret=old_secret, clientid="1").status_code == 302  # grace
    server.hook_secret_rotated_at = timezone.now() - timedelta(days=2)
    server.save()
    assert callback(server, "publish_done", name=issued.secret, secret=old_secret, clientid="1").status_code == 403
    config = api.get(f"/api/v1/servers/{server.pk}/origin-config/")
    assert config.status_code == 200 and f"secret={server.hook_secret}" in config.content.decode()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"%%%",
        b"app=" + b"x" * 100000,
        b"name=\xff\xfe&app=live",
        b"&&&==&",
        b"clientid=1&clientid=2&name=a&name=b",
    ],
)
def test_malformed_callback_bodies_never_500(app, body):
    url = f"/hooks/nginx-rtmp/{app.server.pk}/publish?secret={app.server.hook_secret}"
    response = Client().post(url, body, content_type="application/x-www-form-urlencoded")
    assert response.status_code in (400, 403)


def test_database_down_answers(app):
    issued = factories.issue_key(app)
    cb = hooks.Callback("publish", "live", issued.secret, "1", "127.0.0.1", FFMPEG_FLASHVER, "publish")
    assert hooks.decide_without_database(cb, app.server.pk, fail_open=False).status == 403
    assert hooks.decide_without_database(cb, app.server.pk, fail_open=True).status == 403  # never admitted here
    assert callback(app.server, "publish", name=issued.secret, clientid="1").status_code == 302
    reconnect = hooks.decide_without_database(cb, app.server.pk, fail_open=True)
    assert (reconnect.status, reconnect.location) == (302, issued.key.public_name)
    assert hooks.decide_without_database(cb, app.server.pk, fail_open=False).status == 403
    update = hooks.Callback("update", "live", issued.secret, "1", "127.0.0.1", FFMPEG_FLASHVER, "update_publish")
    assert hooks.decide_without_database(update, app.server.pk, fail_open=False).status == 200
