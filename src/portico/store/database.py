"""Engines and transactions for the store: SQLite (WAL) by default, PostgreSQL by URL.

The same code runs on both; only ``database.url`` changes. Writes go through
``Database.write()`` so that SQLite takes its single write lock up front and PostgreSQL callers
get one transaction per unit of work.

Every engine made here turns the driver errors a user can fix -- a database that cannot be
reached, a file that is not a database, tables that are not Portico's -- into
:class:`DatabaseUnavailable` and :class:`SchemaMismatch` (one line: what, why, what to do), so
that callers, the ``portico`` command among them, never see a driver's traceback for them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from portico.core.errors import PorticoError

__all__ = [
    "Database",
    "DatabaseUnavailable",
    "SchemaMismatch",
    "StoreBusy",
    "StoreError",
    "UnsupportedDatabaseURL",
    "create_engine_for",
    "display_url",
    "normalise_url",
    "write_engine",
]

# Long enough to ride out another process's write transaction, short enough to surface a stuck one.
SQLITE_BUSY_TIMEOUT_MS = 5_000

_WRITE_OPTION = "portico_write"
_SQLITE_DRIVERS = {"sqlite", "sqlite+pysqlite"}
_POSTGRES_DRIVERS = {"postgresql", "postgres", "postgresql+psycopg"}


class StoreError(PorticoError):
    """Base class for errors raised by the store."""


class UnsupportedDatabaseURL(StoreError, ValueError):
    """The ``database.url`` names a database or driver Portico does not support."""


class DatabaseUnavailable(StoreError):
    """The database cannot be reached or opened (server down, wrong host, credentials, file)."""

    connection_lost = False
    """``True`` when a connection that was open broke during the statement (the server
    restarted, or terminated it): a new connection may well succeed."""


class StoreBusy(StoreError):
    """SQLite's write lock stayed with another process past the busy timeout: a retry later
    succeeds (callers answer 503 with ``Retry-After``)."""


class SchemaMismatch(StoreError):
    """The database holds tables that are not what this version of Portico expects."""


# SQLSTATE classes and codes (PostgreSQL appendix A) of the errors translated below.
_PG_UNREACHABLE_CLASSES = ("08", "28", "3D")  # connection, authorization, no such database
_PG_SCHEMA_CODES = {"42P01", "42703", "42P07", "42701"}  # undefined/duplicate table/column
_SQLITE_SCHEMA_MESSAGES = ("no such table", "no such column", "already exists", "has no column")


def _translate_error(context: sa.engine.ExceptionContext) -> None:
    """The ``handle_error`` hook of every engine: raise the store's own error instead of the
    driver's when the cause is one a user can fix; anything else goes through unchanged."""
    error = context.original_exception
    if not isinstance(error, context.dialect.loaded_dbapi.Error):
        # Not the driver's (a bug): it goes through as it is. (No SQLAlchemy pre-ping reaches
        # here: the pool's ping is ``_ping_if_idle``, on the driver's connection.)
        return
    url = "the database"
    if context.engine is not None:
        # As the user wrote it: without the driver Portico pins (postgresql+psycopg).
        engine_url = context.engine.url
        url = display_url(engine_url.set(drivername=engine_url.get_backend_name()))
    reason = _first_line(error)
    if isinstance(error, sqlite3.Error):
        if "unable to open database file" in reason:
            raise DatabaseUnavailable(
                f"cannot open the SQLite database {url}: {reason}; check that its folder exists "
                "and that Portico may write there, or correct database.url"
            ) from error
        if "file is not a database" in reason:
            raise DatabaseUnavailable(
                f"cannot open {url}: the file is not a SQLite database; point database.url at "
                "a new file or at a Portico database"
            ) from error
        if any(text in reason for text in _SQLITE_SCHEMA_MESSAGES):
            raise _schema_mismatch(url, reason) from error
        if "database is locked" in reason or "database is busy" in reason:
            raise StoreBusy(
                f"the SQLite database {url} is busy: another process held its write lock for "
                f"{SQLITE_BUSY_TIMEOUT_MS / 1000:g} s; try again"
            ) from error
        return
    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate in _PG_SCHEMA_CODES:
        raise _schema_mismatch(url, reason) from error
    unreachable = isinstance(sqlstate, str) and sqlstate[:2] in _PG_UNREACHABLE_CLASSES
    # No connection yet (refused, unknown host, timeout) or one that broke: psycopg gives no
    # SQLSTATE for those.
    if context.connection is None or context.is_disconnect or unreachable:
        unavailable = DatabaseUnavailable(
            f"cannot connect to the database at {url}: {reason}; start the database server, "
            "or correct database.url (host, port, user, password, database name)"
        )
        unavailable.connection_lost = context.connection is not None and context.is_disconnect
        raise unavailable from error


