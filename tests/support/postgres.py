"""A throwaway PostgreSQL cluster for tests, from the Debian server binaries.

``running_cluster()`` runs initdb in a fresh temporary directory, starts the server on
127.0.0.1 at a free port (trust authentication, fsync off), and on exit stops it and deletes
the directory, whatever happened in between. PostgreSQL refuses to run as root, so when the
tests run as root the server runs as the ``postgres`` system user that the Debian package
creates, in a directory that user owns.

The server's time zone is deliberately not UTC, so code that forgets to normalise timestamps
fails here rather than in production.

``cluster_for_session()`` adds the test-suite policy for session fixtures: missing binaries are
an error telling how to install them, unless PORTICO_TEST_SKIP_POSTGRES=1 asks to skip.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

__all__ = [
    "INSTALL_HINT",
    "SKIP_ENV",
    "PostgresCluster",
    "PostgresUnavailable",
    "cluster_for_session",
    "find_bin_dir",
    "running_cluster",
]

SKIP_ENV = "PORTICO_TEST_SKIP_POSTGRES"
INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found under /usr/lib/postgresql/*/bin. "
    "Install them with `bash scripts/ensure-system-packages.sh test` (`make test` does this), "
    f"or set {SKIP_ENV}=1 to skip the PostgreSQL tests."
)
SERVER_USER = "postgres"
SERVER_TIMEZONE = "Asia/Kolkata"  # UTC+05:30: a non-whole-hour offset catches more mistakes
_START_ATTEMPTS = 5


class PostgresUnavailable(RuntimeError):
    """The throwaway cluster cannot be created or started."""


def find_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<major>/bin`` that has initdb and pg_ctl."""
    candidates = [
        path.parent
        for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")
        if (path.parent / "pg_ctl").exists() and path.parent.parent.name.isdigit()
    ]
    if not candidates:
        raise PostgresUnavailable(INSTALL_HINT)
    return max(candidates, key=lambda path: int(path.parent.name))


@dataclass(frozen=True, slots=True)
class PostgresCluster:
    """A running throwaway cluster; superuser ``postgres``, any password accepted."""

    bin_dir: Path
    base_dir: Path
    port: int
    host: str = "127.0.0.1"
    user: str = SERVER_USER

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "server.log"

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        """A ``postgresql://`` URL as a user would write it in ``database.url``."""
        auth = self.user if password is None else f"{self.user}:{password}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a random name by default) and return its URL."""
        name = name or f"test_{uuid.uuid4().hex[:12]}"
        with self._admin() as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, disconnecting anyone still connected to it."""
        with self._admin() as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    @contextmanager
    def database(self) -> Iterator[str]:
        """A fresh database for one test; its URL is yielded and it is dropped afterwards."""
        name = f"test_{uuid.uuid4().hex[:12]}"
        url = self.create_database(name)
        try:
            yield url
        finally:
            self.drop_database(name)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True
        )


@contextmanager
def running_cluster(
    bin_dir: Path | None = None, settings: Mapping[str, str] | None = None
) -> Iterator[PostgresCluster]:
    """Start a throwaway cluster; stop it and delete its files on exit, even on failure.

    ``settings`` are extra ``postgresql.conf`` lines (name to already-quoted value).
    """
    bin_dir = bin_dir or find_bin_dir()
    base_dir = Path(tempfile.mkdtemp(prefix="portico-pg-"))
    cluster: PostgresCluster | None = None
    try:
        if _running_as_root():
            try:
                server_user = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root needs the {SERVER_USER!r} system user to run the server; "
                    "it comes with the Debian postgresql package. " + INSTALL_HINT
                ) from None
            os.chown(base_dir, server_user.pw_uid, server_user.pw_gid)
        _run(
            [
                str(bin_dir / "initdb"),
                f"--pgdata={base_dir / 'data'}",
                f"--username={SERVER_USER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            base_dir,
        )
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{base_dir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "timezone": f"'{SERVER_TIMEZONE}'",
            **(settings or {}),
        }
        cluster = _start(bin_dir, base_dir, conf)
        yield cluster
    finally:
        if cluster is not None or (base_dir / "data" / "postmaster.pid").exists():
            _stop(bin_dir, base_dir)
        shutil.rmtree(base_dir, ignore_errors=True)


def cluster_for_session() -> Iterator[PostgresCluster]:
    """Body of a session-scoped pytest fixture: ``yield from cluster_for_session()``."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"PostgreSQL tests skipped because {SKIP_ENV}=1")
    try:
        bin_dir = find_bin_dir()
    except PostgresUnavailable as exc:
        missing = str(exc)
    else:
        missing = ""
    if missing:
        # Outside the except block, so pytest shows the message once, not as a chained error.
        pytest.fail(missing, pytrace=False)
    with running_cluster(bin_dir) as cluster:
        yield cluster


def _start(bin_dir: Path, base_dir: Path, conf: Mapping[str, str]) -> PostgresCluster:
    conf_file = base_dir / "data" / "postgresql.conf"
    original = conf_file.read_text()
    error = ""
    # The free port can be taken between choosing and binding it; pick another and retry.
    for _ in range(_START_ATTEMPTS):
        cluster = PostgresCluster(bin_dir=bin_dir, base_dir=base_dir, port=_free_port())
        lines = {**conf, "port": str(cluster.port)}
        conf_file.write_text(original + "".join(f"\n{k} = {v}" for k, v in lines.items()) + "\n")
        try:
            _run(
                [
                    str(bin_dir / "pg_ctl"),
                    f"--pgdata={cluster.data_dir}",
                    f"--log={cluster.log_file}",
                    "--wait",
                    "--timeout=60",
                    "start",
                ],
                base_dir,
            )
        except PostgresUnavailable as exc:
            error = f"{exc}\n--- server log ---\n{cluster.log_tail()}"
            if not re.search(r"could not (bind|create listen)", cluster.log_tail()):
                break
            cluster.log_file.unlink(missing_ok=True)
        else:
            return cluster
    raise PostgresUnavailable(f"the throwaway PostgreSQL cluster did not start:\n{error}")


def _stop(bin_dir: Path, base_dir: Path) -> None:
    # Immediate mode: nothing in a throwaway cluster is worth a shutdown checkpoint.
    subprocess.run(
        _as_server_user(
            [str(bin_dir / "pg_ctl"), f"--pgdata={base_dir / 'data'}", "--mode=immediate", "stop"]
        ),
        cwd=base_dir,
        capture_output=True,
        timeout=60,
        check=False,
    )


def _run(command: list[str], cwd: Path) -> None:
    # cwd must be readable by the server user: initdb fails if it cannot resolve its own cwd.
    result = subprocess.run(
        _as_server_user(command), cwd=cwd, capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise PostgresUnavailable(
            f"{Path(command[0]).name} exited with {result.returncode}:\n"
            f"{result.stdout}{result.stderr}".rstrip()
        )


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *command] if _running_as_root() else command


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
