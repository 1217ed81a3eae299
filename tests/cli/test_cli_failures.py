"""Every everyday failure of the real ``portico`` command is one line and a non-zero exit.

Each test runs the installed ``portico`` script in a subprocess against a real cause: a socket
that holds the port, a PostgreSQL URL where nothing listens, a SQLite file of another
application, TLS files that are not there. The log is JSON (``--log-format json``), so every line
of standard error that is not a JSON log record is something the command printed for a person:
there must be exactly one, the error, and no traceback anywhere.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.gateway import (
    route,
    run_portico,
    service,
    with_defaults,
    write_config,
)
from tests.support.pki import CertificateAuthority

UNREACHABLE_POSTGRES = "postgresql://portico:secret@127.0.0.1:1/portico"


def portico(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_portico(*args, cwd=cwd)


def printed_lines(stderr: str) -> list[str]:
    """The lines of standard error that are not JSON log records."""
    lines = []
    for line in stderr.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            lines.append(line)
            continue
        assert isinstance(record, dict) and {"time", "level", "logger", "message"} <= set(record)
    return lines


def the_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """Assert the shape every failure has, and return its one line."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout
    assert "Portico gateway on" not in result.stdout
    lines = printed_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    return lines[0]


def config_file(tmp_path: Path, **sections: object) -> Path:
    config: dict[str, object] = {
        "services": {"main": service("http://127.0.0.1:9")},
        "routes": [route("open", "/open")],
        "database": {"url": f"sqlite:///{tmp_path / 'portico.db'}"},
    }
    config.update(sections)
    return write_config(tmp_path / "portico.yaml", with_defaults(config))


@pytest.fixture
def occupied_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def test_serve_on_a_port_in_use_says_so_in_one_line(tmp_path: Path, occupied_port: int) -> None:
    path = config_file(tmp_path, gateway={"listen": f"127.0.0.1:{occupied_port}"})

    line = the_error_line(portico("serve", "-c", str(path), "--log-format", "json", cwd=tmp_path))

    assert line.startswith("portico serve: error: ")
    assert f"cannot listen on 127.0.0.1:{occupied_port} (gateway.listen)" in line
    assert "already in use" in line
    assert "--listen HOST:PORT" in line


def test_the_operations_port_in_use_names_operations_listen(
    tmp_path: Path, occupied_port: int
) -> None:
    path = config_file(tmp_path, operations={"listen": f"127.0.0.1:{occupied_port}"})

    line = the_error_line(portico("serve", "-c", str(path), "--log-format", "json", cwd=tmp_path))

    assert f"cannot listen on 127.0.0.1:{occupied_port} (operations.listen)" in line


def test_serve_listen_option_moves_off_an_occupied_port(tmp_path: Path, occupied_port: int) -> None:
    """--listen is the way out the error line offers; it must lead to the address given."""
    # The config's address is free: failing on the occupied one shows --listen took its place.
    path = config_file(tmp_path, gateway={"listen": "127.0.0.1:0"})

    line = the_error_line(
        portico(
            "serve",
            "-c",
            str(path),
            "--listen",
            f"127.0.0.1:{occupied_port}",
            "--log-format",
            "json",
            cwd=tmp_path,
        )
    )

    assert f"cannot listen on 127.0.0.1:{occupied_port}" in line


@pytest.mark.parametrize(
    "command",
    [
        ("serve", "-c"),
        ("keys", "list", "-c"),
        ("keys", "create", "--consumer", "acme/billing", "-c"),
        ("oauth", "keys", "-c"),
    ],
    ids=lambda command: " ".join(word for word in command if not word.startswith("-")),
)
def test_an_unreachable_postgresql_is_one_line(tmp_path: Path, command: tuple[str, ...]) -> None:
    path = config_file(
        tmp_path,
        database={"url": UNREACHABLE_POSTGRES},
        tenants={"acme": {"consumers": {"billing": {}}}},
    )

    result = portico(*command, str(path), "--log-format", "json", cwd=tmp_path)
    line = the_error_line(result)

    assert "cannot connect to the database at postgresql://portico:***@127.0.0.1:1/portico" in line
    assert "correct database.url" in line
    assert "secret" not in result.stderr


def test_db_upgrade_on_an_unreachable_postgresql_is_one_line(tmp_path: Path) -> None:
    line = the_error_line(
        portico(
            "db", "upgrade", "--url", UNREACHABLE_POSTGRES, "--log-format", "json", cwd=tmp_path
        )
    )

    assert "portico db upgrade: " in line
    assert "127.0.0.1:1" in line


def another_applications_database(path: Path) -> Path:
    """A SQLite file whose tables Portico did not make, one of them with a name Portico uses."""
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE api_keys (owner TEXT, secret TEXT)")
    return path


