"""``portico demo``: the sample backends, the sample config and the gateway, in one process.

The sample ``portico.yaml`` shipped in this package is written to the work directory with the
ports actually used, so the user can edit it and watch the gateway reload it. The gateway runs
through :func:`portico.serving.run`, the code path of ``portico serve``. Once it answers, a short
tour is printed: curl lines that work as printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shlex
import signal
import socket
import sys
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from portico import serving
from portico.config.errors import ConfigError
from portico.demo.backends import DEFAULT_PORTS, Backends, start_backends
from portico.identity.apikeys import NewApiKey, generate_key
from portico.store.database import StoreError

__all__ = ["render_config", "run_demo", "sample_config", "tour", "with_demo_key", "write_config"]

HOST = "127.0.0.1"
TEMPLATE_GATEWAY_PORT = 8080
TEMPLATE_OPERATIONS_PORT = 9180
TEMPLATE_DATABASE_URL = "sqlite:///portico-demo.db"
_ADDRESS = re.compile(r"\b127\.0\.0\.1:(\d+)\b")

log = logging.getLogger("portico.demo")


def sample_config() -> str:
    """The sample config as shipped (also in ``examples/demo/portico.yaml``)."""
    return resources.files("portico.demo").joinpath("portico.yaml").read_text(encoding="utf-8")


def render_config(
    template: str,
    *,
    port: int,
    backend_ports: Mapping[str, int],
    database: Path,
    operations_port: int = TEMPLATE_OPERATIONS_PORT,
) -> str:
    """The sample config with the gateway port, backend ports and database file of this run."""
    ports = {str(TEMPLATE_GATEWAY_PORT): port, str(TEMPLATE_OPERATIONS_PORT): operations_port}
    ports.update({str(DEFAULT_PORTS[name]): actual for name, actual in backend_ports.items()})
    found: set[str] = set()

    def substitute(match: re.Match[str]) -> str:
        found.add(match.group(1))
        return f"{HOST}:{ports.get(match.group(1), match.group(1))}"

    text = _ADDRESS.sub(substitute, template)
    if set(ports) - found or TEMPLATE_DATABASE_URL not in text:
        raise ValueError("the demo config no longer has the addresses the demo fills in")
    return text.replace(TEMPLATE_DATABASE_URL, f"sqlite:///{database}")


_SHOP = 'shop: {scopes: ["orders:read"]}'


def with_demo_key(text: str, key: NewApiKey) -> str:
    """The config with ``key`` declared (by its hash) for the demo's ``shop`` consumer."""
    if _SHOP not in text:
        raise ValueError("the demo config no longer declares the shop consumer the demo keys")
    declared = (
        f'shop: {{scopes: ["orders:read"], api_keys: [{{id: {key.id}, sha256: {key.sha256}}}]}}'
    )
    return text.replace(_SHOP, declared, 1)


def write_config(
    workdir: Path,
    port: int,
    backend_ports: Mapping[str, int],
    key: NewApiKey,
    operations_port: int = TEMPLATE_OPERATIONS_PORT,
) -> Path:
    """Write this run's config to ``workdir/portico.yaml`` (replacing an older one); its path."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    ignore = workdir / ".gitignore"
    if not ignore.exists():  # the demo's files are not for committing, wherever they are
        ignore.write_text("# Written by `portico demo`.\n*\n", encoding="utf-8")
    path = workdir / "portico.yaml"
    text = render_config(
        sample_config(),
        port=port,
        backend_ports=backend_ports,
        database=workdir / "portico.db",
        operations_port=operations_port,
    )
    text = with_demo_key(text, key)
    path.write_text(text, encoding="utf-8")
    return path


def tour(
    gateway_url: str,
    config_path: Path,
    backends: Backends,
    key: NewApiKey,
    operations_url: str = f"http://{HOST}:{TEMPLATE_OPERATIONS_PORT}",
) -> str:
    """What to try, printed once the gateway answers. Every curl line works as printed."""
    u = gateway_url
    ops = operations_url
    new_order = '{"customer_id": "c-101", "items": [{"sku": "GR-BRASS", "quantity": 2}]}'
    config = _shown(config_path)
    addresses = ", ".join(f"{name} :{port}" for name, port in backends.ports.items())
    return f"""
Portico demo is running.

  gateway     {u}
  operations  {ops}   (/healthz, /readyz, /metrics)
  config      {config}   (edit it while the demo runs: it is reloaded)
  backends    {addresses}

