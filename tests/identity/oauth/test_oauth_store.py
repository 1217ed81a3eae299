"""The authorization server's rows, on SQLite and PostgreSQL: keys (their private halves sealed),
revocations, assertions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from tests.store.conftest import secrets_with

from portico.identity.oauth.keys import KeyRing, SigningKey, private_pem
from portico.identity.oauth.repository import ClientAssertions, RevokedTokens, SigningKeys
from portico.identity.store import IdentityChanges
from portico.store.database import Database
from portico.store.migrate import upgrade
from portico.store.secrets import Secrets, SecretTampered, UnknownSecretsKey
from portico.store.secrets.keys import generate_key_text

HOUR = timedelta(hours=1)


def test_first_key_is_created_once(database: Database, secrets: Secrets) -> None:
    keys = SigningKeys(database, secrets)
    first = keys.rotate("EdDSA", HOUR, only_if_needed=True)
    again = keys.rotate("EdDSA", HOUR, only_if_needed=True)
    assert first is not None and first.retired == ()
    assert again is None
    assert [k.kid for k in keys.published()] == [first.created.kid]


def test_a_process_that_started_first_but_commits_second_makes_no_second_key(
    database: Database, secrets: Secrets
) -> None:
    # Two processes start together: the one whose clock read came first (its RSA key took
    # longer) commits second, and must see the key the other one made a moment "later".
    keys = SigningKeys(database, secrets)
    started = datetime.now(UTC)
    first = keys.rotate("EdDSA", HOUR, only_if_needed=True, now=started + timedelta(seconds=1))
    late = keys.rotate("EdDSA", HOUR, only_if_needed=True, now=started)
    assert first is not None and late is None
    assert [k.kid for k in keys.published()] == [first.created.kid]


def test_rotation_retires_the_active_key_and_announces_the_change(
    database: Database, secrets: Secrets
) -> None:
    keys = SigningKeys(database, secrets)
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


def test_keys_past_their_publication_are_not_loaded_and_are_deleted(
    database: Database, secrets: Secrets
) -> None:
    keys = SigningKeys(database, secrets)
    past = datetime.now(UTC) - timedelta(days=1)
    first = keys.rotate("EdDSA", timedelta(seconds=10), now=past)
    keys.rotate("EdDSA", timedelta(seconds=10), now=past + timedelta(seconds=1))
    assert first is not None
    assert first.created.kid not in {k.kid for k in keys.published()}
    third = keys.rotate("EdDSA", HOUR)
    assert third is not None
    assert len(keys.published()) == 2  # the third and the one it retired; the first is gone


def test_a_private_key_survives_the_round_trip_through_the_store(
    database: Database, secrets: Secrets
) -> None:
    keys = SigningKeys(database, secrets)
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


# -- the private keys at rest ------------------------------------------------------------------


def raw_sealed_keys(database: Database) -> dict[str, str]:
    """``signing_keys`` as the database holds it, read with SQL, past the repository."""
    with database.engine.connect() as connection:
        query = sa.text("SELECT kid, sealed_private_key FROM signing_keys")
        return {kid: value for kid, value in connection.execute(query)}


def pem_of(key: SigningKey) -> str:
    return private_pem(key.private_key)


def test_the_database_never_holds_a_private_key_in_plain_text(
    database: Database, secrets: Secrets
) -> None:
    keys = SigningKeys(database, secrets)
    created = [keys.rotate(algorithm, HOUR) for algorithm in ("EdDSA", "RS256")]

    raw = raw_sealed_keys(database)
    columns = {c["name"] for c in sa.inspect(database.engine).get_columns("signing_keys")}
    assert "private_pem" not in columns
    for rotation in created:
        assert rotation is not None
        pem = pem_of(rotation.created)
        value = raw[rotation.created.kid]
        assert value.startswith("portico:v1:")
        assert "PRIVATE KEY" not in value
        for line in pem.splitlines()[1:-1]:
            assert line not in value
    # What the repository reads back is the key that was made.
    assert {k.kid: pem_of(k) for k in keys.published()} == {
        r.created.kid: pem_of(r.created) for r in created if r is not None
    }


def test_no_byte_of_a_private_key_reaches_the_sqlite_files(
    tmp_path: Path, secrets: Secrets
) -> None:
    url = f"sqlite:///{tmp_path / 'portico.db'}"
    upgrade(url)
    with Database(url) as database:
        rotation = SigningKeys(database, secrets).rotate("EdDSA", HOUR)
    assert rotation is not None
    private = rotation.created.private_key
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    raw = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )

    files = b"".join(path.read_bytes() for path in tmp_path.glob("portico.db*"))  # -wal too

    assert rotation.created.kid.encode() in files  # the row is there
    for secret in (raw, der, pem_of(rotation.created).splitlines()[1].encode()):
        assert secret not in files


def test_a_sealed_key_moved_to_another_row_does_not_open(
    database: Database, secrets: Secrets
) -> None:
    keys = SigningKeys(database, secrets)
    first, second = keys.rotate("EdDSA", HOUR), keys.rotate("EdDSA", HOUR)
    assert first is not None and second is not None
    raw = raw_sealed_keys(database)
    with database.engine.begin() as connection:
        # The attacker's swap: the first key's ciphertext in the second key's row.
        connection.execute(
            sa.text("UPDATE signing_keys SET sealed_private_key = :value WHERE kid = :kid"),
            {"value": raw[first.created.kid], "kid": second.created.kid},
        )

    with pytest.raises(
        SecretTampered, match=f"signing_keys.sealed_private_key/{second.created.kid}"
    ):
        keys.published()


def test_an_altered_sealed_key_does_not_open(database: Database, secrets: Secrets) -> None:
    keys = SigningKeys(database, secrets)
    rotation = keys.rotate("EdDSA", HOUR)
    assert rotation is not None
    value = raw_sealed_keys(database)[rotation.created.kid]
    altered = value[:-5] + ("A" if value[-5] != "A" else "B") + value[-4:]
    with database.engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE signing_keys SET sealed_private_key = :value"), {"value": altered}
        )

    with pytest.raises(SecretTampered, match="altered or damaged"):
        keys.published()


def test_keys_sealed_with_another_secrets_key_are_refused_clearly(
    database: Database, secrets: Secrets
) -> None:
    rotation = SigningKeys(database, secrets).rotate("EdDSA", HOUR)
    assert rotation is not None
    other = secrets_with(generate_key_text())

    with pytest.raises(UnknownSecretsKey, match=r"was sealed with the secrets key [0-9a-f]{16}"):
        SigningKeys(database, other).published()
