"""Migrations: from an empty database to head, idempotently, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from tests.support.postgres import PostgresCluster

from portico.store.database import Database, UnsupportedDatabaseURL, create_engine_for
from portico.store.migrate import (
    VERSION_TABLE,
    SchemaNotCurrent,
    UnknownSchemaRevision,
    current_revision,
    db_upgrade_command,
    ensure_current,
    head_revision,
    upgrade,
)
from portico.store.repositories import AuditLog
from portico.store.tables import metadata


def table_names(url: str) -> set[str]:
    engine = create_engine_for(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def stamp(url: str, revision: str) -> None:
    """Mark the database as migrated to ``revision`` without running anything."""
    version = sa.Table(VERSION_TABLE, sa.MetaData(), sa.Column("version_num", sa.String(32)))
    engine = create_engine_for(url)
    try:
        with engine.begin() as connection:
            version.create(connection)
            connection.execute(version.insert().values(version_num=revision))
    finally:
        engine.dispose()


def test_an_empty_database_has_no_revision(database_url: str) -> None:
    assert current_revision(database_url) is None
    assert table_names(database_url) == set()


def test_upgrade_from_empty_creates_the_tables(database_url: str) -> None:
    upgrade(database_url)

    assert table_names(database_url) == {
        "config_revisions",
        "audit_log",
        "api_keys",
        "identity_changes",
        "signing_keys",
        "revoked_tokens",
        "client_assertion_jtis",
        "admin_tokens",
        "state_revisions",
        "events",
        "webhook_endpoints",
        "webhook_endpoint_secrets",
        "webhook_deliveries",
        "webhook_attempts",
        "inbound_webhooks",
        "webhook_endpoint_changes",
        VERSION_TABLE,
    }
    assert current_revision(database_url) == head_revision() == "0009"


def test_migrated_schema_matches_the_table_definitions(database_url: str) -> None:
    upgrade(database_url)

    engine = create_engine_for(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "version_table": VERSION_TABLE}
            )
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_upgrading_twice_changes_nothing(database_url: str) -> None:
    upgrade(database_url)
    with Database(database_url) as db, db.write() as session:
        AuditLog(session).append("alice", "config.apply", "portico.yaml", {})

    upgrade(database_url)

    assert current_revision(database_url) == head_revision()
    with Database(database_url) as db, db.read() as session:
        assert [entry.actor for entry in AuditLog(session).list()] == ["alice"]


def test_concurrent_upgrades_both_succeed(database_url: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            upgrade(database_url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert current_revision(database_url) == head_revision()


def test_db_upgrade_command_reports_from_and_to(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert db_upgrade_command(database_url) == 0
    first = capsys.readouterr().out
    assert db_upgrade_command(database_url) == 0
    second = capsys.readouterr().out

    assert "upgraded from (empty) to 0009 (The audit log append-only in the database" in first
    assert "already at revision 0009" in second
    assert "nothing to do" in second


def test_ensure_current_migrates_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/data/portico.db"

    ensure_current(url)

    assert current_revision(url) == head_revision()


@pytest.mark.postgres
def test_ensure_current_asks_for_db_upgrade_on_postgresql(
    postgres_cluster: PostgresCluster,
) -> None:
    with postgres_cluster.database() as url:
        with pytest.raises(SchemaNotCurrent, match="run `portico db upgrade`"):
            ensure_current(url)
        assert current_revision(url) is None

        upgrade(url)
        ensure_current(url)


def test_a_revision_from_a_newer_portico_is_reported(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    stamp(database_url, "9999")

    with pytest.raises(UnknownSchemaRevision, match="'9999'"):
        ensure_current(database_url)
    assert db_upgrade_command(database_url) == 1
    assert "newer Portico" in capsys.readouterr().err


@pytest.mark.postgres
def test_db_upgrade_command_hides_the_password(
    postgres_cluster: PostgresCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    with postgres_cluster.database() as url:
        name = url.rsplit("/", 1)[1]
        assert db_upgrade_command(postgres_cluster.url(name, password="s3cret")) == 0

    out = capsys.readouterr().out
    assert "s3cret" not in out
    assert f"postgresql://postgres:***@127.0.0.1:{postgres_cluster.port}/{name}" in out


def test_db_upgrade_command_fails_cleanly_when_the_server_is_unreachable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    assert db_upgrade_command("postgresql://portico:s3cret@127.0.0.1:1/portico") == 1

    err = capsys.readouterr().err
    assert "Connection refused" in err
    assert "s3cret" not in err


def test_unsupported_database_urls_are_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UnsupportedDatabaseURL, match="mysql"):
        upgrade("mysql://portico@localhost/portico")
    assert db_upgrade_command("mysql://portico@localhost/portico") == 1
    assert "sqlite:///" in capsys.readouterr().err
