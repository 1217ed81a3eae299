"""Store fixtures: every test taking ``database_url`` runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.postgres import PostgresCluster, cluster_for_session

from portico.store.database import Database
from portico.store.migrate import upgrade
from portico.store.secrets import Secrets
from portico.store.secrets.keys import MasterKeys, generate_key_text, parse_key
from portico.store.secrets.sources import FixedKeys

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    yield from cluster_for_session()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database, never migrated."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'portico.db'}"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    with cluster.database() as url:
        yield url


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """A migrated database, disposed of after the test."""
    upgrade(database_url)
    with Database(database_url) as db:
        yield db


def secrets_with(*keys: str) -> Secrets:
    """Secrets sealing with the first of ``keys`` (key texts), opening with all of them."""
    return Secrets(FixedKeys(MasterKeys.of([parse_key(key) for key in keys], "the test's keys")))


@pytest.fixture
def secrets() -> Secrets:
    """Secrets with one master key of their own."""
    return secrets_with(generate_key_text())
