"""The publish callback's database access, in hand-written SQL.

nginx-rtmp blocks every publish on the callback, and on this path Django's query compilation cost
several times what PostgreSQL spends answering (about 0.5 ms per query on a small server against
0.1 ms). A publish decision is two statements in autocommit, no explicit transaction: one SELECT reads
the server, the key and its open sessions (``load_publish_context``; on PostgreSQL through a function
whose plan each connection keeps, because planning the statement cost PostgreSQL more than running it),
one INSERT opens the session (the key's last use is read from its sessions, so no key row is written).
The concurrent-publisher limit needs no row lock: each open session holds a publisher place below the
key's limit, and a unique index on (key, place) among open sessions refuses a second claim of the same
place (``insert_session`` returns None and the caller decides again).
Rows become model instances through ``Model.from_db`` with the fields' own database converters
(the same two steps ``QuerySet.raw`` takes, looked up once per column set instead of per row), and the
rules stay in ``hooks`` and the model methods. Works on PostgreSQL and SQLite.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from django.conf import settings
from django.db import DatabaseError, connection, models, transaction

from streams.models import Application, PublishSession, Server, StreamKey

M = TypeVar("M", bound=models.Model)

log = logging.getLogger(__name__)


class Columns:
    """Some of a model's columns, in the model's own column order (the order ``from_db`` expects values
    in), with each column's database converters looked up once per database vendor."""

    def __init__(self, model: type[models.Model], attnames: Sequence[str]) -> None:
        self.model = model
        self.fields = [f for f in model._meta.concrete_fields if f.attname in attnames]
        self.attnames = [f.attname for f in self.fields]
        assert self.attnames == list(attnames), f"{model.__name__}: unknown field or out of order"
        self._converters: dict[str, list[tuple[int, Any, list[Any]]]] = {}

    def select(self, alias: str) -> str:
        """The SELECT list of these columns of table ``alias``."""
        return ", ".join(f"{alias}.{field.column}" for field in self.fields)

    def converters(self) -> list[tuple[int, Any, list[Any]]]:
        """(position, column, converters) of each column that has any, for the current connection's vendor."""
        found = self._converters.get(connection.vendor)
        if found is None:
            found = []
            for i, field in enumerate(self.fields):
                column = field.get_col(self.model._meta.db_table)
                convert = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
                if convert:
                    found.append((i, column, convert))
            self._converters[connection.vendor] = found
        return found

    def build(self, values: Sequence[Any]) -> Any:
        """A model instance from one row of these columns, converted as the ORM would convert them."""
        converted = list(values)
        db = connection
        for i, column, convert in self.converters():
            for step in convert:
                converted[i] = step(converted[i], column, db)
        return self.model.from_db(db.alias, self.attnames, converted)


_SERVER = Columns(
    Server,
    ("id", "name", "control_url", "hook_secret", "hook_secret_previous", "hook_secret_rotated_at",
     "hook_allowed_cidrs"),
)  # fmt: skip
# The f-strings below assemble constant column lists and table names only; every value is a parameter.
_SERVER_SQL = f"SELECT {_SERVER.select('s')} FROM streams_server s WHERE s.id = %s"  # noqa: S608
_KEY = Columns(
    StreamKey,
    ("id", "application_id", "public_name", "prefix", "secret_hash", "previous_secret_hash", "previous_valid_until",
     "expires_at", "revoked_at", "max_publishers", "allowed_cidrs"),
)  # fmt: skip
_APPLICATION = Columns(Application, ("id", "server_id", "name"))
_KEY_SELECT = f"{_KEY.select('k')}, a.server_id, a.name"  # the application's id is the key's application_id
_KEY_FROM = "streams_streamkey k JOIN streams_application a ON a.id = k.application_id"
_KEY_MATCH = "k.secret_hash = %s OR k.previous_secret_hash = %s"
_KEY_SQL = f"SELECT {_KEY_SELECT} FROM {_KEY_FROM} WHERE {_KEY_MATCH}"  # noqa: S608
_SESSION_COLUMNS = ("id", "key_id", "server_id", "client_id", "publisher_slot")  # OpenSession's order
_SESSION_SELECT = ", ".join(f"p.{column}" for column in _SESSION_COLUMNS)

# A publish context row: the server's columns, the key's (the application's id is the key's
# application_id), then an open session's.
_KEY_AT = len(_SERVER.fields)
_APPLICATION_AT = _KEY_AT + len(_KEY.fields)
_SESSION_AT = _APPLICATION_AT + len(_APPLICATION.fields) - 1


