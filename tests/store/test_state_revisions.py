"""State revisions on SQLite and PostgreSQL: appended in order, each based on the latest, and a
write based on a revision that is no longer the latest refused, even when two race."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from portico.config.entities import document_sha256
from portico.store.database import Database
from portico.store.repositories import Author, StaleRevision, StateRevisions

AUTHOR = Author("cli:test")


def document(n: int) -> dict[str, Any]:
    return {"services": {f"s{n}": {"targets": ["http://127.0.0.1:1"]}}, "routes": [], "tenants": {}}


def append(db: Database, parent: int | None, n: int, source: str = "apply") -> int:
    doc = document(n)
    with db.write() as session:
        return StateRevisions(session).append(parent, doc, document_sha256(doc), AUTHOR, source).id


def test_revisions_chain_and_keep_the_document_as_written(database: Database) -> None:
    revisions = StateRevisions(database)
    assert revisions.latest() is None and revisions.latest_id() is None
    first = append(database, None, 1, "seed")
    second = append(database, first, 2)

    latest = revisions.latest()
    assert latest is not None and (latest.id, latest.parent_id) == (second, first)
    assert revisions.latest_id() == second
    assert latest.document == document(2)
    assert latest.sha256 == document_sha256(document(2))
    found = revisions.get(first)
    assert found is not None and found.source == "seed" and found.actor == "cli:test"


def test_a_write_based_on_a_stale_revision_is_refused_and_writes_nothing(
    database: Database,
) -> None:
    first = append(database, None, 1)
    append(database, first, 2)

    with pytest.raises(StaleRevision) as refused:
        append(database, first, 3)
    with pytest.raises(StaleRevision):
        append(database, None, 4)

    assert refused.value.latest == first + 1
    latest = StateRevisions(database).latest()
    assert latest is not None and latest.document == document(2)


def test_of_writers_racing_on_the_same_revision_exactly_one_lands(database: Database) -> None:
    base = append(database, None, 0)
    results: list[str] = []
    start = threading.Barrier(6)

    def write(n: int) -> None:
        start.wait()
        try:
            append(database, base, n)
        except StaleRevision:
            results.append("stale")
        else:
            results.append("landed")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(1, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(results) == ["landed"] + ["stale"] * 5
    latest = StateRevisions(database).latest()
    assert latest is not None and latest.parent_id == base
