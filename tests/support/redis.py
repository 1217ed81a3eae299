"""A throwaway Redis server for tests, from Debian's ``redis-server``.

``running_redis()`` starts ``redis-server`` on 127.0.0.1 at a free port with no persistence, in
a fresh temporary directory, waits until it answers PING, and on exit shuts it down and deletes
the directory, whatever happened in between. ``stop()`` and ``start()`` take the same server
down and up again on the same port, for the tests of what a policy does while Redis is away.

``redis_for_session()`` adds the test-suite policy for session fixtures: a missing binary is an
error telling how to install it, unless PORTICO_TEST_SKIP_REDIS=1 asks to skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

__all__ = ["INSTALL_HINT", "SKIP_ENV", "RedisServer", "redis_for_session", "running_redis"]

SKIP_ENV = "PORTICO_TEST_SKIP_REDIS"
INSTALL_HINT = (
    "redis-server was not found. Install it with `bash scripts/ensure-system-packages.sh test` "
    f"(`make test` does this), or set {SKIP_ENV}=1 to skip the Redis tests."
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One throwaway ``redis-server`` process; ``url`` is what a config's ``redis.url`` takes."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.socket_path = directory / "redis.sock"
        """The server also listens on this Unix socket."""
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--protected-mode", "no",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--loglevel", "warning",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1) as client:
                    if client.ping():
                        return
            except redis.ConnectionError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(
                        f"redis-server did not start on {self.port}: {log}"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (the port stays reserved for :meth:`start`)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)

    def flush(self) -> None:
        with self.client() as client:
            client.flushall()


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if binary is None:
        raise FileNotFoundError(INSTALL_HINT)
    with tempfile.TemporaryDirectory(prefix="portico-redis-") as directory:
        server = RedisServer(binary, Path(directory))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def redis_for_session() -> Iterator[RedisServer]:
    """A server for a session or module fixture, or a skip when PORTICO_TEST_SKIP_REDIS=1."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1")
    with running_redis() as server:
        yield server