def _schema_mismatch(url: str, reason: str) -> SchemaMismatch:
    if "already exists" in reason:
        return SchemaMismatch(
            f"the database at {url} holds tables Portico did not make ({reason}); give Portico "
            "a database of its own in database.url"
        )
    return SchemaMismatch(
        f"the database at {url} lacks tables or columns this version of Portico uses "
        f"({reason}); run `portico db upgrade`, or give Portico a database of its own in "
        "database.url"
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0].rstrip(".") if text else type(error).__name__


def normalise_url(url: str) -> URL:
    """Parse ``url`` and pin the driver Portico ships with (sqlite3 or psycopg 3)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise UnsupportedDatabaseURL(f"cannot parse database URL {url!r}") from exc
    if parsed.drivername in _SQLITE_DRIVERS:
        return parsed.set(drivername="sqlite")
    if parsed.drivername in _POSTGRES_DRIVERS:
        return parsed.set(drivername="postgresql+psycopg")
    raise UnsupportedDatabaseURL(
        f"unsupported database URL scheme {parsed.drivername!r}: "
        "use sqlite:///path/to/portico.db or postgresql://user:password@host/dbname"
    )


def display_url(url: str | URL) -> str:
    """The URL with its password hidden, for messages and logs."""
    parsed = url if isinstance(url, URL) else make_url(url)
    return parsed.render_as_string(hide_password=True)


def create_engine_for(url: str) -> Engine:
    """A synchronous SQLAlchemy engine for ``url`` with Portico's connection settings."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    engine = sa.create_engine(parsed)
    sa.event.listen(engine, "handle_error", _translate_error)
    sa.event.listen(engine, "checkin", _mark_idle)
    sa.event.listen(engine, "checkout", _ping_if_idle)
    return engine


PING_AFTER_IDLE_SECONDS = 1.0
"""A pooled PostgreSQL connection that sat unused longer than this is asked ``SELECT 1`` before
it is lent; one lent sooner is not.

A long-lived process must survive PostgreSQL restarts and the reaping of idle connections:
SQLAlchemy's ``pool_pre_ping`` pings at every checkout, which on psycopg is two round trips
(``BEGIN``, ``SELECT 1``) before every transaction -- most of a publish's five. A connection that
was in use a moment ago is almost always still there; when it is not (the server restarted or
terminated it within that moment), the statement fails as a disconnect, SQLAlchemy discards
every connection of the pool made before it, and the next transaction gets a new one. Callers
whose work may be retried safely do so (the publisher: :mod:`portico.events.publishing`)."""
_IDLE_SINCE = "portico_idle_since"


def _mark_idle(_dbapi_connection: Any, record: Any) -> None:
    record.info[_IDLE_SINCE] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    idle_since = record.info.get(_IDLE_SINCE)
    if idle_since is None or time.monotonic() - idle_since <= PING_AFTER_IDLE_SECONDS:
        return  # new (just connected), or in use a moment ago
    autocommit = dbapi_connection.autocommit
    try:
        # Outside a transaction: a SELECT would open one, left open for the borrower.
        dbapi_connection.autocommit = True
        dbapi_connection.execute("SELECT 1")
        dbapi_connection.autocommit = autocommit
    except Exception as exc:
        # The pool discards the connection and lends another (a new one if need be).
        raise sa.exc.DisconnectionError(f"a pooled connection no longer answers: {exc}") from exc


def _sqlite_engine(url: URL) -> Engine:
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    sa.event.listen(engine, "handle_error", _translate_error)

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 module (it skips it before SELECT and DDL) so that
        # SQLAlchemy's transactions are real SQLite transactions; see _begin below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            _switch_to_wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        # A write transaction that starts DEFERRED and later upgrades to a writer can fail with
        # SQLITE_BUSY without waiting on busy_timeout; IMMEDIATE queues for the lock at BEGIN.
        if connection.get_execution_options().get(_WRITE_OPTION):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")

    return engine


def _switch_to_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode=WAL``, which needs the database to itself: when connections open a
    new file at once (processes migrating together), the switch can fail with "database is
    locked" without waiting on busy_timeout, so it is tried again for up to the same time."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def write_engine(engine: Engine) -> Engine:
    """``engine`` marked so that its transactions are write transactions (BEGIN IMMEDIATE)."""
    return engine.execution_options(**{_WRITE_OPTION: True})


class Database:
    """An engine and its sessions; the one object repositories are given transactions from."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.engine = create_engine_for(url)
        self._reads = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._writes = sessionmaker(bind=write_engine(self.engine), expire_on_commit=False)

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.url.get_backend_name()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session in a write transaction: committed on exit, rolled back on an exception."""
        with self._writes.begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session in a read transaction that never blocks writers."""
        with self._reads.begin() as session:
            yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.dispose()

    def __repr__(self) -> str:
        return f"Database({display_url(self.url)!r})"
