"""The other way users install a Python tool: a wheel, with pip, into a clean virtual environment.

The wheel is built from this repository with ``uv build`` (hatchling, the build backend of
pyproject.toml), a virtual environment is made with ``python -m venv``, and ``pip`` installs the
wheel into it. Offline when it can be: uv installs the locked runtime dependencies
(requirements.lock) from its cache first, and pip then installs the wheel with ``--no-index``, so
pip still checks that every dependency the wheel declares is there. Without a warm cache pip
resolves them from the package index.

The installed ``portico`` then serves a real request on a free port, and ``portico demo``
answers the first curl line of its tour. A wheel carries no compiled module: the gateway code
runs interpreted, and says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.support.gateway import ROOT, route, service, with_defaults, write_config
from tests.support.upstreams import Upstream

# Building, making a venv and installing take 10-40 s on two busy cores; each process below is
# given its own deadline, and the whole module this much.
pytestmark = pytest.mark.timeout(240)

STARTUP_TIMEOUT = 60.0
GATEWAY_BANNER = "Portico gateway on http://"
END_OF_TOUR = "Stop with Ctrl-C."
# What a clean shell would not have: the development venv's path and the suite's own settings.
UNSET = ("PYTHONPATH", "VIRTUAL_ENV", "PORTICO_NATIVE", "PORTICO_DATABASE_URL")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    offline: bool
    """The dependencies came from uv's cache and pip ran with --no-index."""

    @property
    def portico(self) -> Path:
        return self.venv / "bin" / "portico"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


def clean_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT))
    )
    return env


def run(*command: str | Path, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_environment(),
        check=False,
    )


def uv() -> str:
    found = Path(sys.executable).with_name("uv")
    if found.exists():
        return str(found)
    which = shutil.which("uv")
    assert which is not None, "uv not found: make install puts it in .venv/bin"
    return which


def build_wheel(out: Path) -> Path:
    """``uv build --wheel``: offline when uv's cache has the build backend, else from the index."""
    done = run(uv(), "build", "--wheel", "--offline", "--out-dir", out, ROOT)
    if done.returncode != 0:
        done = run(uv(), "build", "--wheel", "--out-dir", out, ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    wheels = list(out.glob("portico-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    folder = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(folder / "dist")
    venv = folder / "venv"
    made = run(sys.executable, "-m", "venv", venv)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    cached = run(
        uv(), "pip", "install", "--offline", "--python", python, "-r", ROOT / "requirements.lock"
    )
    offline = cached.returncode == 0
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    done = run(*pip, *(["--no-index"] if offline else []), wheel)
    assert done.returncode == 0, done.stdout + done.stderr
    return Installed(wheel, venv, offline)


def test_the_wheel_carries_the_package_data_and_no_compiled_module(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as archive:
        names = archive.namelist()

    assert "portico/demo/portico.yaml" in names
    # The validation policy's OpenAPI meta-schemas, and the demo's OpenAPI document.
    assert "portico/policies/validation/schemas/oas-3.0.json" in names
    assert "portico/policies/validation/schemas/oas-3.1.json" in names
    assert "portico/demo/orders-v2.openapi.yaml" in names
    assert any(n.startswith("portico/store/migrations/versions/") for n in names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    # A build in the working tree (make install) stays there: the wheel is the same everywhere.
    assert not [n for n in names if n.endswith((".so", ".pyd", "_native.json"))]


def test_pip_installed_the_wheel_into_the_venv_not_the_source_tree(installed: Installed) -> None:
    done = run(installed.python, "-c", "import portico; print(portico.__file__)")

    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(installed.venv)
    shown = run(installed.python, "-m", "pip", "show", "portico")
    assert "Location: " + str(installed.venv) in shown.stdout


class Process:
    """A ``portico`` command of the installed venv, its stdout read line by line."""

    def __init__(self, command: list[str], cwd: Path) -> None:
        self.log_path = cwd / "stderr.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command,
                cwd=cwd,
                env=clean_environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def read_until(self, text: str) -> list[str]:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        seen: list[str] = []
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                pytest.fail(f"no {text!r} on stdout; stderr:\n{self.stderr()}")
            seen.append(line)
            if text in line:
                return seen

    def stderr(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: signal.Signals) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                return self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(timeout=10)


@contextlib.contextmanager
def running(command: list[str], cwd: Path) -> Iterator[Process]:
    process = Process(command, cwd)
    try:
        yield process
    finally:
        if process.process.poll() is None:
            process.process.kill()
            process.process.wait(timeout=10)


def test_portico_serve_from_the_wheel_proxies_a_request(
    installed: Installed, tmp_path: Path
) -> None:
    upstream = Upstream("orders")
    try:
        config = with_defaults(
            {
                "services": {"orders": service(upstream.url)},
                "routes": [route("orders", "/orders/{rest:path}", "orders")],
                "database": {"url": f"sqlite:///{tmp_path / 'portico.db'}"},
            }
        )
        path = write_config(tmp_path / "portico.yaml", config)
        command = [str(installed.portico), "serve", "-c", str(path)]
        with running(command, tmp_path) as serve:
            banner = serve.read_until(GATEWAY_BANNER)[-1]
            url = banner.split(GATEWAY_BANNER, 1)[1].split()[0]

            response = httpx.get(f"http://{url}/orders/42?lines=1", trust_env=False, timeout=30)

            assert response.status_code == 200, response.text
            assert upstream.received[-1].target == "/orders/42?lines=1"
            assert serve.stop(signal.SIGTERM) == 0
        assert "gateway code: interpreted: no native build" in serve.stderr()
    finally:
        upstream.close()


def test_portico_demo_from_the_wheel_answers_the_first_curl_line_of_its_tour(
    installed: Installed, tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [str(installed.portico), "demo", "--workdir", str(tmp_path / "demo")]
    with running([*command, "--port", str(port)], tmp_path) as demo:
        tour = demo.read_until(END_OF_TOUR)
        first_curl = next(line.strip() for line in tour if line.strip().startswith("curl "))
        url = shlex.split(first_curl)[-1]

        if shutil.which("curl"):
            answer = run(*shlex.split(first_curl), "--fail", timeout=30)
            assert answer.returncode == 0, answer.stderr
            body = answer.stdout
        else:
            response = httpx.get(url, trust_env=False, timeout=30)
            assert response.status_code == 200, response.text
            body = response.text

        assert url == f"http://127.0.0.1:{port}/v1/orders"
        listing = json.loads(body)
        assert listing["count"] == len(listing["orders"]) > 0
        assert demo.stop(signal.SIGINT) == 0
