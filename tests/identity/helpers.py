"""Helpers for identity tests: ``portico serve`` and ``portico keys`` as real processes.

:class:`ServeProcess` runs ``portico --log-level debug serve`` with standard output and standard
error captured in one file, so a test can check that a key never appears in anything the process
wrote, at the most verbose log level. :func:`keys_command` runs ``portico keys ...``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from tests.support.gateway import client, wait_for, with_defaults, write_config

ROOT = Path(__file__).resolve().parents[2]
BANNER = re.compile(r"Portico gateway on http://127\.0\.0\.1:(\d+)")
STARTUP_TIMEOUT = 60.0


def portico_executable() -> str:
    script = ROOT / ".venv" / "bin" / "portico"
    return str(script if script.exists() else Path(sys.executable).with_name("portico"))


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PORTICO_DATABASE_URL", None)
    return env


class ServeProcess:
    """``portico --log-level debug serve -c FILE``; everything it prints goes to ``output``."""

    def __init__(self, directory: Path, config: dict[str, Any]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.config_path = write_config(directory / "portico.yaml", with_defaults(config))
        self.output_path = directory / "output.log"
        self._output = self.output_path.open("wb")
        self.process = subprocess.Popen(
            [portico_executable(), "--log-level", "debug", "serve", "-c", str(self.config_path)],
            cwd=directory,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_environment(),
        )
        try:
            self.port = int(wait_for(self._banner, STARTUP_TIMEOUT, what="the serve banner"))
        except AssertionError:
            self.stop()
            raise AssertionError(f"portico serve did not start:\n{self.output()}") from None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        return client(self.url, **kwargs)

    def output(self) -> str:
        """Everything the process wrote so far (standard output and the log)."""
        self._output.flush()
        return self.output_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._output.close()

    def _banner(self) -> str | None:
        if self.process.poll() is not None:
            raise AssertionError(f"portico serve exited with {self.process.returncode}")
        match = BANNER.search(self.output())
        return match.group(1) if match else None


def keys_command(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``portico keys ARGS -c CONFIG``, as a user types it."""
    subcommand, *rest = args
    return subprocess.run(
        [portico_executable(), "keys", subcommand, "-c", str(config_path), *rest],
        capture_output=True,
        text=True,
        timeout=60,
        env=_environment(),
        check=False,
    )


def created_key(result: subprocess.CompletedProcess[str]) -> str:
    """The key a successful ``keys create`` or ``keys rotate`` printed (its only stdout line)."""
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pk_"), result.stdout
    return lines[0]


def key_id(key: str) -> str:
    return key.split("_")[1]


def wait_until_status(
    http: httpx.Client, path: str, headers: dict[str, str], status: int, timeout: float = 10.0
) -> float:
    """Poll ``path`` until it answers ``status``; returns the seconds it took."""
    started = time.monotonic()
    wait_for(
        lambda: http.get(path, headers=headers).status_code == status,
        timeout=timeout,
        interval=0.01,
        what=f"{path} to answer {status}",
    )
    return time.monotonic() - started
