"""Every sealed secret of the store together, on SQLite and PostgreSQL: counted by key, checked
before serving, and sealed again under the newest key while others write."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from tests.store.conftest import secrets_with

from portico.store.database import Database
from portico.store.secrets import Secrets, SecretsKeyMissing, UnknownSecretsKey, open_secrets
from portico.store.secrets.envelope import key_id_of
from portico.store.secrets.keys import generate_key_text, parse_key
from portico.store.secrets.stored import SealedColumn, StoredSecrets, sealed_columns
from portico.store.tables import SEALED, SigningKeyRow

SIGNING_KEYS = SigningKeyRow.__table__
COLUMN = SealedColumn.of(SIGNING_KEYS.c.sealed_private_key)


def store(database: Database, secrets: Secrets, *kids: str) -> None:
    """Rows of ``signing_keys`` whose private key is sealed with ``secrets``."""
    now = datetime.now(UTC)
    with database.write() as session:
        for kid in kids:
            session.add(
                SigningKeyRow(
                    kid=kid,
                    algorithm="EdDSA",
                    sealed_private_key=secrets.seal(f"pem of {kid}".encode(), COLUMN.context(kid)),
                    public_jwk={"kid": kid},
                    created_at=now,
                    activated_at=now,
                )
            )


def stored_values(database: Database) -> dict[str, str]:
    with database.engine.connect() as connection:
        query = sa.select(SIGNING_KEYS.c.kid, SIGNING_KEYS.c.sealed_private_key)
        return {kid: value for kid, value in connection.execute(query)}


def test_every_sealed_column_is_found_by_its_mark() -> None:
    found, webhooks = sorted(sealed_columns(), key=lambda column: column.name)

    assert webhooks.name == "webhook_endpoint_secrets.sealed_secret"
    assert webhooks.protects == "webhook signing secrets"
    assert webhooks.context(7) == "webhook_endpoint_secrets.sealed_secret/7"
    assert found.name == "signing_keys.sealed_private_key"
    assert found.row_key is SIGNING_KEYS.c.kid
    assert found.protects == "OAuth signing keys"
    assert found.context("abc") == "signing_keys.sealed_private_key/abc"
    with pytest.raises(TypeError, match=SEALED):
        SealedColumn.of(SIGNING_KEYS.c.algorithm)


def test_secrets_are_counted_by_the_key_that_sealed_them(database: Database) -> None:
    old, new = generate_key_text(), generate_key_text()
    store(database, secrets_with(old), "a", "b")
    store(database, secrets_with(new, old), "c")

    found = StoredSecrets(database).inventory()

    assert found.by_key() == {parse_key(old).id: 2, parse_key(new).id: 1}
    assert found.counts[parse_key(old).id] == {"signing_keys.sealed_private_key": 2}
    assert found.total == 3
    assert found.unopenable(secrets_with(new, old)) == {}
    assert found.unopenable(secrets_with(new)) == {parse_key(old).id: 2}


def test_an_empty_store_needs_no_key(database: Database) -> None:
    # PostgreSQL: no key at all; SQLite: the key file beside it, not made yet.
    no_key = open_secrets(database.url.render_as_string(hide_password=False), env={})
    assert no_key.configured() is None

    assert StoredSecrets(database).check_openable(no_key).total == 0
    assert no_key.configured() is None  # and checking made none


def test_secrets_of_a_key_not_configured_are_refused_before_serving(database: Database) -> None:
    old, new = generate_key_text(), generate_key_text()
    store(database, secrets_with(old), "a", "b")

    with pytest.raises(UnknownSecretsKey) as refused:
        StoredSecrets(database).check_openable(secrets_with(new))

    message = str(refused.value)
    assert f"2 secret(s) that no configured secrets key opens (by key {parse_key(old).id}: 2)" in (
        message
    )
    assert parse_key(new).id in message and "\n" not in message


def test_secrets_and_no_key_at_all_say_where_a_key_is_given(database: Database) -> None:
    store(database, secrets_with(generate_key_text()), "a")
    no_key = open_secrets("postgresql://nobody@127.0.0.1:1/none", env={})

    with pytest.raises(SecretsKeyMissing, match=r"1 secret.*set PORTICO_SECRETS_KEY"):
        StoredSecrets(database).check_openable(no_key)


def test_rotation_seals_every_secret_again_with_the_newest_key(database: Database) -> None:
    old, new = generate_key_text(), generate_key_text()
    store(database, secrets_with(old), *[f"k{i:03}" for i in range(7)])
    before = stored_values(database)
    rotating = secrets_with(new, old)

    done = StoredSecrets(database).reseal(rotating, batch=3)  # three transactions and a bit

    assert done.key_id == parse_key(new).id
    assert done.moved == {parse_key(old).id: 7}
    after = stored_values(database)
    assert {key_id_of(value) for value in after.values()} == {parse_key(new).id}
    only_new = secrets_with(new)
    for kid, value in after.items():
        assert value != before[kid]
        assert only_new.open(value, COLUMN.context(kid)) == f"pem of {kid}".encode()
    assert StoredSecrets(database).reseal(rotating).total == 0  # nothing left to do


def test_rotation_stops_at_a_secret_it_cannot_open(database: Database) -> None:
    old, new = generate_key_text(), generate_key_text()
    store(database, secrets_with(old), "a")

    with pytest.raises(UnknownSecretsKey):
        StoredSecrets(database).reseal(secrets_with(new))
    assert key_id_of(stored_values(database)["a"]) == parse_key(old).id


def test_rotation_beside_writers_loses_nothing(database: Database) -> None:
    """Rows sealed by serving processes (with the new key, as they have it) during a rotation
    are neither lost nor sealed twice."""
    old, new = generate_key_text(), generate_key_text()
    store(database, secrets_with(old), *[f"old{i:03}" for i in range(40)])
    serving = secrets_with(new, old)
    failures: list[BaseException] = []

    def write() -> None:
        try:
            for i in range(20):
                store(database, serving, f"new{i:03}")
        except BaseException as exc:
            failures.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    done = StoredSecrets(database).reseal(serving, batch=5)
    writer.join()

    assert failures == []
    assert done.moved == {parse_key(old).id: 40}
    values = stored_values(database)
    assert len(values) == 60
    assert {key_id_of(value) for value in values.values()} == {parse_key(new).id}
    for kid, value in values.items():
        assert secrets_with(new).open(value, COLUMN.context(kid)) == f"pem of {kid}".encode()
