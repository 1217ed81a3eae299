"""Identity fixtures: the store backends of tests/store (SQLite and a throwaway PostgreSQL)."""

from __future__ import annotations

# The store's fixtures, so every identity test taking ``database_url`` or ``database`` runs on
# SQLite and on PostgreSQL exactly as the store's own tests do.
from tests.store.conftest import database, database_url, postgres_cluster, secrets

__all__ = ["database", "database_url", "postgres_cluster", "secrets"]