@pytest.mark.parametrize(
    "command",
    [("serve", "-c"), ("keys", "list", "-c"), ("oauth", "keys", "-c")],
    ids=lambda command: " ".join(word for word in command if not word.startswith("-")),
)
def test_a_database_of_another_application_is_one_line(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    database = another_applications_database(tmp_path / "other.db")
    path = config_file(tmp_path, database={"url": f"sqlite:///{database}"})

    line = the_error_line(portico(*command, str(path), "--log-format", "json", cwd=tmp_path))

    assert f"the database at sqlite:///{database} holds tables Portico did not make" in line
    assert "give Portico a database of its own" in line


def test_a_portico_database_missing_its_tables_is_one_line(tmp_path: Path) -> None:
    """The schema says it is current, but a table is gone (restored from a partial backup)."""
    path = config_file(tmp_path)
    assert portico("keys", "list", "-c", str(path), cwd=tmp_path).returncode == 0
    with sqlite3.connect(tmp_path / "portico.db") as connection:
        connection.execute("DROP TABLE api_keys")

    line = the_error_line(
        portico("keys", "list", "-c", str(path), "--log-format", "json", cwd=tmp_path)
    )

    assert "lacks tables or columns this version of Portico uses" in line
    assert "portico db upgrade" in line


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    database = tmp_path / "notes.txt"
    database.write_text("not a database, " * 100, encoding="utf-8")
    path = config_file(tmp_path, database={"url": f"sqlite:///{database}"})

    line = the_error_line(portico("serve", "-c", str(path), "--log-format", "json", cwd=tmp_path))

    assert "the file is not a SQLite database" in line


def test_missing_tls_files_are_one_line(tmp_path: Path) -> None:
    tls = {
        "listen": "127.0.0.1:0",
        "certificate": str(tmp_path / "missing.pem"),
        "private_key": str(tmp_path / "missing.key"),
    }
    path = config_file(tmp_path, gateway={"tls": tls})
    # Two files are missing; check names both, so each is one line with its file and line.
    result = portico("serve", "-c", str(path), "--log-format", "json", cwd=tmp_path)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = printed_lines(result.stderr)
    assert [line.split(": ", 2)[1] for line in lines] == [
        "gateway.tls.certificate",
        "gateway.tls.private_key",
    ]
    assert all(line.startswith(f"{path}:") and "cannot read" in line for line in lines)


def test_unusable_upstream_tls_files_are_one_line_each(tmp_path: Path) -> None:
    authority = CertificateAuthority(tmp_path / "pki")
    client, other = authority.issue_client("portico"), authority.issue_client("other")
    services = {
        "missing": service(
            "https://127.0.0.1:9", tls={"trusted_ca": str(tmp_path / "missing-ca.pem")}
        ),
        "mismatched": service(
            "https://127.0.0.1:9",
            tls={"certificate": str(client.cert_path), "private_key": str(other.key_path)},
        ),
    }
    path = config_file(tmp_path, services=services, routes=[route("open", "/open", "missing")])

    result = portico("serve", "-c", str(path), "--log-format", "json", cwd=tmp_path)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = printed_lines(result.stderr)
    assert [line.split(": ", 2)[1] for line in lines] == [
        "services.missing.tls.trusted_ca",
        "services.mismatched.tls.private_key",
    ]
    assert "cannot read" in lines[0] and "No such file or directory" in lines[0]
    assert f"is not the key of the certificate '{client.cert_path}'" in lines[1]


def test_a_route_serve_could_not_run_is_refused_by_check_in_one_line(tmp_path: Path) -> None:
    """mtls without gateway.tls once passed check and then killed serve with a ValueError."""
    path = config_file(
        tmp_path,
        routes=[route("orders", "/orders", policies=[{"type": "auth", "methods": ["mtls"]}])],
    )

    served = the_error_line(portico("serve", "-c", str(path), "--log-format", "json", cwd=tmp_path))
    checked = portico("check", str(path), cwd=tmp_path)

    assert "mtls is accepted, but the gateway does not ask for client certificates" in served
    assert served in checked.stderr
    assert checked.returncode == 1


def test_a_missing_config_file_points_to_init(tmp_path: Path) -> None:
    line = the_error_line(portico("serve", "--log-format", "json", cwd=tmp_path))

    assert line == (
        "portico.yaml: file not found; `portico init portico.yaml` writes a starter config there"
    )


def test_debug_shows_the_traceback_as_well(tmp_path: Path, occupied_port: int) -> None:
    path = config_file(tmp_path, gateway={"listen": f"127.0.0.1:{occupied_port}"})

    for flag in (["--debug"], ["--log-level", "debug"]):
        result = portico("serve", "-c", str(path), *flag, cwd=tmp_path)

        assert result.returncode != 0
        assert "Traceback (most recent call last)" in result.stderr
        assert "CannotListen" in result.stderr
        assert result.stderr.rstrip().splitlines()[-1].startswith("portico serve: error: ")
