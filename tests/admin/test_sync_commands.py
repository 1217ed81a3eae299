"""``portico diff``, ``apply`` and ``export`` as a user runs them: the real command on a real
SQLite store; what lands in the store and the audit log read back through the store."""

from __future__ import annotations

import os
import pty
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.gateway import ROOT, run_portico, write_config

from portico.store.database import Database
from portico.store.repositories import AuditLog, StateRevisions

SECRET = "oauth-secret-value-7f3a9"
UPSTREAM_TOKEN = "upstream-token-value-2c81"
ENV = {"BILLING_SECRET": SECRET, "UPSTREAM_TOKEN": UPSTREAM_TOKEN}


def store_config(directory: Path, **changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "entities": {"source": "store"},
        "database": {"url": f"sqlite:///{directory / 'portico.db'}"},
        "services": {
            "orders": {"targets": ["http://127.0.0.1:9101"], "timeouts": {"read": "10s"}},
        },
        "routes": [
            {
                "name": "orders",
                "match": {"path": "/orders/{rest:path}"},
                "service": "orders",
                "policies": [
                    {
                        "type": "headers",
                        "request": {"set": {"Authorization": "Bearer ${UPSTREAM_TOKEN}"}},
                    }
                ],
            }
        ],
        "tenants": {
            "acme": {
                "consumers": {
                    "billing": {
                        "scopes": ["orders:read"],
                        "oauth": {
                            "client_id": "acme-billing",
                            "client_secret": "${BILLING_SECRET}",
                        },
                    }
                }
            }
        },
    }
    config.update(changes)
    return config


def portico(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_portico(*args, cwd=directory, env={**ENV, "NO_COLOR": "1"})


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path / "portico.yaml", store_config(tmp_path))


def revisions(directory: Path) -> StateRevisions:
    return StateRevisions(Database(f"sqlite:///{directory / 'portico.db'}"))


def test_diff_shows_every_entity_an_apply_would_add_and_exits_1(config_path: Path) -> None:
    done = portico(config_path.parent, "diff")

    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == [
        "+ service orders",
        "+ route orders",
        "+ tenant acme",
        "+ consumer acme/billing",
        "4 added (portico.yaml against an empty store)",
    ]


def test_apply_writes_one_revision_and_one_audit_entry_then_diff_finds_nothing(
    config_path: Path,
) -> None:
    directory = config_path.parent
    applied = portico(directory, "apply")
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines()[-1] == "applied: store revision 1 (4 added)"

    again = portico(directory, "apply")
    assert again.returncode == 0
    assert again.stdout.strip() == "no changes: store revision 1 is already portico.yaml's"
    same = portico(directory, "diff")
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.startswith("no changes")
    # The file named as `portico check` takes it, or with -c: the same answer.
    named = portico(directory, "diff", "portico.yaml")
    assert (named.returncode, named.stdout) == (0, same.stdout)
    both = portico(directory, "diff", "portico.yaml", "-c", "other.yaml")
    assert both.returncode == 2
    assert "two config files: portico.yaml and -c other.yaml" in both.stderr

    database = Database(f"sqlite:///{directory / 'portico.db'}")
    with database:
        latest = StateRevisions(database).latest()
        entries = [e for e in AuditLog(database).list() if e.action.startswith("entities.")]
    assert latest is not None and latest.id == 1 and latest.source == "apply"
    assert latest.parent_id is None and latest.actor.startswith("cli")
    # References stay references in the store: each process reads the value from its own
    # environment.
    consumer = latest.document["tenants"]["acme"]["consumers"]["billing"]
    assert consumer["oauth"]["client_secret"] == "${BILLING_SECRET}"
    assert [e.action for e in entries] == ["entities.apply"]
    assert entries[0].detail["changes"]["added"] == [
        "service orders",
        "route orders",
        "tenant acme",
        "consumer acme/billing",
    ]
    assert entries[0].before is None and entries[0].after is not None


def test_a_changed_field_is_shown_with_its_path_old_and_new_value(config_path: Path) -> None:
    directory = config_path.parent
    assert portico(directory, "apply").returncode == 0
    changed = store_config(directory)
    changed["services"]["orders"]["timeouts"]["read"] = "20s"
    changed["tenants"]["acme"]["consumers"]["billing"]["oauth"]["client_secret"] = "${OTHER}"
    del changed["routes"][0]["policies"]
    write_config(config_path, changed)

    done = run_portico("diff", cwd=directory, env={**ENV, "OTHER": "x" * 12, "NO_COLOR": "1"})

    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == [
        "~ service orders",
        '    timeouts.read: "10s" → "20s"',
        "~ route orders",
        '    policies: (removed) [{"type": "headers", "request": {"set": {"Authorization": '
        '"Bearer ${UPSTREAM_TOKEN}"}}}]',
        "~ consumer acme/billing",
        '    oauth.client_secret: "${BILLING_SECRET}" → "${OTHER}"',
        "3 changed (portico.yaml against store revision 1)",
    ]


