"""nginx-rtmp callbacks: who may publish, and the live sessions that follow.

nginx-rtmp POSTs a form for each event and reads only the status: 2xx allows, 3xx with ``Location``
renames the stream, anything else refuses (and, for on_update, drops the live session). Everything here
needs only the database: no Redis, no Celery (events go through a non-blocking queue).
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from console.tokens import hash_secret
from streams import events, hotpath, sessions
from streams.models import ProxyMember, PublishReject, PublishSession, Server, StreamKey
from streams.ratelimit import publish_failures

log = logging.getLogger(__name__)

EVENTS = frozenset({"connect", "disconnect", "publish", "publish_done", "play", "play_done", "done", "update"})
RELAY_FLASHVER = "ngx-local-relay"
# Reasons that count towards the brute-force limit (guessing keys), unlike e.g. too many publishers.
AUTH_FAILURES = frozenset(
    {"unknown_key", "rotated_out", "revoked", "expired", "wrong_application", "address_not_allowed"}
)
MAX_FIELD = 512
# Tries at a publisher place when concurrent publishes of one key race for the same one.
PUBLISH_ATTEMPTS = 3


@dataclass(frozen=True)
class Callback:
    """The fields of one nginx-rtmp callback that Tally uses (the client's own args are ignored)."""

    event: str
    app: str
    name: str
    client_id: str
    addr: str
    flashver: str
    call: str

    @classmethod
    def from_form(cls, event: str, form: Mapping[str, str]) -> Callback:
        def field(name: str) -> str:
            return str(form.get(name, ""))[:MAX_FIELD]

        return cls(
            event, field("app"), field("name"), field("clientid"), field("addr"), field("flashver"), field("call")
        )

    @property
    def is_local_relay(self) -> bool:
        """nginx's own pull/push relay: flashver says so and addr is a URL, which a remote peer cannot fake."""
        return self.flashver == RELAY_FLASHVER and not _is_ip(self.addr)


@dataclass(frozen=True)
class Decision:
    """The answer for nginx: ``status`` (200, 302 or 403), ``location`` for a rename, ``reason`` if refused."""

    status: int
    location: str = ""
    reason: str = ""

    @property
    def allowed(self) -> bool:
        return self.status < 400


ALLOW = Decision(200)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class RecentKeys:
    """Keys this process admitted lately: (server, app, secret hash) → public name. Fail-open
    applications re-admit these while the database is unreachable (an encoder reconnecting)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._items: OrderedDict[tuple[int, str, str], str] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, server_id: int, app: str, digest: str, public_name: str) -> None:
        with self._lock:
            self._items[(server_id, app, digest)] = public_name
            self._items.move_to_end((server_id, app, digest))
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, server_id: int, app: str, digest: str) -> str | None:
        return self._items.get((server_id, app, digest))

    def forget_hashes(self, digests: set[str]) -> None:
        with self._lock:
            for item in [k for k in self._items if k[2] in digests]:
                del self._items[item]


recent_keys = RecentKeys()


def publish_digest(cb: Callback) -> str | None:
    """The hash of the secret a publish offers, when the decision will look it up (not for nginx's own
    relays, nor while the source address is blocked): the caller reads the server and the key in one
    statement (``hotpath.load_publish_context``)."""
    if cb.event != "publish" or cb.is_local_relay or publish_failures.is_blocked(cb.addr):
        return None
    return hash_secret(cb.name)


def handle(
    server: Server, cb: Callback, now: datetime | None = None, context: hotpath.PublishContext | None = None
) -> Decision:
    """Dispatch one callback to its handler (``context``: a publish's, if already read)."""
    now = now or timezone.now()
    if cb.event == "publish":
        return decide_publish(server, cb, now, context)
    if cb.event == "update":
        return decide_update(server, cb, now)
    if cb.event == "play":
        owner = play_owner(server, cb)
        if owner is not None:  # nginx pulls the stream from its origin and serves the player from the relay
            return Decision(302, location=f"{owner.rtmp_base_url}/{cb.app}/{cb.name}")
        sessions.start_player(server, cb.client_id, cb.app, cb.name, cb.addr)
    elif cb.event == "publish_done":
        sessions.close_publish(server.pk, cb.client_id, PublishSession.EndReason.PUBLISH_DONE, now)
    elif cb.event == "play_done":
        sessions.stop_player(server.pk, cb.client_id, now)
    elif cb.event == "done":  # follows both play_done and publish_done
        sessions.stop_player(server.pk, cb.client_id, now)
        sessions.close_publish(server.pk, cb.client_id, PublishSession.EndReason.PUBLISH_DONE, now)
    elif cb.event == "disconnect":
        sessions.stop_player(server.pk, cb.client_id, now)
        sessions.close_publish(server.pk, cb.client_id, PublishSession.EndReason.DISCONNECT, now)
    return ALLOW


def same_pool(server_id: int, other_id: int) -> bool:
    """Do both servers sit behind one TCP proxy? Then a key of an application on one publishes to the
    application of the same name on the other (the proxy chose the origin, not the encoder)."""
    proxies = ProxyMember.objects.filter(origin_id=other_id).values("proxy")
    return ProxyMember.objects.filter(origin_id=server_id, proxy__in=proxies).exists()


def play_owner(server: Server, cb: Callback) -> Server | None:
    """Play routing across origins behind a TCP proxy (which cannot see stream names): the origin where
    ``cb.name`` is published, when it is not this one and both sit behind the same proxy; else ``None``.

    nginx-rtmp turns an ``on_play`` 302 to ``rtmp://IP:PORT/app/name`` into a pull relay (lab README §8),
    so every player gets a 302 on a non-owner origin (one shared relay). The Location must carry an IP
    address: nginx cannot resolve a host name there.
    """
    if (
        cb.is_local_relay
        or PublishSession.objects.filter(
            server=server, app_name=cb.app, public_name=cb.name, ended__isnull=True
        ).exists()
    ):
        return None
    proxies = ProxyMember.objects.filter(origin=server).values("proxy")
    siblings = ProxyMember.objects.filter(proxy__in=proxies).exclude(origin=server).values("origin")
    session = (
        PublishSession.objects.filter(server__in=siblings, app_name=cb.app, public_name=cb.name, ended__isnull=True)
        .select_related("server")
        .order_by("-started")
        .first()
    )
    if session is None or not _is_ip(session.server.host):
        return None
    return session.server


def decide_publish(
    server: Server, cb: Callback, now: datetime, context: hotpath.PublishContext | None = None
) -> Decision:
    """Allow a publish (302 to the key's public name) or refuse it (403 with a recorded reason)."""
    if cb.is_local_relay:
        return ALLOW
    if publish_failures.is_blocked(cb.addr):
        events.publish_rejected(server.pk, cb.app, cb.addr, "rate_limited")
        return Decision(403, reason="rate_limited")  # no database work while blocked
    digest = hash_secret(cb.name)
    quick = True
    for _ in range(PUBLISH_ATTEMPTS):
        if context is None:
            context = hotpath.load_publish_context(server.pk, digest, cb.client_id, quick=quick)
        key, rows = context.key, context.open_sessions
        reason = _refusal(server, cb, key, digest, now)
        if reason:
            return _reject(server, cb, key, reason, now)
        assert key is not None
        live = [row for row in rows if row.key_id == key.pk]
        if any((row.server_id, row.client_id) == (server.pk, cb.client_id) for row in live):
            return Decision(302, location=key.public_name)  # a repeated on_publish: same answer, no new session
        if len(live) >= key.max_publishers:
            return _reject(server, cb, key, "too_many_publishers", now)
        stale = [row.id for row in rows if (row.server_id, row.client_id) == (server.pk, cb.client_id)]
        if stale:  # left open from before an nginx restart (client ids start again from 1)
            PublishSession.objects.filter(pk__in=stale).update(ended=now, end_reason=PublishSession.EndReason.STALE)
        taken = {row.slot for row in live}
        session = hotpath.insert_session(
            PublishSession(
                server_id=server.pk, application_id=key.application_id, key_id=key.pk, app_name=cb.app,
                public_name=key.public_name, client_id=cb.client_id, publisher_addr=cb.addr[:64],
                encoder=cb.flashver[:64], secret_hash_used=digest, started=now, last_update_at=now,
                publisher_slot=next(slot for slot in itertools.count() if slot not in taken),
            ),
        )  # fmt: skip
        if session is not None:
            break
        # A concurrent publish took the same place first, or this client id has an open session the
        # quick read leaves out: read again, in full.
        context, quick = None, False
    else:
        return _reject(server, cb, key, "too_many_publishers", now)
    recent_keys.remember(server.pk, cb.app, digest, key.public_name)
    events.session_started(session)
    return Decision(302, location=key.public_name)


def _refusal(server: Server, cb: Callback, key: StreamKey | None, digest: str, now: datetime) -> str:
    """Why this key may not publish here now, or "" when it may."""
    if key is None:
        return "unknown_key"
    if not key.secret_hash_valid(digest, now):
        return "rotated_out"
    state = key.state(now)
    if state != StreamKey.State.ACTIVE:
        return str(state)  # revoked or expired
    if key.application.name != cb.app or (
        key.application.server_id != server.pk and not same_pool(server.pk, key.application.server_id)
    ):
        return "wrong_application"
    if not key.address_allowed(cb.addr):
        return "address_not_allowed"
    return ""


def _reject(server: Server, cb: Callback, key: StreamKey | None, reason: str, now: datetime) -> Decision:
    PublishReject.objects.create(
        server=server, app_name=cb.app[:64], addr=cb.addr[:64], key=key, reason=reason, created=now,
        detail=f"key {key.prefix}…" if key else "",
    )  # fmt: skip
    if reason in AUTH_FAILURES and publish_failures.record_failure(cb.addr):
        log.warning("publish brute force: blocking %s after repeated failures", cb.addr)
    events.publish_rejected(server.pk, cb.app, cb.addr, reason)
    return Decision(403, reason=reason)


def decide_update(server: Server, cb: Callback, now: datetime) -> Decision:
    """on_update: keep a live publisher while its key stays valid; refuse (drop it) otherwise."""
    if cb.call != "update_publish":
        return ALLOW  # players are not key-gated
    found = list(
        PublishSession.objects.select_related("key__application")
        .filter(server=server, client_id=cb.client_id, ended__isnull=True)
        .order_by()[:1]
    )
    session = found[0] if found else None
    if session is None:
        return _adopt(server, cb, now)
    key = session.key
    if key is None or not key.is_usable(now) or not key.secret_hash_valid(session.secret_hash_used, now):
        sessions.close_publish(server.pk, cb.client_id, PublishSession.EndReason.REFUSED_UPDATE, now)
        return Decision(403, reason="key_no_longer_valid")
    PublishSession.objects.filter(pk=session.pk).update(last_update_at=now)
    return ALLOW


def _adopt(server: Server, cb: Callback, now: datetime) -> Decision:
    """A live publisher Tally has no session for (state lost, or published before Tally knew the server).

    Callbacks after a rename carry the original name, i.e. the secret: re-check it and re-open the session.
    """
    digest = hash_secret(cb.name)
    key = hotpath.load_key(digest)
    if _refusal(server, cb, key, digest, now):
        return Decision(403, reason="unknown_live_publisher")
    assert key is not None
    session = PublishSession.objects.create(
        server=server, application=key.application, key=key, app_name=cb.app, public_name=key.public_name,
        client_id=cb.client_id, publisher_addr=cb.addr[:64], encoder=cb.flashver[:64],
        secret_hash_used=digest, started=now, last_update_at=now,
    )  # fmt: skip
    events.session_started(session)
    return ALLOW


def decide_without_database(cb: Callback, server_id: int, fail_open: bool) -> Decision:
    """The answer when the database is unreachable.

    - publish: refused (fail-closed), unless the application is fail-open and this process admitted the
      same key lately: then the same rename again (an encoder reconnecting).
    - everything else: allowed. Nothing can be revoked while the database is down, and refusing on_update
      would drop every live stream.
    """
    if cb.event != "publish":
        return ALLOW
    if fail_open:
        public_name = recent_keys.get(server_id, cb.app, hash_secret(cb.name))
        if public_name:
            return Decision(302, location=public_name)
    return Decision(403, reason="database_unavailable")
