"""SQLite's write lock held past the busy timeout is the store's own error, one line, never the
driver's: the webhooks APIs answer it 503 ``store-unavailable`` with ``Retry-After``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from portico.store.database import Database, StoreBusy
from portico.store.migrate import upgrade


def test_a_write_lock_held_by_another_process_is_store_busy(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'portico.db'}"
    upgrade(url)
    holder = sqlite3.connect(tmp_path / "portico.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with (
            Database(url) as database,
            pytest.raises(StoreBusy) as busy,
            database.write() as session,
        ):
            session.execute(sa.text("DELETE FROM events"))
        message = str(busy.value)
        assert "is busy" in message and "try again" in message and "\n" not in message
    finally:
        holder.execute("ROLLBACK")
        holder.close()
