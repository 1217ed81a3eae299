"""Engines and transactions for the store: SQLite (WAL) by default, PostgreSQL by URL.

The same code runs on both; only ``database.url`` changes. Writes go through
``Database.write()`` so that SQLite takes its single write lock up front and PostgreSQL callers
get one transaction per unit of work.
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

__all__ = [
    "Database",
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


class StoreError(Exception):
    """Base class for errors raised by the store."""


class UnsupportedDatabaseURL(StoreError, ValueError):
    """The ``database.url`` names a database or driver Portico does not support."""


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
    # pre_ping: a long-lived process must survive PostgreSQL restarts and idle-connection reaping.
    return sa.create_engine(parsed, pool_pre_ping=True)


def _sqlite_engine(url: URL) -> Engine:
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)

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
