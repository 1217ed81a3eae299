"""The API key repository and the identity change counter, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from portico.identity.apikeys import generate_key
from portico.identity.store import ApiKeyNotFound, ApiKeyNotUsable, ApiKeys, IdentityChanges
from portico.store.database import Database

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def add(
    database: Database, consumer: str = "acme/billing", expires_at: datetime | None = None
) -> str:
    new = generate_key()
    ApiKeys(database).add(new.id, consumer, new.sha256, expires_at=expires_at, now=NOW)
    return new.id


def test_every_identity_write_bumps_the_change_counter(database: Database) -> None:
    changes = IdentityChanges(database)
    versions = [changes.version()]

    key = add(database)
    versions.append(changes.version())
    new = generate_key()
    ApiKeys(database).rotate(key, new.id, new.sha256, overlap_until=NOW + timedelta(hours=1))
    versions.append(changes.version())
    ApiKeys(database).revoke(new.id)
    versions.append(changes.version())

    assert versions == [0, 1, 2, 3]


def test_revoking_a_revoked_key_changes_nothing(database: Database) -> None:
    key = add(database)
    first = ApiKeys(database).revoke(key, now=NOW)
    version = IdentityChanges(database).version()

    again = ApiKeys(database).revoke(key, now=NOW + timedelta(hours=1))

    assert again.revoked_at == first.revoked_at == NOW
    assert IdentityChanges(database).version() == version


def test_a_write_that_rolls_back_does_not_move_the_counter(database: Database) -> None:
    with pytest.raises(RuntimeError), database.write() as session:
        new = generate_key()
        ApiKeys(session).add(new.id, "acme/billing", new.sha256)
        raise RuntimeError("the caller failed after the insert")

    assert IdentityChanges(database).version() == 0
    assert ApiKeys(database).list() == []


def test_only_the_hash_and_times_are_stored(database: Database) -> None:
    new = generate_key()
    expires = NOW + timedelta(days=30)

    stored = ApiKeys(database).add(new.id, "acme/billing", new.sha256, expires_at=expires, now=NOW)

    assert ApiKeys(database).get(new.id) == stored
    assert stored.sha256 == new.sha256
    assert stored.created_at == NOW and stored.expires_at == expires
    assert stored.status(NOW) == "active"
    assert stored.status(expires) == "expired"


def test_a_rotated_key_stays_usable_until_its_overlap_ends(database: Database) -> None:
    old = add(database)
    new = generate_key()
    overlap_until = NOW + timedelta(hours=24)

    before, created = ApiKeys(database).rotate(
        old, new.id, new.sha256, overlap_until=overlap_until, now=NOW
    )

    assert before.rotated_to == new.id and before.valid_until == overlap_until
    assert created.consumer == "acme/billing"
    during = {key.id for key in ApiKeys(database).usable(NOW + timedelta(hours=23))}
    after = {key.id for key in ApiKeys(database).usable(overlap_until)}
    assert during == {old, new.id}
    assert after == {new.id}


def test_revoked_and_expired_keys_are_not_usable(database: Database) -> None:
    live = add(database)
    expiring = add(database, expires_at=NOW + timedelta(minutes=5))
    revoked = add(database)
    ApiKeys(database).revoke(revoked, now=NOW)

    usable = {key.id for key in ApiKeys(database).usable(NOW + timedelta(minutes=5))}

    assert usable == {live}
    assert expiring not in usable


@pytest.mark.parametrize("first", ["revoke", "rotate"])
def test_a_revoked_or_rotated_key_cannot_be_rotated(database: Database, first: str) -> None:
    key = add(database)
    if first == "revoke":
        ApiKeys(database).revoke(key)
    else:
        other = generate_key()
        ApiKeys(database).rotate(key, other.id, other.sha256, overlap_until=NOW)
    version = IdentityChanges(database).version()
    new = generate_key()

    with pytest.raises(ApiKeyNotUsable):
        ApiKeys(database).rotate(key, new.id, new.sha256, overlap_until=NOW)

    assert ApiKeys(database).get(new.id) is None
    assert IdentityChanges(database).version() == version


def test_unknown_keys_cannot_be_revoked_or_rotated(database: Database) -> None:
    with pytest.raises(ApiKeyNotFound):
        ApiKeys(database).revoke("nosuchkey0")
    with pytest.raises(ApiKeyNotFound):
        ApiKeys(database).rotate("nosuchkey0", "n3w", "0" * 64, overlap_until=NOW)


def test_keys_are_listed_per_consumer(database: Database) -> None:
    a = add(database, "acme/billing")
    b = add(database, "globex/shop")

    assert [k.id for k in ApiKeys(database).list("acme/billing")] == [a]
    assert {k.id for k in ApiKeys(database).list()} == {a, b}
