"""Repositories: the only way the rest of Portico reads and writes the store.

A repository is built over one of:

- a ``Session`` from ``Database.write()`` / ``Database.read()``: calls join that transaction, so
  a config revision and its audit entry commit (or roll back) together;
- an ``Engine`` or a ``Database``: each call runs in its own short transaction, which is what a
  thread-pool caller such as ``portico serve`` wants.

They return frozen dataclasses, never ORM objects, so nothing outside the store holds a session.

    with database.write() as session:
        revision_id = ConfigRevisions(session).record(sha256, "portico.yaml", text, "alice")
        AuditLog(session).append("alice", "config.apply", "portico.yaml", {"id": revision_id})
"""

from __future__ import annotations

import builtins
import getpass
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from portico.store.database import Database, write_engine
from portico.store.tables import AuditLogRow, ConfigRevisionRow, StateRevisionRow

__all__ = [
    "AuditEntry",
    "AuditFilter",
    "AuditLog",
    "Author",
    "ConfigRevision",
    "ConfigRevisions",
    "StaleRevision",
    "StateRevision",
    "StateRevisions",
    "StoreBinding",
    "command_line_actor",
]

StoreBinding = Session | sa.Engine | Database
"""What a repository is built over; see the module docstring."""

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ConfigRevision:
    id: int
    created_at: datetime
    sha256: str
    source: str
    body: str
    applied_by: str | None


@dataclass(frozen=True, slots=True)
class StateRevision:
    """One version of the served entities (docs/sync.md)."""

    id: int
    parent_id: int | None
    created_at: datetime
    actor: str
    actor_role: str | None
    request_id: str | None
    source: str
    document: dict[str, Any]
    sha256: str


