"""``portico secrets`` and the secrets key at start, through the real ``portico`` command: keys
generated and added to files, status, rotation with its audit entry, and every refusal in one
line with a non-zero exit."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.cli.test_cli_conventions import loaded_from, modules_after
from tests.cli.test_cli_failures import the_error_line
from tests.store.conftest import postgres_cluster
from tests.store.test_secrets_migration import database_of_portico_before_0003, rows
from tests.support.gateway import route, run_portico, service, with_defaults, write_config
from tests.support.postgres import PostgresCluster

from portico.store.database import Database
from portico.store.migrate import current_revision
from portico.store.repositories import AuditLog
from portico.store.secrets.envelope import key_id_of
from portico.store.secrets.keys import generate_key_text, parse_key

__all__ = ["postgres_cluster"]

NO_KEY = {"PORTICO_SECRETS_KEY": ""}
KEY_LINE = re.compile(r"^[A-Za-z0-9_-]{43}=$")


def oauth_config(directory: Path, database_url: str | None = None, **database: Any) -> Path:
    config: dict[str, Any] = {
        "services": {"main": service("http://127.0.0.1:9")},
        "routes": [route("open", "/open")],
        "database": {"url": database_url or f"sqlite:///{directory / 'portico.db'}", **database},
        "tenants": {
            "acme": {
                "consumers": {
                    "billing": {
                        "scopes": ["orders:read"],
                        "oauth": {"client_id": "billing-app", "client_secret": "s" * 32},
                    }
                }
            }
        },
        "identity": {"oauth": {"issuer": "https://auth.portico.test"}},
    }
    return write_config(directory / "portico.yaml", with_defaults(config))


def portico(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_portico(*args, "--log-format", "json", cwd=cwd, env={**NO_KEY, **(env or {})})


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def stored_key_ids(url: str) -> list[str | None]:
    _, sealed = rows(url)
    return [key_id_of(value) for value in sealed.values()]


def status_table(result: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, int]]:
    """``portico secrets status``: key id -> (configured, secrets)."""
    table = {}
    for line in result.stdout.splitlines()[1:]:
        key_id, *configured, count = line.split()
        table[key_id] = (" ".join(configured), int(count))
    return table


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config of the OAuth server whose first signing key is stored, sealed with the key file
    Portico made beside its SQLite database."""
    path = oauth_config(tmp_path)
    ok(portico("oauth", "rotate-key", "-c", str(path), cwd=tmp_path))
    return path


