"""Running a Portico gateway for a test, in-process or as a ``portico serve`` subprocess.

- :func:`running_gateway` loads a config written to a temporary file, builds the runtime and
  starts :class:`~portico.gateway.app.Gateway` on a uvloop event loop in a background thread, so
  tests can talk to it with ordinary blocking clients.
- :class:`PorticoProcess` runs ``portico serve -c FILE`` for what needs a real process: reloads
  on file edits and SIGHUP, graceful shutdown on SIGTERM, memory measured from outside.

Both listen on ``127.0.0.1:0`` unless the config says otherwise, and both stop in teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvloop
import yaml

from portico.assembly import build_runtime, load_config
from portico.gateway.app import Gateway
from portico.identity.context import Extensions
from portico.shared.state import SharedState

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")
Config = dict[str, Any]
TEST_GATEWAY_DEFAULTS: Config = {"listen": "127.0.0.1:0", "drain_timeout": "5s"}
TEST_OPERATIONS_DEFAULTS: Config = {"listen": "127.0.0.1:0"}


def with_defaults(config: Config) -> Config:
    """The config with the gateway listening on an ephemeral port and a short drain timeout."""
    out = copy.deepcopy(config)
    gateway = out.setdefault("gateway", {})
    for key, value in TEST_GATEWAY_DEFAULTS.items():
        gateway.setdefault(key, value)
    operations = out.setdefault("operations", {})
    for key, value in TEST_OPERATIONS_DEFAULTS.items():
        operations.setdefault(key, value)
    return out


def write_config(path: Path, config: Config) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def wait_for(
    condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(interval)


def client(base_url: str, **kwargs: Any) -> httpx.Client:
    """An httpx client that ignores proxy settings from the environment."""
    kwargs.setdefault("timeout", 30.0)
    return httpx.Client(base_url=base_url, trust_env=False, **kwargs)


class RunningGateway:
    """A gateway serving in a background thread of this process."""

    def __init__(self, gateway: Gateway, loop: asyncio.AbstractEventLoop, config_path: Path):
        self.gateway = gateway
        self.loop = loop
        self.config_path = config_path

    @property
    def port(self) -> int:
        return self.gateway.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        return client(self.url, **kwargs)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the gateway's event loop (the data plane is not thread-safe)."""
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(timeout=10)