class StaleRevision(Exception):
    """A write was based on a revision that is no longer the latest: another write landed
    first (a lost update, refused)."""

    def __init__(self, based_on: int | None, latest: int | None) -> None:
        self.based_on = based_on
        self.latest = latest
        super().__init__(
            f"the state changed since revision {based_on or 'none'}: revision {latest} is the "
            "latest now"
        )


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]
    actor_role: str | None = None
    tenant: str | None = None
    request_id: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Author:
    """Who makes a change, as the audit log records it: ``cli:alice``, or an admin token
    (``admin-token:<id>``) with its role, and the request that carried it."""

    actor: str
    role: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which entries :meth:`AuditLog.page` returns; ``None`` matches any value."""

    actor: str | None = None
    action: str | None = None
    target: str | None = None
    tenant: str | None = None
    since: datetime | None = None
    """Entries at or after this moment."""
    until: datetime | None = None
    """Entries before this moment."""


class _Repository:
    def __init__(self, binding: StoreBinding) -> None:
        self._binding = binding

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Session]:
        if isinstance(self._binding, Session):
            yield self._binding
            return
        engine = self._binding.engine if isinstance(self._binding, Database) else self._binding
        bind = write_engine(engine) if write else engine
        with Session(bind=bind, expire_on_commit=False) as session, session.begin():
            yield session


class ConfigRevisions(_Repository):
    """The history of applied configuration files."""

    def record(self, sha256: str, source: str, body: str, applied_by: str | None = None) -> int:
        """Store a revision unless the latest one has the same hash; return the revision's id.

        ``body`` is the file text as the user wrote it, before any secret is interpolated.
        """
        if not _SHA256.fullmatch(sha256):
            raise ValueError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
        with self._transaction(write=True) as session:
            if session.get_bind().dialect.name == "postgresql":
                # Readers go on; a second writer waits, so two applies cannot both see the same
                # "latest" and insert it twice. SQLite gets the same from BEGIN IMMEDIATE.
                session.execute(sa.text("LOCK TABLE config_revisions IN SHARE ROW EXCLUSIVE MODE"))
            latest = session.execute(
                sa.select(ConfigRevisionRow.id, ConfigRevisionRow.sha256)
                .order_by(ConfigRevisionRow.id.desc())
                .limit(1)
            ).first()
            if latest is not None:
                latest_id, latest_sha256 = latest
                if latest_sha256 == sha256:
                    return latest_id
            row = ConfigRevisionRow(sha256=sha256, source=source, body=body, applied_by=applied_by)
            session.add(row)
            session.flush()
            return row.id

    def latest(self) -> ConfigRevision | None:
        """The most recently recorded revision, if any."""
        query = sa.select(ConfigRevisionRow).order_by(ConfigRevisionRow.id.desc()).limit(1)
        with self._transaction(write=False) as session:
            row = session.scalars(query).first()
            return None if row is None else _revision(row)

    def list(self, limit: int = 20) -> builtins.list[ConfigRevision]:
        """The ``limit`` most recent revisions, newest first."""
        _check_limit(limit)
        query = sa.select(ConfigRevisionRow).order_by(ConfigRevisionRow.id.desc()).limit(limit)
        with self._transaction(write=False) as session:
            return [_revision(row) for row in session.scalars(query)]


class StateRevisions(_Repository):
    """The state revisions of the served entities: appended, never changed; the latest is
    served. Every gateway process polls :meth:`latest_id`."""

    def append(
        self,
        parent_id: int | None,
        document: Mapping[str, Any],
        sha256: str,
        author: Author,
        source: str,
    ) -> StateRevision:
        """Append a revision based on ``parent_id``, which must be the latest (``None``: the
        store holds none yet); else :class:`StaleRevision`, and nothing is written."""
        if not _SHA256.fullmatch(sha256):
            raise ValueError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
        with self._transaction(write=True) as session:
            if session.get_bind().dialect.name == "postgresql":
                # Writers queue here, readers go on (SQLite: BEGIN IMMEDIATE does the same), so
                # ids commit in order and a poller that sees id N has seen every id before it.
                session.execute(sa.text("LOCK TABLE state_revisions IN SHARE ROW EXCLUSIVE MODE"))
            latest = session.execute(sa.select(sa.func.max(StateRevisionRow.id))).scalar()
            if latest != parent_id:
                raise StaleRevision(parent_id, latest)
            row = StateRevisionRow(
                parent_id=parent_id,
                actor=author.actor,
                actor_role=author.role,
                request_id=author.request_id,
                source=source,
                document=dict(document),
                sha256=sha256,
            )
            session.add(row)
            session.flush()
            return _state(row)

    def latest_id(self) -> int | None:
        """The id of the latest revision (one indexed read): what the gateways poll."""
        with self._transaction(write=False) as session:
            query = sa.select(sa.func.max(StateRevisionRow.id))
            found: int | None = session.execute(query).scalar()
            return found

    def latest(self) -> StateRevision | None:
        query = sa.select(StateRevisionRow).order_by(StateRevisionRow.id.desc()).limit(1)
        with self._transaction(write=False) as session:
            row = session.scalars(query).first()
            return None if row is None else _state(row)

    def get(self, revision_id: int) -> StateRevision | None:
        with self._transaction(write=False) as session:
            row = session.get(StateRevisionRow, revision_id)
            return None if row is None else _state(row)


class AuditLog(_Repository):
    """An append-only record of changes made through the CLI, the admin API and the portal."""

    def append(
        self, actor: str, action: str, target: str, detail: Mapping[str, Any] | None = None
    ) -> int:
        """Add an entry and return its id. ``detail`` must be JSON-serialisable, without secrets."""
        return self.record(Author(actor), action, target, detail=detail)

    def record(
        self,
        author: Author,
        action: str,
        target: str,
        *,
        tenant: str | None = None,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> int:
        """Add an entry for a change of ``target`` by ``author``; ``before`` and ``after`` are
        the entity's states, JSON-serialisable and already without secrets."""
        row = AuditLogRow(
            actor=author.actor,
            action=action,
            target=target,
            detail=dict(detail or {}),
            actor_role=author.role,
            tenant=tenant,
            request_id=author.request_id,
            before_state=None if before is None else dict(before),
            after_state=None if after is None else dict(after),
        )
        with self._transaction(write=True) as session:
            session.add(row)
            session.flush()
            return row.id

    def page(
        self,
        where: AuditFilter,
        *,
        limit: int,
        after_id: int | None = None,
        newest_first: bool = True,
    ) -> builtins.list[AuditEntry]:
        """Up to ``limit`` entries matching ``where``, in the order they were appended (or the
        reverse), from the one after ``after_id``: keyset pagination on the id, which stays
        right while entries are appended."""
        _check_limit(limit)
        row = AuditLogRow
        conditions: builtins.list[sa.ColumnElement[bool]] = []
        for column, value in (
            (row.actor, where.actor),
            (row.action, where.action),
            (row.target, where.target),
            (row.tenant, where.tenant),
        ):
            if value is not None:
                conditions.append(column == value)
        if where.since is not None:
            conditions.append(row.at >= where.since)
        if where.until is not None:
            conditions.append(row.at < where.until)
        if after_id is not None:
            conditions.append(row.id < after_id if newest_first else row.id > after_id)
        order = row.id.desc() if newest_first else row.id.asc()
        query = sa.select(row).where(*conditions).order_by(order).limit(limit)
        with self._transaction(write=False) as session:
            return [_entry(found) for found in session.scalars(query)]

    def list(self, limit: int = 50) -> builtins.list[AuditEntry]:
        """The ``limit`` most recent entries, newest first."""
        _check_limit(limit)
        query = sa.select(AuditLogRow).order_by(AuditLogRow.id.desc()).limit(limit)
        with self._transaction(write=False) as session:
            return [_entry(row) for row in session.scalars(query)]


def _entry(row: AuditLogRow) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        at=row.at,
        actor=row.actor,
        action=row.action,
        target=row.target,
        detail=row.detail,
        actor_role=row.actor_role,
        tenant=row.tenant,
        request_id=row.request_id,
        before=row.before_state,
        after=row.after_state,
    )


def command_line_actor() -> str:
    """Who an audit entry of a ``portico`` command names: ``cli:<user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in a minimal container
        return "cli"


def _revision(row: ConfigRevisionRow) -> ConfigRevision:
    return ConfigRevision(
        id=row.id,
        created_at=row.created_at,
        sha256=row.sha256,
        source=row.source,
        body=row.body,
        applied_by=row.applied_by,
    )


def _state(row: StateRevisionRow) -> StateRevision:
    return StateRevision(
        id=row.id,
        parent_id=row.parent_id,
        created_at=row.created_at,
        actor=row.actor,
        actor_role=row.actor_role,
        request_id=row.request_id,
        source=row.source,
        document=row.document,
        sha256=row.sha256,
    )


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
