"""Repositories on SQLite and PostgreSQL: config revisions, the audit log, timestamps, WAL."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.support.postgres import PostgresCluster

from portico.store.database import Database, create_engine_for
from portico.store.migrate import upgrade
from portico.store.repositories import AuditLog, ConfigRevision, ConfigRevisions

CONFIG_V1 = "gateway:\n  listen: 127.0.0.1:8080\nservices: {}\n"
CONFIG_V2 = "gateway:\n  listen: 127.0.0.1:9090\nservices: {}\n"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def record(db: Database, text: str, applied_by: str | None = None) -> int:
    with db.write() as session:
        return ConfigRevisions(session).record(sha(text), "portico.yaml", text, applied_by)


def revisions(db: Database, limit: int = 20) -> list[ConfigRevision]:
    with db.read() as session:
        return ConfigRevisions(session).list(limit)


def test_latest_is_none_before_anything_is_recorded(database: Database) -> None:
    with database.read() as session:
        assert ConfigRevisions(session).latest() is None
        assert ConfigRevisions(session).list() == []


def test_recorded_revision_is_the_latest(database: Database) -> None:
    before = datetime.now(UTC)
    revision_id = record(database, CONFIG_V1, applied_by="alice")

    with database.read() as session:
        latest = ConfigRevisions(session).latest()

    assert latest is not None
    assert latest.id == revision_id
    assert latest.sha256 == sha(CONFIG_V1)
    assert latest.source == "portico.yaml"
    assert latest.body == CONFIG_V1
    assert latest.applied_by == "alice"
    assert before - timedelta(seconds=1) <= latest.created_at <= datetime.now(UTC)


def test_recording_the_same_config_again_returns_the_existing_revision(
    database: Database,
) -> None:
    first = record(database, CONFIG_V1)
    second = record(database, CONFIG_V1, applied_by="bob")

    assert second == first
    assert [revision.id for revision in revisions(database)] == [first]


def test_only_the_latest_revision_deduplicates(database: Database) -> None:
    v1 = record(database, CONFIG_V1)
    v2 = record(database, CONFIG_V2)
    back_to_v1 = record(database, CONFIG_V1)

    assert len({v1, v2, back_to_v1}) == 3
    assert [revision.sha256 for revision in revisions(database)] == [
        sha(CONFIG_V1),
        sha(CONFIG_V2),
        sha(CONFIG_V1),
    ]


def test_list_is_newest_first_and_limited(database: Database) -> None:
    ids = [record(database, f"# revision {n}\n{CONFIG_V1}") for n in range(5)]

    assert [revision.id for revision in revisions(database, limit=3)] == ids[::-1][:3]
    created = [revision.created_at for revision in revisions(database)]
    assert created == sorted(created, reverse=True)


def test_list_rejects_a_limit_below_one(database: Database) -> None:
    with database.read() as session, pytest.raises(ValueError, match="limit"):
        ConfigRevisions(session).list(0)


def test_record_rejects_something_that_is_not_a_sha256(database: Database) -> None:
    with database.write() as session, pytest.raises(ValueError, match="sha256"):
        ConfigRevisions(session).record(sha(CONFIG_V1).upper(), "portico.yaml", CONFIG_V1)


def test_concurrent_records_of_the_same_config_store_one_revision(database: Database) -> None:
    ids: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def apply() -> None:
        try:
            start.wait()
            # Over the engine, as `portico serve` uses it from its thread pool.
            revisions_repo = ConfigRevisions(database.engine)
            ids.append(revisions_repo.record(sha(CONFIG_V2), "portico.yaml", CONFIG_V2))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=apply) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(set(ids)) == 1
    assert len(revisions(database)) == 1


def test_repositories_over_an_engine_or_database_commit_each_call(database: Database) -> None:
    revision_id = ConfigRevisions(database.engine).record(
        sha(CONFIG_V1), "portico.yaml", CONFIG_V1, "serve"
    )
    entry_id = AuditLog(database).append("serve", "config.apply", "portico.yaml")

    with database.read() as session:
        latest = ConfigRevisions(session).latest()
        entries = AuditLog(session).list()
    assert latest is not None
    assert (latest.id, latest.applied_by) == (revision_id, "serve")
    assert [entry.id for entry in entries] == [entry_id]
    assert ConfigRevisions(database).list() == [latest]


def test_audit_entries_are_listed_newest_first_with_their_detail(database: Database) -> None:
    detail = {"revision": 7, "routes": ["orders", "users"], "dry_run": False, "note": "café ☕"}
    with database.write() as session:
        audit = AuditLog(session)
        first = audit.append("alice", "config.apply", "portico.yaml", detail)
        second = audit.append("bob", "consumer.create", "consumer/acme")

    with database.read() as session:
        entries = AuditLog(session).list(limit=10)

    assert [entry.id for entry in entries] == [second, first]
    assert entries[0].detail == {}
    assert (entries[1].actor, entries[1].action, entries[1].target) == (
        "alice",
        "config.apply",
        "portico.yaml",
    )
    assert entries[1].detail == detail
    assert [entry.id for entry in AuditLog(session).list(limit=1)] == [second]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET actor = 'mallory'",
        "UPDATE audit_log SET detail = NULL WHERE action = 'config.apply'",
        "DELETE FROM audit_log",
    ],
)
def test_the_database_refuses_to_change_or_remove_an_audit_entry(
    database: Database, statement: str
) -> None:
    with database.write() as session:
        AuditLog(session).append("alice", "config.apply", "portico.yaml", {"n": 1})
    refused = pytest.raises(sa.exc.DatabaseError, match="the audit log is append-only")
    with refused, database.write() as session:
        session.execute(sa.text(statement))
    with database.read() as session:
        (entry,) = AuditLog(session).list(limit=10)
    assert (entry.actor, entry.detail) == ("alice", {"n": 1})
    # Appending goes on.
    with database.write() as session:
        AuditLog(session).append("bob", "consumer.create", "consumer/acme")


@pytest.mark.postgres
def test_postgresql_refuses_to_truncate_the_audit_log(postgres_cluster: PostgresCluster) -> None:
    with postgres_cluster.database() as url:
        upgrade(url)
        refused = pytest.raises(sa.exc.DatabaseError, match="the audit log is append-only")
        with Database(url) as database, refused, database.write() as session:
            session.execute(sa.text("TRUNCATE audit_log"))


def test_a_failed_transaction_keeps_neither_revision_nor_audit_entry(database: Database) -> None:
    with pytest.raises(RuntimeError, match="apply failed"), database.write() as session:
        revision_id = ConfigRevisions(session).record(sha(CONFIG_V1), "portico.yaml", CONFIG_V1)
        AuditLog(session).append("alice", "config.apply", "portico.yaml", {"id": revision_id})
        raise RuntimeError("apply failed")

    with database.read() as session:
        assert ConfigRevisions(session).latest() is None
        assert AuditLog(session).list(limit=10) == []


def test_timestamps_read_back_as_utc_aware(database: Database) -> None:
    record(database, CONFIG_V1)
    with database.write() as session:
        AuditLog(session).append("alice", "config.apply", "portico.yaml")

    # A new session has an empty identity map, so these values come from the database.
    with database.read() as session:
        latest = ConfigRevisions(session).latest()
        entry = AuditLog(session).list(limit=1)[0]

    assert latest is not None
    for stamp in (latest.created_at, entry.at):
        assert stamp.tzinfo is UTC
        assert abs(datetime.now(UTC) - stamp) < timedelta(minutes=1)


@pytest.mark.postgres
def test_postgresql_stores_utc_instants_in_timestamptz(postgres_cluster: PostgresCluster) -> None:
    with postgres_cluster.database() as url:
        upgrade(url)
        with Database(url) as db:
            record(db, CONFIG_V1)
            with db.engine.connect() as connection:
                types = (
                    connection.execute(
                        sa.text(
                            "SELECT data_type FROM information_schema.columns"
                            " WHERE (table_name, column_name) IN"
                            " (('config_revisions', 'created_at'), ('audit_log', 'at'))"
                        )
                    )
                    .scalars()
                    .all()
                )
                zone = connection.execute(sa.text("SHOW timezone")).scalar()
                stored = connection.execute(
                    sa.text("SELECT created_at FROM config_revisions")
                ).scalar_one()

    assert set(types) == {"timestamp with time zone"}
    assert zone == "Asia/Kolkata"
    # Read raw, in the server's zone: the instant is right, not a UTC wall time labelled +05:30.
    assert stored.utcoffset() == timedelta(hours=5, minutes=30)
    assert abs(datetime.now(UTC) - stored) < timedelta(minutes=1)


def test_sqlite_runs_in_wal_mode_with_the_store_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "portico.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = create_engine_for(url)
    try:
        with engine.connect() as connection:
            pragma = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
            }
    finally:
        engine.dispose()

    # synchronous 1 is NORMAL
    assert pragma == {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "synchronous": 1,
        "busy_timeout": 5000,
    }
    # WAL is a property of the file: a plain sqlite3 connection sees it too.
    with sqlite3.connect(path) as plain:
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_reader_is_not_blocked_by_an_open_write_transaction(database: Database) -> None:
    record(database, CONFIG_V1)
    with database.write() as writer:
        ConfigRevisions(writer).record(sha(CONFIG_V2), "portico.yaml", CONFIG_V2)
        with database.read() as reader:
            latest = ConfigRevisions(reader).latest()
    assert latest is not None
    assert latest.sha256 == sha(CONFIG_V1)