@contextlib.contextmanager
def running_gateway(
    tmp_path: Path, config: Config, shared: SharedState | None = None
) -> Iterator[RunningGateway]:
    """A gateway in this process on its own event loop thread; ``shared``: the shared state it
    uses (a small MemoryState, a RedisState), closed with it, instead of the config's."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = write_config(tmp_path / "portico.yaml", with_defaults(config))
    extensions = Extensions(shared=shared) if shared is not None else None
    runtime = build_runtime(load_config(path), extensions=extensions)
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="gateway-loop", daemon=True)
    thread.start()

    async def start() -> Gateway:
        gateway = Gateway(runtime)
        await gateway.start()
        return gateway

    try:
        gateway = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
        try:
            yield RunningGateway(gateway, loop, path)
        finally:
            asyncio.run_coroutine_threadsafe(gateway.stop(), loop).result(timeout=30)
            if shared is not None:
                asyncio.run_coroutine_threadsafe(shared.close(), loop).result(timeout=10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


class PorticoProcess:
    """``portico serve -c FILE`` in a subprocess, with its stderr (the log) kept in a file."""

    STARTUP_TIMEOUT = 60.0
    BANNER = "Portico gateway on http://"
    OPERATIONS_BANNER = "Portico operations on http://"
    ADMIN_BANNER = "Portico admin API on http://"

    def __init__(self, tmp_path: Path, config: Config, args: tuple[str, ...] = ()) -> None:
        """``args`` follow ``serve -c FILE`` (``--workers 2``)."""
        self.tmp_path = tmp_path
        self.config_path = tmp_path / "portico.yaml"
        self.log_path = tmp_path / "portico.log"
        self.write(config)
        env = dict(os.environ)
        env.pop("PORTICO_DATABASE_URL", None)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [_portico_command(), "serve", "-c", str(self.config_path), *args],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read_stdout, name="portico-stdout", daemon=True).start()
        self.operations_port: int | None = None
        self.admin_port: int | None = None
        self.port = self._wait_for_banner()

    def write(self, config: Config) -> None:
        """Write the config file (as an editor would, in place)."""
        config = with_defaults(config)
        config.setdefault("database", {"url": f"sqlite:///{self.tmp_path / 'portico.db'}"})
        write_config(self.config_path, config)

    def write_text(self, text: str) -> None:
        self.config_path.write_text(text, encoding="utf-8")

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        return client(self.url, **kwargs)

    @property
    def operations_url(self) -> str:
        assert self.operations_port is not None, "the operations listener is off"
        return f"http://127.0.0.1:{self.operations_port}"

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()

    def _read_stdout(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for line in stdout:
                self._lines.put(line)
        self._lines.put(None)

    def _wait_for_banner(self) -> int:
        deadline = time.monotonic() + self.STARTUP_TIMEOUT
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                raise AssertionError(f"portico serve did not start:\n{self.log()}")
            if self.BANNER in line:
                port = int(line.strip().rsplit(":", 1)[1])
                self._read_operations_banner()
                return port

    def _read_operations_banner(self) -> None:
        """The operations listener's line and the admin API's follow the gateway's at once,
        when they are on."""
        for _ in range(2):
            try:
                line = self._lines.get(timeout=2)
            except queue.Empty:
                return
            if line is None:
                return
            if self.OPERATIONS_BANNER in line:
                self.operations_port = int(
                    line.split(self.OPERATIONS_BANNER, 1)[1].split()[0].split(":")[1]
                )
            elif self.ADMIN_BANNER in line:
                address = line.split(self.ADMIN_BANNER, 1)[1].split("/")[0]
                self.admin_port = int(address.rsplit(":", 1)[1])
                return

    @property
    def admin_url(self) -> str:
        assert self.admin_port is not None, "the admin API is off"
        return f"http://127.0.0.1:{self.admin_port}"


def _portico_command() -> str:
    script = ROOT / ".venv" / "bin" / "portico"
    return str(script if script.exists() else Path(sys.executable).with_name("portico"))


def run_portico(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real ``portico`` command, to its end, with its output as text."""
    return subprocess.run(
        [_portico_command(), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


# -- raw HTTP/1.1 over a socket, for what clients normally hide --------------------------------


class RawResponse:
    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def header_names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}

    def json(self) -> Any:
        import json

        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"RawResponse({self.status}, {self.headers!r}, {self.body[:200]!r})"


class RawConnection:
    """A client TCP connection that writes exact bytes and parses responses itself."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        import socket

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.rfile = self.sock.makefile("rb")

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.rfile.close()
            self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_head(self) -> tuple[int, str, list[tuple[str, str]], str]:
        line = self.rfile.readline(65536)
        if not line:
            raise ConnectionError("connection closed before a response")
        version, status, *reason = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        headers: list[tuple[str, str]] = []
        while True:
            raw = self.rfile.readline(65536)
            if not raw:
                raise ConnectionError("connection closed inside a response head")
            if raw in (b"\r\n", b"\n"):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers.append((name.strip(), value.strip()))
        return int(status), (reason[0] if reason else ""), headers, version

    def read_response(self, *, head_only: bool = False) -> RawResponse:
        """The next final response (interim 1xx responses are skipped)."""
        while True:
            status, reason, headers, _ = self.read_head()
            if status >= 200 or status == 101:
                break
        response = RawResponse(status, reason, headers, b"")
        if head_only or status in (101, 204, 304):
            return response
        encoding = (response.header("transfer-encoding") or "").lower()
        length = response.header("content-length")
        if "chunked" in encoding:
            response.body = self._read_chunked()
        elif length is not None:
            response.body = self._read_exactly(int(length))
        else:
            response.body = self.rfile.read()
        return response

    def read_interim(self) -> tuple[int, list[tuple[str, str]]]:
        status, _, headers, _ = self.read_head()
        return status, headers

    def is_closed(self, timeout: float = 5.0) -> bool:
        """Whether the peer closes the connection (EOF) within ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            return self.rfile.read(1) == b""
        except TimeoutError:
            return False
        except OSError:
            return True

    def _read_exactly(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) != n:
            raise ConnectionError(f"body cut short: {len(data)} of {n} bytes")
        return data

    def _read_chunked(self) -> bytes:
        out = bytearray()
        while True:
            size_line = self.rfile.readline(1024)
            if not size_line:
                raise ConnectionError("connection closed inside a chunked body")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self.rfile.readline(65536) not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            out += self._read_exactly(size)
            self.rfile.readline(16)


# -- problem responses -------------------------------------------------------------------------

PROBLEM_CONTENT_TYPE = "application/problem+json"


def assert_problem(
    status: int,
    content_type: str | None,
    request_id_header: str | None,
    body: bytes,
    *,
    expected_status: int,
    expected_type: str,
    secrets: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Check one Portico error response; returns the parsed problem object.

    The problem's ``request_id`` must equal the ``X-Request-ID`` response header, and none of
    ``secrets`` (upstream ports, addresses) may appear in the body.
    """
    import json

    assert status == expected_status, (status, body[:500])
    assert content_type is not None and content_type.split(";")[0].strip() == (
        PROBLEM_CONTENT_TYPE
    ), content_type
    problem = json.loads(body)
    assert problem["type"] == expected_type, problem
    assert problem["status"] == expected_status, problem
    assert isinstance(problem.get("title"), str) and problem["title"], problem
    assert isinstance(problem.get("request_id"), str) and problem["request_id"], problem
    assert problem["request_id"] == request_id_header, (problem, request_id_header)
    # The request id is random hex: an upstream port's digits may turn up in it by chance.
    text = body.decode("utf-8", errors="replace").replace(problem["request_id"], "")
    for secret in secrets:
        assert secret not in text, f"{secret!r} leaked into an error body: {text}"
    return dict(problem)


def check_problem(
    response: httpx.Response,
    expected_status: int,
    expected_type: str,
    *,
    secrets: tuple[str, ...] = (),
) -> dict[str, Any]:
    return assert_problem(
        response.status_code,
        response.headers.get("content-type"),
        response.headers.get("x-request-id"),
        response.content,
        expected_status=expected_status,
        expected_type=expected_type,
        secrets=secrets,
    )


def check_raw_problem(
    response: RawResponse,
    expected_status: int,
    expected_type: str,
    *,
    secrets: tuple[str, ...] = (),
) -> dict[str, Any]:
    return assert_problem(
        response.status,
        response.header("content-type"),
        response.header("x-request-id"),
        response.body,
        expected_status=expected_status,
        expected_type=expected_type,
        secrets=secrets,
    )


# -- config builders ---------------------------------------------------------------------------


def service(*targets: str | dict[str, Any], **settings: Any) -> Config:
    """A service entry: targets as URLs or ``{url, weight}`` mappings, plus any settings."""
    return {"targets": list(targets), **settings}


def route(name: str, path: str, service: str = "main", **settings: Any) -> Config:
    """A route entry; ``methods``, ``hosts`` and ``headers`` go into ``match``."""
    match: Config = {"path": path}
    for key in ("methods", "hosts", "headers"):
        if key in settings:
            match[key] = settings.pop(key)
    return {"name": name, "match": match, "service": service, **settings}


def proxy_config(*targets: str | dict[str, Any], **settings: Any) -> Config:
    """One service ``main`` with these targets, and a route taking every path to it."""
    return {
        "services": {"main": service(*targets, **settings)},
        "routes": [route("all", "/{rest:path}")],
    }
