"""The publish callback's database access, in hand-written SQL.

nginx-rtmp blocks every publish on the callback, and on this path Django's query compilation cost
several times what PostgreSQL spends answering (about 0.5 ms per query on a small server against
0.1 ms). These few fixed statements keep the decision to one short transaction of cheap round trips.
Rows become model instances through ``Model.from_db`` with the fields' own database converters
(the same two steps ``QuerySet.raw`` takes, without its per-query column mapping), and the rules stay
in ``hooks`` and the model methods. Works on PostgreSQL and SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from django.db import connection, models

from streams.models import Application, PublishSession, Server, StreamKey

M = TypeVar("M", bound=models.Model)


def _fields(model: type[models.Model], attnames: Sequence[str]) -> list[Any]:
    """The model's fields named by ``attnames``, which must follow the model's own column order (the order
    ``from_db`` expects values in)."""
    fields = [f for f in model._meta.concrete_fields if f.attname in attnames]
    assert [f.attname for f in fields] == list(attnames), f"{model.__name__}: unknown field or out of order"
    return fields


# Each SELECT lists exactly the columns of the field list next to it, in that order.
_SERVER_FIELDS = _fields(
    Server,
    ("id", "name", "control_url", "hook_secret", "hook_secret_previous", "hook_secret_rotated_at",
     "hook_allowed_cidrs"),
)  # fmt: skip
_SERVER_SQL = (
    "SELECT id, name, control_url, hook_secret, hook_secret_previous, hook_secret_rotated_at, hook_allowed_cidrs"
    " FROM streams_server WHERE id = %s"
)
_KEY_FIELDS = _fields(
    StreamKey,
    ("id", "application_id", "public_name", "prefix", "secret_hash", "previous_secret_hash", "previous_valid_until",
     "expires_at", "revoked_at", "max_publishers", "allowed_cidrs"),
)  # fmt: skip
_APPLICATION_FIELDS = _fields(Application, ("id", "server_id", "name"))
_KEY_SQL = (
    "SELECT k.id, k.application_id, k.public_name, k.prefix, k.secret_hash, k.previous_secret_hash,"
    " k.previous_valid_until, k.expires_at, k.revoked_at, k.max_publishers, k.allowed_cidrs,"
    " a.server_id, a.name"
    " FROM streams_streamkey k JOIN streams_application a ON a.id = k.application_id"
    " WHERE k.secret_hash = %s OR k.previous_secret_hash = %s"
)
_OPEN_SESSIONS_SQL = (
    "SELECT id, key_id, server_id, client_id FROM streams_publishsession"
    " WHERE ended IS NULL AND (key_id = %s OR (server_id = %s AND client_id = %s))"
)
_INSERT_SESSION_SQL = (
    "INSERT INTO streams_publishsession (server_id, application_id, key_id, app_name, public_name, client_id,"
    " publisher_addr, encoder, secret_hash_used, started, last_update_at, end_reason, viewers, peak_viewers)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, '', 0, 0) RETURNING id"
)
_TOUCH_KEY_SQL = "UPDATE streams_streamkey SET last_used_at = %s WHERE id = %s"
# PostgreSQL runs both in one statement (one round trip fewer on every accepted publish); the CTE's
# UPDATE runs to completion even though nothing reads its result.
_INSERT_SESSION_AND_TOUCH_KEY_SQL = f"WITH touched AS ({_TOUCH_KEY_SQL}) {_INSERT_SESSION_SQL}"


def _build(model: type[M], fields: list[Any], values: Sequence[Any]) -> M:
    """A model instance from one row of ``fields``' columns, converted as the ORM would convert them."""
    converted = list(values)
    for i, field in enumerate(fields):
        column = field.get_col(model._meta.db_table)
        for convert in connection.ops.get_db_converters(column) + column.get_db_converters(connection):
            converted[i] = convert(converted[i], column, connection)
    return model.from_db(connection.alias, [f.attname for f in fields], converted)


def load_server(server_id: int) -> Server | None:
    """The server with only the fields a callback needs (never its encrypted credentials)."""
    with connection.cursor() as cursor:
        cursor.execute(_SERVER_SQL, [server_id])
        row = cursor.fetchone()
    return _build(Server, _SERVER_FIELDS, row) if row else None


def load_key(digest: str, *, lock: bool) -> StreamKey | None:
    """The key whose current or previous secret hashes to ``digest``, with ``application`` attached
    (server id and name only; its other fields are deferred). ``lock`` takes the key's row lock
    (PostgreSQL) for the rest of the transaction."""
    sql = _KEY_SQL + (" FOR UPDATE OF k" if lock and connection.features.has_select_for_update_of else "")
    with connection.cursor() as cursor:
        cursor.execute(sql, [digest, digest])
        row = cursor.fetchone()
    if row is None:
        return None
    key = _build(StreamKey, _KEY_FIELDS, row[: len(_KEY_FIELDS)])
    # Built from the loaded columns only: a plain Application(...) would run the settings field's
    # default, a full settings validation, on every publish.
    key.application = _build(Application, _APPLICATION_FIELDS, [key.application_id, *row[len(_KEY_FIELDS) :]])
    return key


def open_sessions(key_id: int, server_id: int, client_id: str) -> list[tuple[int, int | None, int, str]]:
    """Open sessions of the key, and any open session of this client on this server: (id, key, server, client)."""
    with connection.cursor() as cursor:
        cursor.execute(_OPEN_SESSIONS_SQL, [key_id, server_id, client_id])
        return [tuple(row) for row in cursor.fetchall()]  # type: ignore[misc]


def insert_session(session: PublishSession, *, touch_key_at: datetime) -> PublishSession:
    """Insert a new open session, set its id, and record ``touch_key_at`` as its key's last use."""
    dt = connection.ops.adapt_datetimefield_value
    values = [session.server_id, session.application_id, session.key_id, session.app_name, session.public_name,
              session.client_id, session.publisher_addr, session.encoder, session.secret_hash_used,
              dt(session.started), dt(session.last_update_at)]  # fmt: skip
    touch = [dt(touch_key_at), session.key_id]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(_INSERT_SESSION_AND_TOUCH_KEY_SQL, touch + values)
            session.pk = cursor.fetchone()[0]
        else:
            cursor.execute(_INSERT_SESSION_SQL, values)
            session.pk = cursor.fetchone()[0]
            cursor.execute(_TOUCH_KEY_SQL, touch)
    session._state.adding = False
    return session