def _nulls(count: int) -> str:
    return ", ".join(["NULL"] * count)


def _server_key_and_its_sessions(key_match: str, server: str) -> str:
    """Two branches of a publish context read: the server with the key ``key_match`` finds (NULL if none)
    and NULL session columns, then a row with only session columns for each open session of that key."""
    return (
        f"SELECT {_SERVER.select('s')}, {_KEY_SELECT}, {_nulls(len(_SESSION_COLUMNS))}"  # noqa: S608
        f" FROM streams_server s LEFT JOIN ({_KEY_FROM}) ON {key_match} WHERE s.id = {server}"
        f" UNION ALL SELECT {_nulls(_SESSION_AT)}, {_SESSION_SELECT} FROM streams_publishsession p"
        f" WHERE p.ended IS NULL AND p.key_id = (SELECT k.id FROM streams_streamkey k WHERE {key_match})"
    )


# Three branches, each reading its rows by equality on an index, whatever the planner's statistics
# say (joining the key to its sessions got a full scan of the open sessions while statistics lagged
# behind a fast-growing table): the server with the key of the current or previous secret and that
# key's open sessions, then a row with only session columns for each open session of this client id
# on this server.
_PUBLISH_CONTEXT_SQL = (
    f"{_server_key_and_its_sessions(_KEY_MATCH, '%s')}"  # noqa: S608
    f" UNION ALL SELECT {_nulls(_SESSION_AT)}, {_SESSION_SELECT} FROM streams_publishsession p"
    " WHERE p.ended IS NULL AND p.server_id = %s AND p.client_id = %s"
)

_INSERT_SESSION_SQL = (
    "INSERT INTO streams_publishsession (server_id, application_id, key_id, app_name, public_name, client_id,"
    " publisher_addr, encoder, secret_hash_used, started, last_update_at, publisher_slot, end_reason, viewers,"
    " peak_viewers) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, '', 0, 0)"
    " ON CONFLICT DO NOTHING RETURNING id"
)


class OpenSession(NamedTuple):
    id: int
    key_id: int | None
    server_id: int
    client_id: str
    slot: int | None


def load_server(server_id: int) -> Server | None:
    """The server with only the fields a callback needs (never its encrypted credentials)."""
    with connection.cursor() as cursor:
        cursor.execute(_SERVER_SQL, [server_id])
        row = cursor.fetchone()
    return _SERVER.build(row) if row else None


def _key_from_row(row: Sequence[Any]) -> StreamKey:
    """A key from its columns followed by its application's server id and name."""
    key: StreamKey = _KEY.build(row[: len(_KEY.fields)])
    # Built from the loaded columns only: a plain Application(...) would run the settings field's
    # default, a full settings validation, on every publish.
    key.application = _APPLICATION.build([key.application_id, *row[len(_KEY.fields) :]])
    return key


def load_key(digest: str) -> StreamKey | None:
    """The key whose current or previous secret hashes to ``digest``, with ``application`` attached
    (server id and name only; its other fields are deferred)."""
    with connection.cursor() as cursor:
        cursor.execute(_KEY_SQL, [digest, digest])
        row = cursor.fetchone()
    return _key_from_row(row) if row else None


@dataclass(frozen=True)
class PublishContext:
    """What a publish decision reads, in one statement: the server (None if unknown), the key its
    secret hashes to (None if none), the open sessions of that key and any open session of this client
    id on this server."""

    server: Server | None
    key: StreamKey | None
    open_sessions: list[OpenSession]


def load_publish_context(server_id: int, digest: str, client_id: str, quick: bool = True) -> PublishContext:
    """The publish context; ``quick``: through the connection's publish function when it has one.

    The quick read finds the key by its current secret only (the full statement runs when it finds none:
    an unknown key, or a previous secret in its grace period) and leaves out open sessions of this client
    id under other keys. A session INSERT that meets one is refused by the unique index on open sessions
    per client id (``insert_session`` returns None), and the caller reads again with ``quick=False``.
    """
    if quick:
        context = _quick_publish_context(server_id, digest)
        if context is not None and (context.server is None or context.key is not None):
            return context
    with connection.cursor() as cursor:
        cursor.execute(_PUBLISH_CONTEXT_SQL, [digest, digest, server_id, digest, digest, server_id, client_id])
        return _context(cursor.fetchall())


