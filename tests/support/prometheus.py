"""A throwaway Prometheus server for tests, and promtool, from Debian's ``prometheus`` package.

``running_prometheus(config, directory)`` starts ``prometheus`` with that config file on a free
127.0.0.1 port, its database under ``directory``, waits until it says it is ready, and stops it
on exit, whatever happened in between. :class:`PrometheusServer` asks it PromQL through its HTTP
API, the way Grafana does. ``promtool(...)`` runs Debian's ``promtool``.

A missing binary is a failure telling how to install it: ``make test`` installs the package
(``scripts/ensure-system-packages.sh``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.gateway import wait_for

__all__ = [
    "PROMETHEUS",
    "PROMTOOL",
    "PrometheusServer",
    "free_port",
    "promtool",
    "running_prometheus",
]

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
STARTUP_TIMEOUT = 60.0


def _require(binary: str) -> None:
    if not os.path.exists(binary):
        pytest.fail(
            f"{os.path.basename(binary)} missing: make test installs Debian's prometheus package "
            "(bash scripts/ensure-system-packages.sh test)"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``promtool ARGS...`` to its end, with its output as text."""
    _require(PROMTOOL)
    return subprocess.run(
        [PROMTOOL, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class PrometheusServer:
    """A running ``prometheus``: its address, and its query API."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.api = httpx.Client(base_url=self.url, trust_env=False, timeout=10)

    def query(self, expr: str) -> dict[str, Any]:
        """The API's answer to an instant query at the current time: ``status`` is ``success``
        with ``data.result``, or ``error`` with ``errorType`` and ``error`` (a parse error is a
        400 answered this way)."""
        body: dict[str, Any] = self.api.get("/api/v1/query", params={"query": expr}).json()
        return body

    def result(self, expr: str) -> list[dict[str, Any]]:
        """The series an instant query returns; a failed query fails the test."""
        body = self.query(expr)
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def label_values(self, label: str, match: str) -> list[str]:
        """The values of ``label`` on the series ``match`` selects: what Grafana's
        ``label_values(match, label)`` variable query asks."""
        response = self.api.get(f"/api/v1/label/{label}/values", params={"match[]": match})
        body = response.json()
        assert body["status"] == "success", f"label_values({match}, {label}): {body}"
        return list(body["data"])

    def label_names(self, match: str) -> list[str]:
        """The label names of the series ``match`` selects (none: no such series stored)."""
        body = self.api.get("/api/v1/labels", params={"match[]": match}).json()
        assert body["status"] == "success", f"labels of {match}: {body}"
        return list(body["data"])

    def close(self) -> None:
        self.api.close()


@contextmanager
def running_prometheus(config: Path, directory: Path) -> Iterator[PrometheusServer]:
    """``prometheus --config.file=CONFIG``, listening on 127.0.0.1 at a free port."""
    _require(PROMETHEUS)
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = directory / "prometheus.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
    server = PrometheusServer(port, log)
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(
                    f"prometheus exited ({process.returncode}):\n{log.read_text()[-3000:]}"
                )
            try:
                return server.api.get("/-/ready").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=STARTUP_TIMEOUT, interval=0.2, what="prometheus to be ready")
        yield server
    finally:
        server.close()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