Try it from another terminal:

  # Versions in the path: v1 writes money as a number, v2 as {{amount, currency}}
  curl -s {u}/v1/orders
  curl -s {u}/v1/orders/1001
  curl -s {u}/v2/orders/1001

  # Version in a header: the same path, sent to v2 when asked for
  curl -s -H 'X-Api-Version: 2' {u}/orders/1002

  # Create an order: 201 with a Location the gateway maps to /v1/orders/<id>; v2 sees it too
  curl -s -i -X POST {u}/v1/orders -H 'Content-Type: application/json' -d '{new_order}'

  # Your request id goes upstream and comes back (see the X-Request-ID header and "debug")
  curl -s -i -H 'X-Request-ID: my-trace-42' {u}/crm/customers/c-100

  # Two CRM instances take turns: run it twice and watch debug.served_by
  curl -s '{u}/crm/customers?email=ada@example.com'

  # A partner route needs an API key (this one was made for consumer demo/shop at start);
  # the backend learns who called: see debug.consumer
  curl -s -H 'X-API-Key: {key.key}' {u}/partner/orders

  # Portico's own errors are application/problem+json, here a 404 (no route for /v3)
  curl -s -i {u}/v3/orders

  # Operations: is it ready (the store answers)? Then the Prometheus metrics of the above:
  # portico_requests_total, portico_request_duration_seconds, portico_auth_failures_total...
  curl -s {ops}/readyz
  curl -s {ops}/metrics

Hot reload: change the X-Demo value in {config}, save, then curl -i any line above.
Check an edited file without applying it: {shlex.quote(_portico_command())} check {config}
Stop with Ctrl-C.
"""


async def run_demo(workdir: Path, port: int) -> int:
    """Run the demo until SIGINT or SIGTERM; 0 on a clean stop, 1 if it could not start."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # Until the gateway installs its own handlers, a signal stops the demo from here.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    logging.getLogger("alembic").setLevel(logging.WARNING)

    if port == 0:
        port = _free_port()
    elif not _port_is_free(port):
        print(f"portico demo: port {port} on {HOST} is in use.", file=sys.stderr)
        print(f"Choose another one: {_portico_command()} demo --port {port + 1}", file=sys.stderr)
        return 1
    operations_port = (
        TEMPLATE_OPERATIONS_PORT if _port_is_free(TEMPLATE_OPERATIONS_PORT) else _free_port()
    )
    backends = await start_backends(HOST)
    try:
        key = generate_key()
        config_path = write_config(workdir, port, backends.ports, key, operations_port)
        return await _serve(config_path, port, backends, stop, key, operations_port)
    finally:
        await backends.close()


async def _serve(
    config_path: Path,
    port: int,
    backends: Backends,
    stop: asyncio.Event,
    key: NewApiKey,
    operations_port: int,
) -> int:
    loop = asyncio.get_running_loop()
    gateway = loop.create_task(serving.run(config_path))
    listening = loop.create_task(_wait_listening(HOST, port))
    stopped = loop.create_task(stop.wait())
    try:
        await asyncio.wait({gateway, listening, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not gateway.done() and listening.done():
            ops = f"http://{HOST}:{operations_port}"
            print(tour(f"http://{HOST}:{port}", config_path, backends, key, ops), flush=True)
            await asyncio.wait({gateway, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        listening.cancel()
        stopped.cancel()
        if not gateway.done():
            # Stopped before the gateway took over the signals: it has nothing in flight yet.
            gateway.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(gateway, listening, stopped, return_exceptions=True)
    if gateway.cancelled():
        return 0
    error = gateway.exception()
    if error is None:
        return gateway.result()
    if isinstance(error, ConfigError | StoreError):
        print(error, file=sys.stderr)
    elif isinstance(error, OSError):
        print(f"portico demo: cannot listen on {HOST}:{port}: {error.strerror}", file=sys.stderr)
    else:
        log.error("the gateway failed", exc_info=error)
    return 1


async def _wait_listening(host: str, port: int) -> None:
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    """Checked before starting, so a busy port gets a clear message instead of a half start."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it: shorter to read."""
    with contextlib.suppress(ValueError):
        return shlex.quote(str(path.relative_to(Path.cwd())))
    return shlex.quote(str(path))


def _portico_command() -> str:
    """How to run ``portico`` from the user's shell (it may not be on the PATH)."""
    script = Path(sys.executable).with_name("portico")
    if not script.exists():
        return "portico"
    with contextlib.suppress(ValueError):
        return str(script.relative_to(Path.cwd()))
    return str(script)
