"""Events fixtures: a migrated store on SQLite and on PostgreSQL, and a webhook receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.store.conftest import database, database_url, postgres_cluster, secrets
from tests.support.receivers import Receiver, running_receiver

__all__ = ["database", "database_url", "postgres_cluster", "receiver", "secrets"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running