def _context(rows: list[Any]) -> PublishContext:
    head = next((row for row in rows if row[0] is not None), None)
    server = _SERVER.build(head[:_KEY_AT]) if head else None
    key = _key_from_row(head[_KEY_AT:_SESSION_AT]) if head and head[_KEY_AT] is not None else None
    found = {row[_SESSION_AT]: OpenSession(*row[_SESSION_AT:]) for row in rows if row[_SESSION_AT] is not None}
    return PublishContext(server, key, list(found.values()))


# The quick read: the server with the key of the current secret, then the key's open sessions. On
# PostgreSQL the full statement costs more to plan (0.3 ms of PostgreSQL's CPU per publish) than to run,
# so this one runs in a function whose plan is made once per connection. Every lookup in it is an
# equality on an indexed column, and the function's SET clauses, in force only while it runs, make the
# plan safe to keep while tables grow:
# - plan_cache_mode=force_generic_plan: planned once, not at each call;
# - enable_seqscan=off: a plan made while a table was nearly empty never scans it once it has grown.
#   The open sessions are read through an index that starts with the key (see the condition of
#   PublishSession's one_open_per_client constraint).
# A temporary function (pg_temp), created on each connection at its first publish: nothing in the
# schema to migrate, and its columns are always the models' (``%TYPE``).
_QUICK_CONTEXT_SQL = _server_key_and_its_sessions("k.secret_hash = p_digest", "p_server")
_CONTEXT_COLUMNS = [
    *((field.model._meta.db_table, field.column) for columns in (_SERVER, _KEY) for field in columns.fields),
    *(("streams_application", field.column) for field in _APPLICATION.fields[1:]),  # as in _KEY_SELECT
    *(("streams_publishsession", column) for column in _SESSION_COLUMNS),
]
_QUICK_CONTEXT_FUNCTION = (
    "CREATE OR REPLACE FUNCTION pg_temp.tally_publish_context(p_server bigint, p_digest text) RETURNS TABLE ("
    + ", ".join(f"c{i} {table}.{column}%TYPE" for i, (table, column) in enumerate(_CONTEXT_COLUMNS))
    + ") LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan SET enable_seqscan = off"
    f" AS $$ BEGIN RETURN QUERY {_QUICK_CONTEXT_SQL}; END $$"
)
_QUICK_CONTEXT_CALL = "SELECT * FROM pg_temp.tally_publish_context(%s::bigint, %s::text)"
# The connections (psycopg's) that have the function, and those that could not create it.
_with_function: weakref.WeakSet[Any] = weakref.WeakSet()
_without_function: weakref.WeakSet[Any] = weakref.WeakSet()


def _quick_publish_context(server_id: int, digest: str) -> PublishContext | None:
    """The quick read, or None where there is none: SQLite, no session state (TALLY_DB_PREPARE=0), or a
    connection that may not create temporary functions."""
    if connection.vendor != "postgresql" or not settings.DB_SESSION_STATE:
        return None
    connection.ensure_connection()
    raw = connection.connection
    if raw in _without_function:
        return None
    if raw not in _with_function:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(_QUICK_CONTEXT_FUNCTION)
        except DatabaseError as exc:
            if connection.connection is not raw or not connection.is_usable():
                raise  # the connection itself failed
            log.warning("publish decisions without the quick read on this connection: %s", exc)
            _without_function.add(raw)
            return None
        if not connection.in_atomic_block:  # kept; in a transaction it goes if that rolls back
            _with_function.add(raw)
    with connection.cursor() as cursor:
        cursor.execute(_QUICK_CONTEXT_CALL, [server_id, digest])
        return _context(cursor.fetchall())


def insert_session(session: PublishSession) -> PublishSession | None:
    """Insert a new open session and set its id.

    None, with nothing written, when an open session already holds the same publisher slot of the key
    or the same client id on the server (a concurrent publish got there first)."""
    dt = connection.ops.adapt_datetimefield_value
    values = [session.server_id, session.application_id, session.key_id, session.app_name, session.public_name,
              session.client_id, session.publisher_addr, session.encoder, session.secret_hash_used,
              dt(session.started), dt(session.last_update_at), session.publisher_slot]  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_SESSION_SQL, values)
        row = cursor.fetchone()
    if row is None:
        return None
    session.pk = row[0]
    session._state.adding = False
    return session
