"""``portico keys``: create, list, rotate, revoke and generate, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from tests.support.gateway import running_gateway
from tests.support.upstreams import Upstream

from portico.cli import main
from portico.identity.store import ApiKeys, IdentityChanges
from portico.store.database import Database
from portico.store.repositories import AuditLog

DECLARED_ID = "declared01"


def write_config(tmp_path: Path, database_url: str) -> Path:
    config = {
        "database": {"url": database_url},
        "tenants": {
            "acme": {
                "consumers": {
                    "billing": {
                        "scopes": ["orders:read"],
                        "api_keys": [{"id": DECLARED_ID, "sha256": "0" * 64}],
                    }
                }
            },
            "globex": {"consumers": {"shop": {}}},
        },
    }
    path = tmp_path / "portico.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture
def config_path(tmp_path: Path, database: Database) -> Path:
    return write_config(tmp_path, database.url.render_as_string(hide_password=False))


def keys(capsys: pytest.CaptureFixture[str], config_path: Path, *args: str) -> tuple[int, str, str]:
    subcommand, *rest = args
    code = main(["keys", subcommand, "-c", str(config_path), *rest])
    out, err = capsys.readouterr()
    return code, out, err


def created(code: int, out: str, err: str) -> str:
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pk_"), out
    return lines[0]


def everything_stored(database: Database) -> str:
    """Every row of the api_keys and audit_log tables, as text."""
    with database.engine.connect() as connection:
        rows = [
            *connection.execute(sa.text("SELECT * FROM api_keys")),
            *connection.execute(sa.text("SELECT * FROM audit_log")),
        ]
    return json.dumps([list(map(str, row)) for row in rows])


def test_create_prints_the_key_once_and_stores_only_its_hash(
    capsys: pytest.CaptureFixture[str], config_path: Path, database: Database
) -> None:
    key = created(*keys(capsys, config_path, "create", "--consumer", "acme/billing"))

    key_id = key.split("_")[1]
    stored = ApiKeys(database).get(key_id)
    assert stored is not None and stored.consumer == "acme/billing"
    assert stored.sha256 == hashlib.sha256(key.encode()).hexdigest()
    assert stored.expires_at is None
    text = everything_stored(database)
    assert key not in text and key.split("_", 2)[2] not in text


def test_create_with_an_expiry_and_an_audit_entry(
    capsys: pytest.CaptureFixture[str], config_path: Path, database: Database
) -> None:
    key = created(
        *keys(capsys, config_path, "create", "--consumer", "globex/shop", "--expires", "30d")
    )

    stored = ApiKeys(database).get(key.split("_")[1])
    assert stored is not None and stored.expires_at is not None
    assert (stored.expires_at - stored.created_at).total_seconds() == 30 * 86400
    entry = AuditLog(database).list(limit=1)[0]
    assert entry.action == "api_key.create" and entry.target == stored.id
    assert entry.actor.startswith("cli")
    assert entry.detail["consumer"] == "globex/shop"


def test_create_refuses_a_consumer_the_config_does_not_declare(
    capsys: pytest.CaptureFixture[str], config_path: Path, database: Database
) -> None:
    code, out, err = keys(capsys, config_path, "create", "--consumer", "acme/nobody")

    assert code == 1 and out == ""
    assert "no consumer 'acme/nobody'" in err and "acme/billing, globex/shop" in err
    assert ApiKeys(database).list() == []


def test_an_invalid_duration_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], config_path: Path
) -> None:
    with pytest.raises(SystemExit) as caught:
        keys(capsys, config_path, "create", "--consumer", "acme/billing", "--expires", "soon")

    assert caught.value.code == 2
    assert "'soon' is not a duration" in capsys.readouterr().err


def test_list_shows_ids_and_status_never_keys_or_hashes(
    capsys: pytest.CaptureFixture[str], config_path: Path
) -> None:
    first = created(*keys(capsys, config_path, "create", "--consumer", "acme/billing"))
    second = created(*keys(capsys, config_path, "create", "--consumer", "globex/shop"))
    keys(capsys, config_path, "revoke", second.split("_")[1])

    code, out, _ = keys(capsys, config_path, "list")

    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows[first.split("_")[1]][1:4] == ["acme/billing", "database", "active"]
    assert rows[second.split("_")[1]][1:4] == ["globex/shop", "database", "revoked"]
    assert rows[DECLARED_ID][1:4] == ["acme/billing", "config", "active"]
    for key in (first, second):
        assert key.split("_", 2)[2] not in out
        assert hashlib.sha256(key.encode()).hexdigest() not in out


def test_rotate_prints_a_new_key_and_keeps_the_old_one_for_the_overlap(
    capsys: pytest.CaptureFixture[str], config_path: Path, database: Database
) -> None:
    old = created(*keys(capsys, config_path, "create", "--consumer", "acme/billing"))
    old_id = old.split("_")[1]

    new = created(*keys(capsys, config_path, "rotate", old_id, "--overlap", "2h"))

    new_id = new.split("_")[1]
    before = ApiKeys(database).get(old_id)
    after = ApiKeys(database).get(new_id)
    assert before is not None and after is not None
    assert before.rotated_to == new_id and after.consumer == "acme/billing"
    assert before.overlap_until is not None
    assert (before.overlap_until - after.created_at).total_seconds() == 2 * 3600
    actions = [(e.action, e.target) for e in AuditLog(database).list(limit=2)]
    assert actions == [("api_key.create", new_id), ("api_key.rotate", old_id)]


def test_a_rotated_key_cannot_be_rotated_again(
    capsys: pytest.CaptureFixture[str], config_path: Path
) -> None:
    old = created(*keys(capsys, config_path, "create", "--consumer", "acme/billing"))
    created(*keys(capsys, config_path, "rotate", old.split("_")[1]))

    code, out, err = keys(capsys, config_path, "rotate", old.split("_")[1])

    assert code == 1 and out == ""
    assert "already rotated" in err


def test_revoke_bumps_the_change_counter_and_is_audited_once(
    capsys: pytest.CaptureFixture[str], config_path: Path, database: Database
) -> None:
    key = created(*keys(capsys, config_path, "create", "--consumer", "acme/billing"))
    key_id = key.split("_")[1]
    version = IdentityChanges(database).version()

    first = keys(capsys, config_path, "revoke", key_id)
    second = keys(capsys, config_path, "revoke", key_id)

    assert first[0] == second[0] == 0
    assert "already revoked" in second[2]
    assert IdentityChanges(database).version() == version + 1
    revocations = [e for e in AuditLog(database).list() if e.action == "api_key.revoke"]
    assert [e.target for e in revocations] == [key_id]


@pytest.mark.parametrize("command", ["revoke", "rotate"])
def test_keys_declared_in_the_config_are_changed_in_the_config(
    capsys: pytest.CaptureFixture[str], config_path: Path, command: str
) -> None:
    code, _, err = keys(capsys, config_path, command, DECLARED_ID)

    assert code == 1
    assert "declared in the config (tenants.acme.consumers.billing.api_keys)" in err


def test_revoking_an_unknown_key_is_an_error(
    capsys: pytest.CaptureFixture[str], config_path: Path
) -> None:
    code, _, err = keys(capsys, config_path, "revoke", "nosuchkey0")

    assert code == 1
    assert "no API key nosuchkey0" in err


def test_a_generated_entry_declares_a_key_the_gateway_accepts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["keys", "generate"]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    entry = yaml.safe_load(next(line for line in err.splitlines() if "sha256" in line).strip())
    upstream = Upstream()
    config: dict[str, Any] = {
        "services": {"main": {"targets": [upstream.url]}},
        "tenants": {"acme": {"consumers": {"billing": {"api_keys": entry}}}},
        "routes": [
            {
                "name": "r",
                "match": {"path": "/r"},
                "service": "main",
                "policies": [{"type": "auth", "methods": ["api_key"]}],
            }
        ],
    }
    try:
        with running_gateway(tmp_path, config) as gateway, gateway.client() as http:
            accepted = http.get("/r", headers={"X-API-Key": key})
            refused = http.get("/r", headers={"X-API-Key": key + "x"})
    finally:
        upstream.close()

    assert accepted.status_code == 200
    assert refused.status_code == 401