def test_diff_is_coloured_on_a_terminal_only_without_no_color(config_path: Path) -> None:
    def on_a_terminal(**env: str) -> str:
        controller, terminal = pty.openpty()
        environment = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
        environment.update(ENV, TERM="xterm", **env)
        done = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "portico"), "diff"],
            cwd=config_path.parent,
            stdout=terminal,
            stderr=subprocess.PIPE,
            env=environment,
            timeout=60,
            check=False,
        )
        os.close(terminal)
        output = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        os.close(controller)
        assert done.returncode == 1, done.stderr
        return output.decode()

    assert "\033[32m+ service orders\033[0m" in on_a_terminal()
    assert "\033[" not in on_a_terminal(NO_COLOR="1")
    piped = portico(config_path.parent, "diff")
    assert "\033[" not in piped.stdout


def test_export_then_apply_then_export_is_the_same_text_and_holds_no_secret(
    config_path: Path,
) -> None:
    directory = config_path.parent
    assert portico(directory, "apply").returncode == 0
    first = portico(directory, "export", "-o", "exported.yaml")
    assert first.returncode == 0, first.stderr
    exported = (directory / "exported.yaml").read_text()

    applied = portico(directory, "apply", "-c", "exported.yaml")
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.startswith("no changes")
    second = portico(directory, "export", "-c", "exported.yaml")
    assert second.returncode == 0
    assert second.stdout == exported

    assert SECRET not in exported and UPSTREAM_TOKEN not in exported
    document = yaml.safe_load(exported)
    billing = document["tenants"]["acme"]["consumers"]["billing"]
    assert billing["oauth"]["client_secret"] == "${BILLING_SECRET}"
    assert document["database"] == store_config(directory)["database"]


def test_an_edit_made_elsewhere_is_exported_and_replaced_by_apply(config_path: Path) -> None:
    directory = config_path.parent
    assert portico(directory, "apply").returncode == 0
    other = directory / "other.yaml"
    write_config(other, store_config(directory, routes=[], services={}))
    assert portico(directory, "apply", "-c", "other.yaml").returncode == 0

    exported = yaml.safe_load(portico(directory, "export").stdout)
    assert exported["services"] == {} and exported["routes"] == []
    diff = portico(directory, "diff")
    assert diff.returncode == 1
    assert "+ service orders" in diff.stdout and "+ route orders" in diff.stdout
    assert portico(directory, "apply").returncode == 0
    assert portico(directory, "diff").returncode == 0
    latest = revisions(directory).latest()
    assert latest is not None and latest.id == 3 and latest.parent_id == 2


def test_apply_refuses_a_secret_written_as_its_value_at_its_line(tmp_path: Path) -> None:
    config = store_config(tmp_path)
    config["tenants"]["acme"]["consumers"]["billing"]["oauth"]["client_secret"] = SECRET
    path = write_config(tmp_path / "portico.yaml", config)

    done = portico(tmp_path, "apply")

    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    line = next(
        n for n, text in enumerate(path.read_text().splitlines(), 1) if "client_secret" in text
    )
    assert done.stderr.startswith(f"{path.name}:{line}:")
    assert "tenants.acme.consumers.billing.oauth.client_secret" in done.stderr
    assert "${VAR} reference" in done.stderr and SECRET not in done.stderr
    checked = portico(tmp_path, "check")
    assert checked.returncode == 1 and "${VAR} reference" in checked.stderr
    assert not (tmp_path / "portico.db").exists() or revisions(tmp_path).latest() is None


def test_apply_reports_an_invalid_file_as_check_does_and_writes_nothing(
    config_path: Path,
) -> None:
    directory = config_path.parent
    config = store_config(directory)
    config["routes"][0]["service"] = "missing"
    write_config(config_path, config)

    applied = portico(directory, "apply")
    checked = portico(directory, "check")

    assert applied.returncode == 1
    assert applied.stderr.splitlines()[0] == checked.stderr.splitlines()[0]
    assert "routes[0].service: unknown service 'missing'" in applied.stderr
    diff = portico(directory, "diff")
    assert diff.returncode == 2, "diff exits 2 when it cannot compare"


def test_apply_and_diff_refuse_in_one_line_when_the_file_is_the_state(tmp_path: Path) -> None:
    config = store_config(tmp_path)
    del config["entities"]
    write_config(tmp_path / "portico.yaml", config)

    for command in ("apply", "diff", "export"):
        done = portico(tmp_path, command)
        assert done.returncode == (2 if command == "diff" else 1)
        assert done.stderr.count("\n") == 1, done.stderr
        assert "entities.source is file" in done.stderr
        assert "entities: {source: store}" in done.stderr


def test_the_store_never_holds_a_secret_value(config_path: Path) -> None:
    directory = config_path.parent
    assert portico(directory, "apply").returncode == 0
    database = directory / "portico.db"
    with sqlite3.connect(database) as connection:
        connection.execute("PRAGMA wal_checkpoint(FULL)")
    stored = b"".join(
        path.read_bytes() for path in directory.iterdir() if path.name.startswith("portico.db")
    )
    assert b"${BILLING_SECRET}" in stored
    assert SECRET.encode() not in stored and UPSTREAM_TOKEN.encode() not in stored
