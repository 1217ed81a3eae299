"""Revision 0003 seals the OAuth signing keys an older Portico stored in plain text, on SQLite and
PostgreSQL, with the key of the config being upgraded; without one it changes nothing."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from tests.store.conftest import secrets_with

from portico.store.database import create_engine_for
from portico.store.migrate import current_revision, db_upgrade_command, head_revision, upgrade
from portico.store.secrets import Secrets, SecretsKeyMissing, open_secrets
from portico.store.secrets.envelope import key_id_of
from portico.store.secrets.keys import generate_key_text, parse_key
from portico.store.secrets.stored import context_of


def pem(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def body(text: str) -> str:
    """A PEM's base64 lines: what would betray it in a file, whatever the line ends."""
    return "".join(line for line in text.splitlines() if not line.startswith("-----"))


@pytest.fixture
def plain_keys() -> dict[str, str]:
    return {
        "ed-kid": pem(ed25519.Ed25519PrivateKey.generate()),
        "rsa-kid": pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    }


def database_of_portico_before_0003(url: str, keys: dict[str, str]) -> None:
    """A store as the Portico before secrets at rest left it: signing keys in plain text."""
    upgrade(url, "0002")
    table = sa.table(
        "signing_keys",
        *(sa.column(name) for name in ("kid", "algorithm", "private_pem")),
        sa.column("public_jwk", sa.JSON()),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("activated_at", sa.DateTime(timezone=True)),
    )
    now = datetime.now(UTC)
    if url.startswith("sqlite"):
        now = now.replace(tzinfo=None)
    engine = create_engine_for(url)
    try:
        with engine.begin() as connection:
            for kid, text in keys.items():
                connection.execute(
                    table.insert().values(
                        kid=kid,
                        algorithm="EdDSA" if kid.startswith("ed") else "RS256",
                        private_pem=text,
                        public_jwk={"kty": "OKP"},
                        created_at=now,
                        activated_at=now,
                    )
                )
    finally:
        engine.dispose()


def rows(url: str) -> tuple[list[str], dict[str, str]]:
    """The columns of ``signing_keys`` and, by kid, its sealed private keys (raw, SQL Core)."""
    engine = create_engine_for(url)
    try:
        columns = [column["name"] for column in sa.inspect(engine).get_columns("signing_keys")]
        with engine.connect() as connection:
            if "sealed_private_key" not in columns:
                return columns, {}
            query = sa.text("SELECT kid, sealed_private_key FROM signing_keys")
            return columns, {kid: value for kid, value in connection.execute(query)}
    finally:
        engine.dispose()


def test_the_upgrade_seals_plain_signing_keys(
    database_url: str, plain_keys: dict[str, str]
) -> None:
    database_of_portico_before_0003(database_url, plain_keys)
    key = generate_key_text()

    upgrade(database_url, secrets=secrets_with(key))

    columns, sealed = rows(database_url)
    assert "private_pem" not in columns and "sealed_private_key" in columns
    assert set(sealed) == set(plain_keys)
    for kid, value in sealed.items():
        assert key_id_of(value) == parse_key(key).id
        assert body(plain_keys[kid])[:40] not in value
        opened = secrets_with(key).open(
            value, context_of("signing_keys", "sealed_private_key", kid)
        )
        assert opened.decode("ascii") == plain_keys[kid]


def test_the_upgrade_without_a_key_changes_nothing(
    database_url: str, plain_keys: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    database_of_portico_before_0003(database_url, plain_keys)

    with pytest.raises(SecretsKeyMissing, match="seals the 2 OAuth signing key"):
        upgrade(database_url)
    # As `portico db upgrade` reports it for PostgreSQL without a configured key: one line.
    no_key = open_secrets("postgresql://portico@db.example/portico", env={})
    assert db_upgrade_command(database_url, no_key) == 1
    error = capsys.readouterr().err
    assert (
        error.count("\n") == 1 and "set PORTICO_SECRETS_KEY or database.secrets_key_file" in error
    )

    assert current_revision(database_url) == "0002"  # the one transaction rolled back
    columns, _ = rows(database_url)
    assert "private_pem" in columns and "sealed_private_key" not in columns


def test_a_store_without_signing_keys_upgrades_without_a_key(database_url: str) -> None:
    database_of_portico_before_0003(database_url, {})

    upgrade(database_url, secrets=open_secrets("postgresql://p@db.example/p", env={}))

    assert current_revision(database_url) == head_revision()


def test_a_sqlite_file_keeps_no_copy_of_the_plain_keys(
    tmp_path: Path, plain_keys: dict[str, str]
) -> None:
    url = f"sqlite:///{tmp_path / 'portico.db'}"
    database_of_portico_before_0003(url, plain_keys)
    secrets: Secrets = open_secrets(url, env={"PORTICO_SECRETS_KEY": ""})

    def file_holds(text: str) -> bool:
        # Until its next checkpoint the -wal file still has the pages as they were.
        with sqlite3.connect(tmp_path / "portico.db") as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        stored = b"".join(path.read_bytes() for path in tmp_path.glob("portico.db*"))
        return body(text)[:40].encode() in stored

    assert all(file_holds(text) for text in plain_keys.values())  # what is looked for is found

    upgrade(url, secrets=secrets)

    # The space the plain keys took is overwritten (secure_delete), not merely marked free.
    assert not any(file_holds(text) for text in plain_keys.values())
    assert (tmp_path / "portico-secrets.key").stat().st_mode & 0o777 == 0o600
