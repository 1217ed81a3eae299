"""The admin API's store on SQLite and PostgreSQL: admin tokens (only the hash kept, refused once
expired or revoked), the audit log's filters and keyset pages, and a refused precondition that
leaves a key and the audit log as they were."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tests.store.conftest import database, database_url, postgres_cluster

from portico.admin.roles import Role
from portico.admin.tokens import AdminTokens, generate_token
from portico.identity.key_changes import create_key, revoke_key
from portico.identity.store import ApiKeys
from portico.store.database import Database
from portico.store.repositories import AuditFilter, AuditLog, Author

__all__ = ["database", "database_url", "postgres_cluster"]


def test_a_token_verifies_until_it_expires_or_is_revoked(database: Database) -> None:
    now = datetime.now(UTC)
    tokens = AdminTokens(database)
    lasting, brief = generate_token(), generate_token()
    tokens.add(lasting, Role.OPERATOR, tenant="acme", now=now)
    tokens.add(brief, Role.VIEWER, expires_at=now + timedelta(minutes=1), now=now)

    found = tokens.verify(lasting.token, now)
    assert found is not None and found.role is Role.OPERATOR and found.tenant == "acme"
    assert tokens.verify(brief.token, now) is not None
    assert tokens.verify(brief.token, now + timedelta(minutes=2)) is None
    assert tokens.verify(lasting.token[:-1] + "x", now) is None
    assert tokens.verify(lasting.token.replace(lasting.id, brief.id), now) is None

    revoked, changed = tokens.revoke(lasting.id, now=now)
    assert changed and revoked.status(now) == "revoked"
    assert tokens.verify(lasting.token, now) is None
    assert tokens.revoke(lasting.id)[1] is False
    with database.engine.connect() as connection:
        stored = repr(list(connection.exec_driver_sql("SELECT * FROM admin_tokens")))
    assert lasting.token not in stored and lasting.sha256 in stored


def test_the_audit_log_filters_and_pages_by_id(database: Database) -> None:
    log = AuditLog(database)
    ids = [
        log.record(
            Author(f"admin-token:t{n % 2}", "operator", f"r{n}"),
            "api_key.create",
            f"k{n}",
            tenant="acme" if n % 3 else "globex",
            after={"n": n},
        )
        for n in range(7)
    ]
    everything = AuditFilter()
    newest = log.page(everything, limit=3)
    assert [e.id for e in newest] == ids[::-1][:3]
    following = log.page(everything, limit=3, after_id=newest[-1].id)
    assert [e.id for e in following] == ids[::-1][3:6]
    oldest = log.page(everything, limit=2, newest_first=False)
    assert [e.id for e in oldest] == ids[:2]
    acme = log.page(AuditFilter(tenant="acme", actor="admin-token:t1"), limit=10)
    assert {(e.tenant, e.actor) for e in acme} == {("acme", "admin-token:t1")}
    one = log.page(AuditFilter(target="k4"), limit=10)
    assert [(e.after, e.request_id, e.actor_role) for e in one] == [({"n": 4}, "r4", "operator")]
    later = log.page(AuditFilter(since=datetime.now(UTC) + timedelta(minutes=1)), limit=10)
    assert later == []


def test_a_refused_precondition_changes_nothing_and_records_nothing(database: Database) -> None:
    author = Author("admin-token:x", "operator", "req-1")
    with database.write() as session:
        issued = create_key(session, "acme/billing", author)
    before = len(AuditLog(database).list(limit=100))

    def refuse(_key: object) -> None:
        raise LookupError("stale")

    with pytest.raises(LookupError), database.write() as session:
        revoke_key(session, issued.stored.id, author, precondition=refuse)
    key = ApiKeys(database).get(issued.stored.id)
    assert key is not None and key.revoked_at is None
    assert len(AuditLog(database).list(limit=100)) == before