def test_generate_key_prints_a_key_alone_on_standard_output(tmp_path: Path) -> None:
    result = ok(portico("secrets", "generate-key", cwd=tmp_path))

    assert KEY_LINE.match(result.stdout.strip()) and result.stdout.count("\n") == 1
    key_id = parse_key(result.stdout).id
    assert f"id {key_id}" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_generate_key_into_a_file_makes_it_for_its_owner_then_puts_new_keys_first(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys" / "secrets.key"

    ok(portico("secrets", "generate-key", "--file", str(path), cwd=tmp_path))
    assert path.stat().st_mode & 0o777 == 0o600
    first = [line for line in path.read_text().splitlines() if KEY_LINE.match(line)]
    path.write_text(path.read_text() + "# the old key, until the rotation is done\n")
    path.chmod(0o640)
    ok(portico("secrets", "generate-key", "--file", str(path), cwd=tmp_path))

    lines = path.read_text().splitlines()
    keys = [line for line in lines if KEY_LINE.match(line)]
    assert len(keys) == 2 and keys[1] == first[0]
    assert lines[-1] == "# the old key, until the rotation is done"
    assert path.stat().st_mode & 0o777 == 0o640


def test_the_first_stored_secret_makes_the_key_file_beside_the_database(config: Path) -> None:
    key_file = config.parent / "portico-secrets.key"
    (key_id,) = [parse_key(line).id for line in key_file.read_text().splitlines()[3:]]

    result = ok(portico("secrets", "status", "-c", str(config), cwd=config.parent))

    assert key_file.stat().st_mode & 0o777 == 0o600
    assert status_table(result) == {key_id: ("yes, seals new secrets", 1)}
    assert "OAuth signing keys (signing_keys.sealed_private_key): 1" in result.stderr


def test_rotate_key_seals_every_secret_again_and_writes_an_audit_entry(config: Path) -> None:
    directory = config.parent
    key_file = directory / "portico-secrets.key"
    ok(portico("oauth", "rotate-key", "-c", str(config), cwd=directory))  # two signing keys
    (old,) = set(stored_key_ids(f"sqlite:///{directory / 'portico.db'}"))
    ok(portico("secrets", "generate-key", "--file", str(key_file), cwd=directory))

    result = ok(portico("secrets", "rotate-key", "-c", str(config), cwd=directory))

    new = parse_key(
        next(line for line in key_file.read_text().splitlines() if KEY_LINE.match(line))
    ).id
    url = f"sqlite:///{directory / 'portico.db'}"
    assert stored_key_ids(url) == [new, new]
    assert f"Sealed 2 stored secret(s) again with key {new} (2 from key {old})" in result.stderr
    status = ok(portico("secrets", "status", "-c", str(config), cwd=directory))
    assert status_table(status) == {
        new: ("yes, seals new secrets", 2),
        old: ("yes, opens only", 0),
    }
    with Database(url) as database:
        entry = AuditLog(database).list(1)[0]
    assert (entry.action, entry.target) == ("secrets.rotate_key", new)
    assert entry.actor.startswith("cli")
    assert entry.detail["sealed_again"] == {old: 2}
    # Run again, it has nothing to do, and says so.
    again = ok(portico("secrets", "rotate-key", "-c", str(config), cwd=directory))
    assert f"is sealed with key {new} already" in again.stderr


def test_secrets_no_configured_key_opens_stop_status_rotation_and_serve(config: Path) -> None:
    directory = config.parent
    other = {"PORTICO_SECRETS_KEY": generate_key_text()}

    status = portico("secrets", "status", "-c", str(config), cwd=directory, env=other)
    rotate = portico("secrets", "rotate-key", "-c", str(config), cwd=directory, env=other)
    serve = portico("serve", "-c", str(config), cwd=directory, env=other)

    assert the_error_line(status).startswith("portico secrets status: error: 1 stored secret")
    assert "NO" in status.stdout  # the table shows which
    for result, command in ((rotate, "secrets rotate-key"), (serve, "serve")):
        line = the_error_line(result)
        assert line.startswith(f"portico {command}: error: the database holds 1 secret(s)")
        assert "Configure the key that sealed them" in line


def test_serve_refuses_a_store_whose_key_file_is_lost(config: Path) -> None:
    (config.parent / "portico-secrets.key").unlink()

    line = the_error_line(portico("serve", "-c", str(config), cwd=config.parent))

    assert "the database holds 1 secret(s) that no configured secrets key opens" in line
    assert "does not exist: restore it" in line
    assert not (config.parent / "portico-secrets.key").exists()  # no new key over the old


def test_check_and_serve_refuse_a_key_file_others_may_read_at_its_line(tmp_path: Path) -> None:
    key_file = tmp_path / "secrets.key"
    ok(portico("secrets", "generate-key", "--file", str(key_file), cwd=tmp_path))
    key_file.chmod(0o644)
    path = oauth_config(tmp_path, secrets_key_file="secrets.key")  # beside the config
    line = next(
        n for n, text in enumerate(path.read_text().splitlines(), 1) if "secrets.key" in text
    )
    expected = (
        f"{path}:{line}:21: database.secrets_key_file: the secrets key file {key_file} may be "
        f"read or written by other users (mode 0644): let only its owner use it, "
        f"chmod 600 {key_file}"
    )

    checked = portico("check", str(path), cwd=tmp_path)
    served = portico("serve", "-c", str(path), cwd=tmp_path)

    assert checked.returncode == served.returncode == 1
    assert checked.stderr.splitlines()[0] == expected
    assert expected in served.stderr and "Traceback" not in served.stderr


def test_check_reports_a_key_file_that_is_not_there(tmp_path: Path) -> None:
    path = oauth_config(tmp_path, secrets_key_file="keys/secrets.key")

    result = portico("check", str(path), cwd=tmp_path)

    missing = tmp_path / "keys" / "secrets.key"
    assert result.returncode == 1
    assert (
        f"database.secrets_key_file: no file {missing}: `portico secrets generate-key --file "
        f"{missing}` makes one"
    ) in result.stderr


def test_check_reads_the_key_file_without_the_store_or_cryptography(tmp_path: Path) -> None:
    ok(portico("secrets", "generate-key", "--file", str(tmp_path / "secrets.key"), cwd=tmp_path))
    path = oauth_config(tmp_path, secrets_key_file="secrets.key")
    ok(portico("check", str(path), cwd=tmp_path))

    loaded = modules_after("check", str(path), cwd=tmp_path)

    assert "portico.core.secret_keys" in loaded  # it did read the key file
    assert not loaded_from(loaded, ("portico.store", "cryptography", "sqlalchemy"))


def test_a_bad_key_in_the_environment_is_one_line_without_the_key(tmp_path: Path) -> None:
    path = oauth_config(tmp_path)
    bad = "z" * 40

    line = the_error_line(
        portico("serve", "-c", str(path), cwd=tmp_path, env={"PORTICO_SECRETS_KEY": bad})
    )

    assert line.startswith("portico serve: error: PORTICO_SECRETS_KEY, key 1: not a secrets key")
    assert bad not in line


# -- PostgreSQL: the key is given, never made -----------------------------------------------------


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    with postgres_cluster.database() as url:
        yield url


@pytest.mark.postgres
def test_postgresql_with_the_oauth_server_and_no_key_says_how_to_give_one(
    tmp_path: Path, postgres_url: str
) -> None:
    path = oauth_config(tmp_path, postgres_url)
    ok(portico("db", "upgrade", "-c", str(path), cwd=tmp_path))  # nothing to seal: no key needed

    line = the_error_line(portico("serve", "-c", str(path), cwd=tmp_path))

    assert line.startswith("portico serve: error: no secrets key is configured")
    assert "set PORTICO_SECRETS_KEY or database.secrets_key_file" in line
    assert list(tmp_path.iterdir()) == [path]  # no key file made on this machine


@pytest.mark.postgres
def test_db_upgrade_seals_plain_signing_keys_with_the_configured_key(
    tmp_path: Path, postgres_url: str
) -> None:
    database_of_portico_before_0003(postgres_url, {"kid-1": "-----BEGIN PRIVATE KEY-----\nx\n"})
    path = oauth_config(tmp_path, postgres_url)

    refused = portico("db", "upgrade", "-c", str(path), cwd=tmp_path)
    assert "seals the 1 OAuth signing key(s) this database holds in plain text" in (
        the_error_line(refused)
    )
    assert current_revision(postgres_url) == "0002"

    key = generate_key_text()
    upgraded = portico(
        "db", "upgrade", "-c", str(path), cwd=tmp_path, env={"PORTICO_SECRETS_KEY": key}
    )

    assert upgraded.returncode == 0, upgraded.stderr
    assert "upgraded from 0002 (" in upgraded.stdout
    assert "to 0009 (The audit log append-only" in upgraded.stdout
    assert stored_key_ids(postgres_url) == [parse_key(key).id]
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as connection:
            value = connection.scalar(sa.text("SELECT sealed_private_key FROM signing_keys"))
    finally:
        engine.dispose()
    assert "PRIVATE KEY" not in value
