"""The authorization server's rows, on SQLite and PostgreSQL: keys, revocations, assertions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from portico.identity.oauth.keys import KeyRing
from portico.identity.oauth.repository import ClientAssertions, RevokedTokens, SigningKeys
from portico.identity.store import IdentityChanges
from portico.store.database import Database

HOUR = timedelta(hours=1)


def test_first_key_is_created_once(database: Database) -> None:
    keys = SigningKeys(database)
    first = keys.rotate("EdDSA", HOUR, only_if_needed=True)
    again = keys.rotate("EdDSA", HOUR, only_if_needed=True)
    assert first is not None and first.retired == ()
    assert again is None
    assert [k.kid for k in keys.published()] == [first.created.kid]


def test_rotation_retires_the_active_key_and_announces_the_change(database: Database) -> None:
    keys = SigningKeys(database)
    first = keys.rotate("EdDSA", HOUR)
    before = IdentityChanges(database).version()
    now = datetime.now(UTC)
    second = keys.rotate("RS256", HOUR, now=now)
    assert first is not None and second is not None
    (retired,) = second.retired
    assert retired.kid == first.created.kid
    assert retired.retired_at == now and retired.expires_at == now + HOUR
    assert IdentityChanges(database).version() > before

    ring = KeyRing.build(keys.published(), now + timedelta(seconds=1))
    assert ring.signing is not None and ring.signing.kid == second.created.kid
    assert ring.signing.algorithm == "RS256"
    assert set(ring.by_kid) == {first.created.kid, second.created.kid}
    assert ring.next_change == now + HOUR


def test_keys_past_their_publication_are_not_loaded_and_are_deleted(database: Database) -> None:
    keys = SigningKeys(database)
    past = datetime.now(UTC) - timedelta(days=1)
    first = keys.rotate("EdDSA", timedelta(seconds=10), now=past)
    keys.rotate("EdDSA", timedelta(seconds=10), now=past + timedelta(seconds=1))
    assert first is not None
    assert first.created.kid not in {k.kid for k in keys.published()}
    third = keys.rotate("EdDSA", HOUR)
    assert third is not None
    assert len(keys.published()) == 2  # the third and the one it retired; the first is gone


def test_a_private_key_survives_the_round_trip_through_the_store(database: Database) -> None:
    keys = SigningKeys(database)
    rotation = keys.rotate("RS256", HOUR)
    assert rotation is not None
    (loaded,) = keys.published()
    message = b"portico"
    signature = loaded.private_key.sign(message, *_rsa_padding())
    rotation.created.private_key.public_key().verify(signature, message, *_rsa_padding())


def _rsa_padding() -> tuple[object, object]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return padding.PKCS1v15(), hashes.SHA256()


def test_a_revocation_is_recorded_once_and_announced(database: Database) -> None:
    revoked = RevokedTokens(database)
    before = IdentityChanges(database).version()
    until = datetime.now(UTC) + HOUR
    assert revoked.revoke("jti-1", until) is True
    assert revoked.revoke("jti-1", until) is False
    assert IdentityChanges(database).version() == before + 1
    assert revoked.current() == {"jti-1": pytest.approx(until.timestamp())}


def test_expired_revocations_are_forgotten(database: Database) -> None:
    revoked = RevokedTokens(database)
    now = datetime.now(UTC)
    revoked.revoke("old", now - timedelta(seconds=1))
    revoked.revoke("new", now + HOUR)
    assert set(revoked.current(now)) == {"new"}
    assert revoked.purge(now) == 1


def test_a_client_assertion_id_is_accepted_once(database: Database) -> None:
    assertions = ClientAssertions(database)
    until = datetime.now(UTC) + timedelta(minutes=5)
    assert assertions.remember("client-a abc", until) is True
    assert assertions.remember("client-a abc", until) is False
    assert assertions.remember("client-b abc", until) is True
    assert assertions.purge(datetime.now(UTC) + timedelta(minutes=10)) == 2
