"""nginx as a reference reverse proxy for tests, on a 127.0.0.1 ephemeral port.

:class:`Nginx` writes an ``nginx.conf`` into a directory of the test's own (pid file, logs and
every temp path inside it), starts ``nginx -p DIR -c nginx.conf`` in the foreground as a single
process (``daemon off; master_process off;``), waits until its port accepts connections and
stops it in teardown (SIGQUIT, then SIGKILL). The caller gives the ``http {}`` body as a
function of the port, so its ``server`` blocks can ``listen`` on it.

The port is picked by binding port 0 and closing the socket, so another process may take it
before nginx binds it: a start that fails on the bind is retried on a new port, up to
:data:`START_ATTEMPTS` times.

:func:`require_nginx` is the test-suite policy when the binary is missing: skip the module, but
fail loudly in CI (``CI`` set), where a silently skipped suite would pass for a green one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import pytest

__all__ = [
    "INSTALL_HINT",
    "NGINX",
    "START_ATTEMPTS",
    "HttpBody",
    "Nginx",
    "NginxUnavailable",
    "require_nginx",
]

NGINX = Path("/usr/sbin/nginx")
INSTALL_HINT = (
    f"nginx was not found at {NGINX}. Install it with `bash scripts/ensure-system-packages.sh "
    "test` (`make test` does this)."
)
START_ATTEMPTS = 3
STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
HOST = "127.0.0.1"

HttpBody = Callable[[int], str]
"""The contents of the ``http {}`` block, given the port nginx must listen on."""

_MAIN = """\
{user}worker_processes 1;
pid {pid};
error_log {error_log} info;
events {{ worker_connections 256; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{body}
}}
"""
# In the foreground and in one process, so that stopping the process we started stops nginx.
_GLOBAL = "daemon off; master_process off;"


class NginxUnavailable(RuntimeError):
    """nginx could not be started."""


def require_nginx() -> None:
    """Skip the calling test module when nginx is missing, unless in CI, where that fails."""
    if NGINX.exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and nginx is missing. {INSTALL_HINT}", pytrace=False)
    pytest.skip(INSTALL_HINT, allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


class Nginx:
    """nginx running with the configuration ``http_body(port)`` until :meth:`stop`."""

    def __init__(self, directory: Path, http_body: HttpBody) -> None:
        self.directory = directory
        self.http_body = http_body
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.directory / "nginx.conf"

    @property
    def error_log(self) -> Path:
        return self.directory / "error.log"

    @property
    def pid_path(self) -> Path:
        return self.directory / "nginx.pid"

    def __enter__(self) -> Nginx:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log(self) -> str:
        try:
            return self.error_log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        failure = ""
        for _ in range(START_ATTEMPTS):
            self.port = _free_port()
            self._write_config()
            self.error_log.write_bytes(b"")
            if self._launch():
                return
            failure = self.log()
            if "Address already in use" not in failure:
                break
        raise NginxUnavailable(f"nginx did not start on 127.0.0.1:{self.port}:\n{failure}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)

    def _write_config(self) -> None:
        # Started as root, nginx runs its workers as ``nobody``, who cannot read a test's private
        # temp dir. There are no workers with ``master_process off``; this keeps it so should that
        # change. As anyone else nginx cannot switch users, and the directive only earns a warning.
        user = "user root;\n" if os.geteuid() == 0 else ""
        text = _MAIN.format(
            user=user,
            dir=self.directory,
            pid=self.pid_path,
            error_log=self.error_log,
            body=self.http_body(self.port),
        )
        self.config_path.write_text(text, encoding="utf-8")

    def _pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text(encoding="ascii"))
        except (FileNotFoundError, ValueError):
            return None

    def _launch(self) -> bool:
        """Start nginx; whether it accepts connections (if not, it is no longer running)."""
        self.pid_path.unlink(missing_ok=True)
        argv = [
            str(NGINX),
            "-p",
            str(self.directory),
            "-c",
            str(self.config_path),
            "-e",
            str(self.error_log),
            "-g",
            _GLOBAL,
        ]
        process = subprocess.Popen(
            argv,
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            if "Address already in use" in self.log():
                break  # nginx would retry the bind for seconds before it gives up
            # nginx writes its pid file only once its sockets are bound: what accepts on the
            # port before that is another process's socket.
            if self._pid() == process.pid and _accepts(self.port):
                self._process = process
                return True
            time.sleep(0.02)
        if process.poll() is None:
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT)
        return False
