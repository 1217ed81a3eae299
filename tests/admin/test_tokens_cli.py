"""``portico admin tokens``: create (printed once, hashed), list, revoke; one-line errors and the
exit codes of the other commands."""

from __future__ import annotations

import hashlib
from pathlib import Path

import sqlalchemy as sa
from tests.support.gateway import run_portico, write_config

from portico.store.database import Database


def config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "portico.yaml",
        {
            "database": {"url": f"sqlite:///{tmp_path / 'portico.db'}"},
            "tenants": {"acme": {"consumers": {"billing": {}}}},
        },
    )


def admin(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    path = tmp_path / "portico.yaml"
    done = run_portico("admin", "tokens", *args, "-c", str(path), cwd=tmp_path)
    return done.returncode, done.stdout, done.stderr


def test_a_token_is_printed_once_and_only_its_hash_is_stored(tmp_path: Path) -> None:
    config(tmp_path)
    code, out, err = admin(
        tmp_path, "create", "--role", "operator", "--tenant", "acme", "--expires", "30d"
    )
    assert code == 0, err
    token = out.strip()
    assert token.startswith("padm_") and out.count("\n") == 1
    token_id = token.split("_")[1]
    assert f"Created admin token {token_id} (operator for tenant acme)" in err
    database = Database(f"sqlite:///{tmp_path / 'portico.db'}")
    try:
        with database.engine.connect() as connection:
            rows = [
                *connection.execute(sa.text("SELECT * FROM admin_tokens")),
                *connection.execute(sa.text("SELECT * FROM audit_log")),
            ]
    finally:
        database.dispose()
    stored = repr(rows)
    assert token not in stored and token.rsplit("_", 1)[1] not in stored
    assert hashlib.sha256(token.encode()).hexdigest() in stored  # the hash, in admin_tokens
    assert "admin_token.create" in stored

    code, out, _ = admin(tmp_path, "list")
    assert code == 0
    row = next(line.split() for line in out.splitlines() if line.startswith(token_id))
    assert row[1:4] == ["operator", "acme", "active"]
    assert token.rsplit("_", 1)[1] not in out


def test_revoke_is_shown_in_the_list_and_said_once(tmp_path: Path) -> None:
    config(tmp_path)
    token = admin(tmp_path, "create", "--role", "viewer")[1].strip()
    token_id = token.split("_")[1]
    first = admin(tmp_path, "revoke", token_id)
    second = admin(tmp_path, "revoke", token_id)
    assert first[0] == second[0] == 0
    assert "was already revoked" in second[2]
    listed = admin(tmp_path, "list")[1]
    assert (
        next(line for line in listed.splitlines() if line.startswith(token_id)).split()[3]
        == "revoked"
    )


def test_mistakes_are_one_line_with_the_usual_exit_codes(tmp_path: Path) -> None:
    config(tmp_path)
    code, out, err = admin(tmp_path, "create", "--role", "viewer", "--tenant", "nosuch")
    assert (code, out) == (1, "")
    assert err.strip().count("\n") == 0 and "no tenant 'nosuch'" in err and "acme" in err
    code, _, err = admin(tmp_path, "revoke", "nosuchtoken")
    assert code == 1 and err.strip().count("\n") == 0 and "no admin token nosuchtoken" in err
    code, _, err = admin(tmp_path, "create", "--role", "root")
    assert code == 2 and "invalid choice: 'root'" in err
    code, _, err = admin(tmp_path, "create", "--role", "viewer", "--expires", "3")
    assert code == 2 and "has no unit" in err
    assert "Traceback" not in err
