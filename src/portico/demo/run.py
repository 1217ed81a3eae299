"""``portico demo``: the sample backends, the sample config and the gateway, in one process.

The first run writes the sample ``portico.yaml`` shipped in this package to the work directory
(``.demo``), with the ports actually used, the work directory's paths, and the keys and
certificates made for the demo's consumers (:mod:`portico.demo.credentials`). Later runs keep that
file as the user left it, edits included: the demo reads its ports from it, and prints the API key
it saved only while the config still declares that key, so every line it prints works. Delete the
file to start afresh.

The gateway runs through :func:`portico.serving.run`, the code path of ``portico serve``. Once it
answers, a short tour is printed: curl lines that work as printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import shlex
import signal
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from portico import serving
from portico.assembly import load_config
from portico.config.errors import ConfigError
from portico.config.model import Listen, PorticoConfig
from portico.demo.backends import DEFAULT_PORTS, App, Backends, start_backends
from portico.demo.credentials import (
    DemoCredentials,
    issue_credentials,
    saved_api_key,
    saved_webhook_secrets,
)
from portico.demo.receiver import Inbox, receiver_app
from portico.identity.apikeys import key_digest, key_id_of
from portico.store.database import StoreError

__all__ = [
    "DemoPorts",
    "render_config",
    "run_demo",
    "sample_config",
    "tour",
    "write_config",
]

HOST = "127.0.0.1"
TEMPLATE_GATEWAY_PORT = 8080
TEMPLATE_TLS_PORT = 8443
TEMPLATE_OPERATIONS_PORT = 9180
TEMPLATE_ADMIN_PORT = 9190
_ADMIN_TOKEN_FILE = Path("keys") / "admin-token.txt"
_ADDRESS = re.compile(r"\b127\.0\.0\.1:(\d+)\b")
# A value the demo fills in: the whole rest of a line, `key: ${DEMO_NAME}`, or a path in it.
_PLACEHOLDER = re.compile(r"\$\{(DEMO_[A-Z_]+)\}")
_WRITTEN_FROM = "# Written by `portico demo` from its sample "
# Which service target of the sample config each sample backend is.
_BACKEND_TARGETS: Mapping[str, tuple[str, int]] = {
    "orders-v1": ("orders-v1", 0),
    "orders-v2": ("orders-v2", 0),
    "crm-1": ("crm", 0),
    "crm-2": ("crm", 1),
}

log = logging.getLogger("portico.demo")


class DemoError(Exception):
    """The demo cannot start; the message says why and what to do, in a line or two."""


@dataclass(frozen=True, slots=True)
class DemoPorts:
    gateway: int = TEMPLATE_GATEWAY_PORT
    tls: int = TEMPLATE_TLS_PORT
    operations: int = TEMPLATE_OPERATIONS_PORT
    admin: int = TEMPLATE_ADMIN_PORT


def sample_config() -> str:
    """The sample config as shipped (also in ``examples/demo/portico.yaml``)."""
    return resources.files("portico.demo").joinpath("portico.yaml").read_text(encoding="utf-8")


def _sample_digest() -> str:
    return hashlib.sha256(sample_config().encode()).hexdigest()[:12]


def render_config(
    template: str,
    *,
    ports: DemoPorts,
    backend_ports: Mapping[str, int],
    workdir: Path,
    credentials: DemoCredentials,
) -> str:
    """The sample config with this run's ports, work directory and credentials filled in."""
    by_template = {
        str(TEMPLATE_GATEWAY_PORT): ports.gateway,
        str(TEMPLATE_TLS_PORT): ports.tls,
        str(TEMPLATE_OPERATIONS_PORT): ports.operations,
        str(TEMPLATE_ADMIN_PORT): ports.admin,
    }
    by_template.update({str(DEFAULT_PORTS[name]): port for name, port in backend_ports.items()})
    found: set[str] = set()

    def address(match: re.Match[str]) -> str:
        found.add(match.group(1))
        return f"{HOST}:{by_template.get(match.group(1), match.group(1))}"

    text = _ADDRESS.sub(address, template)
    key = credentials.api_key
    values = {
        "DEMO_DIR": str(workdir),
        "DEMO_SHOP_API_KEYS": f"[{{id: {key.id}, sha256: {key.sha256}}}]",
        # JSON is YAML: one line the reader can skip over.
        "DEMO_REPORTS_JWKS": json.dumps(credentials.reports_jwks, separators=(", ", ": ")),
        "DEMO_BILLING_PUBLIC_KEY": credentials.billing_public_key,
        "DEMO_WEBHOOK_SECRET": credentials.webhook_secret,
    }
    used: set[str] = set()
    lines = []
    for line in text.splitlines():
        match = _PLACEHOLDER.search(line)
        if match is None or line.lstrip().startswith("#"):
            lines.append(line)
            continue
        name = match.group(1)
        if name not in values:
            raise ValueError(f"the demo config names {name}, which the demo does not fill in")
        used.add(name)
        value = values[name]
        if "\n" in value.strip():
            # A PEM: a YAML block scalar, indented under its key.
            indent = " " * (len(line) - len(line.lstrip()) + 2)
            block = "\n".join(indent + part for part in value.strip().splitlines())
            lines.append(line[: match.start()] + "|\n" + block)
        else:
            lines.append(_PLACEHOLDER.sub(lambda m: values[m.group(1)], line))
    if set(by_template) - found or set(values) - used:
        raise ValueError("the demo config no longer has the values the demo fills in")
    return f"{_WRITTEN_FROM}{_sample_digest()}.\n" + "\n".join(lines) + "\n"


def write_config(
    workdir: Path,
    ports: DemoPorts,
    backend_ports: Mapping[str, int],
) -> tuple[Path, str]:
    """Write the sample config and the demo's credentials under ``workdir``.

    Returns the config's path and the API key declared in it for demo/shop.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    ignore = workdir / ".gitignore"
    if not ignore.exists():  # the demo's files are not for committing, wherever they are
        ignore.write_text("# Written by `portico demo`.\n*\n", encoding="utf-8")
    credentials = issue_credentials(workdir)
    text = render_config(
        sample_config(),
        ports=ports,
        backend_ports=backend_ports,
        workdir=workdir,
        credentials=credentials,
    )
    path = workdir / "portico.yaml"
    path.write_text(text, encoding="utf-8")
    # The OpenAPI document services.orders-v2.openapi names, beside the config (validation).
    document = resources.files("portico.demo").joinpath("orders-v2.openapi.yaml")
    (workdir / "orders-v2.openapi.yaml").write_text(document.read_text(encoding="utf-8"))
    return path, credentials.api_key.key


def tour(
    gateway_url: str,
    config_path: Path,
    backends: Backends,
    key: str | None,
    operations_url: str,
    https_url: str | None,
    admin: tuple[str, str] | None = None,
) -> str:
    """What to try, printed once the gateway answers. Every curl line works as printed."""
    u = gateway_url
    ops = operations_url
    new_order = '{"customer_id": "c-101", "items": [{"sku": "GR-BRASS", "quantity": 2}]}'
    config = _shown(config_path)
    workdir = config_path.parent
    addresses = ", ".join(f"{name} :{port}" for name, port in backends.ports.items())
    https = f"  https       {https_url}   (client certificates: docs/auth-mtls.md)\n"
    if key is not None:
        kept_in = _shown(workdir / "keys")
        with_key = f"""
  # A partner route needs credentials: this is demo/shop's API key (kept in {kept_in}).
  # The backend learns who called and how: see debug.portico_headers
  curl -s -H 'X-API-Key: {key}' {u}/partner/orders
"""
    else:
        with_key = f"""
  # A partner route needs credentials. Your {config} no longer declares the demo's key for
  # demo/shop; make one with: {_portico_command()} keys create --consumer demo/shop -c {config}
"""
    with_certificate = ""
    if https_url is not None:
        tls = workdir / "tls"
        files = (
            f"--cacert {_shown(tls / 'ca.pem')} --cert {_shown(tls / 'ledger.pem')} "
            f"--key {_shown(tls / 'ledger.key')}"
        )
        with_certificate = f"""
  # The same route over HTTPS with demo/ledger's client certificate (mTLS)
  curl -s {files} {https_url}/partner/orders
"""
    admin_line = with_admin = ""
    if admin is not None:
        admin_url, token = admin
        admin_line = f"  admin API   {admin_url}/admin/v1   (interactive docs: /admin/v1/docs)\n"
        kept = _shown(workdir / _ADMIN_TOKEN_FILE)
        with_admin = f"""
  # The admin API, with the admin token the demo made (kept in {kept}):
  # the consumers of the config; API keys, usage and the audit log: docs/admin-api.md
  curl -s -H 'Authorization: Bearer {token}' {admin_url}/admin/v1/consumers
"""
    with_webhooks = ""
    receiver = backends.ports.get("receiver")
    if receiver is not None:
        with_webhooks = f"""
  # Webhooks: demo/shop's endpoint gets the order.* events at the sample receiver, which checks
  # each signature (publish one: docs/webhooks.md; verify one: docs/receiving-webhooks.md).
  # What the receiver got, newest first (the order created above is there):
  curl -s http://{backends.host}:{receiver}/received
"""
    return f"""
Portico demo is running.

  gateway     {u}
{https if https_url is not None else ""}  operations  {ops}   (/healthz, /readyz, /metrics)
{admin_line.rstrip()}
  config      {config}   (edit it while the demo runs: it is reloaded)
  backends    {addresses}

Try it from another terminal:

  # Versions in the path: v1 writes money as a number, v2 as {{amount, currency}}
  curl -s {u}/v1/orders
  curl -s {u}/v1/orders/1001
  curl -s {u}/v2/orders/1001

  # Version in a header: the same path, sent to v2 when asked for
  curl -s -H 'X-Api-Version: 2' {u}/orders/1002

  # Create an order: 201 with a Location the gateway maps to /v1/orders/<id>; v2 sees it too,
  # and the event order.created goes out as a webhook (see the receiver's line below)
  curl -s -i -X POST {u}/v1/orders -H 'Content-Type: application/json' -d '{new_order}'

  # Your request id goes upstream and comes back (see the X-Request-ID header and "debug")
  curl -s -i -H 'X-Request-ID: my-trace-42' {u}/crm/customers/c-100

  # Two CRM instances take turns: run it twice and watch debug.served_by
  curl -s '{u}/crm/customers?email=ada@example.com'
{with_key}{with_certificate}
  # Portico's own errors are application/problem+json, here a 404 (no route for /v3)
  curl -s -i {u}/v3/orders

  # Operations: is it ready (the store answers)? Then the Prometheus metrics of the above:
  # portico_requests_total, portico_request_duration_seconds, portico_auth_failures_total...
  curl -s {ops}/readyz
  curl -s {ops}/metrics
{with_admin}{with_webhooks}
OAuth tokens, signed requests, external JWTs, mTLS and IP rules, each with the demo: docs/*.md.
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

    workdir, config_path, kept = _locate(workdir)
    try:
        if kept:
            config, key = _kept(config_path, port)
            _progress(_STARTING_BACKENDS)
            backends = await _start_backends(_backend_ports(config), config_path, workdir)
        else:
            ports = _fresh_ports(port)
            _progress(_STARTING_BACKENDS)
            backends = await start_backends(HOST, extra=_receiver(workdir))
            try:
                config_path, key = write_config(workdir, ports, backends.ports)
            except BaseException:
                await backends.close()
                raise
            print(
                f"Wrote the sample config to {_shown(config_path)}, and keys and certificates "
                f"for its consumers under {_shown(workdir)}; later runs keep your edits.",
                flush=True,
            )
            config = load_config(config_path)
    except DemoError as error:
        print(f"portico demo: {error}", file=sys.stderr)
        return 1
    listen = config.gateway.listen
    _progress(
        f"starting the gateway on {_host(listen.host)}:{listen.port} (a first start also creates "
        "its database)"
    )
    try:
        return await _serve(config_path, config, backends, stop, key)
    finally:
        await backends.close()


_STARTING_BACKENDS = (
    "starting the sample backends (orders v1 and v2, two CRM instances, a webhook receiver)"
)


def _receiver(workdir: Path) -> dict[str, App]:
    """The webhook receiver, verifying with the secret the demo made for ``workdir`` (read when a
    message comes: a first run writes it after the backends have started)."""
    return {"receiver": receiver_app("receiver", Inbox(lambda: saved_webhook_secrets(workdir)))}


def _progress(step: str) -> None:
    """Say what the demo is doing before a step that may take seconds (issue 9: a first start
    is never silent for long)."""
    print(f"portico demo: {step}", flush=True)


def _locate(workdir: Path) -> tuple[Path, Path, bool]:
    """The work directory, its config file, and whether a previous run left that file."""
    workdir = workdir.resolve()
    config_path = workdir / "portico.yaml"
    return workdir, config_path, config_path.exists()


def _kept(config_path: Path, port: int) -> tuple[PorticoConfig, str | None]:
    """The config a previous run wrote (and the user may have edited), and the key to print."""
    shown = _shown(config_path)
    try:
        config = load_config(config_path)
    except ConfigError as error:
        raise DemoError(
            f"{error}\nFix {shown}, or delete it to start from the sample config."
        ) from None
    text = config_path.read_text(encoding="utf-8")
    print(f"Using {shown} from an earlier run, with your edits (delete it to start afresh).")
    if f"{_WRITTEN_FROM}{_sample_digest()}." not in text:
        print(
            f"Note: {shown} was written from an older sample than this Portico's; the guides in "
            "docs/ expect the new one. Delete the file to get it.",
            flush=True,
        )
    if port != config.gateway.listen.port:
        print(f"Note: the gateway listens on :{config.gateway.listen.port} as {shown} says.")
    busy = [
        f"{listen.host}:{listen.port} ({what})"
        for what, listen in _listeners(config)
        if not _port_is_free(listen.port, listen.host)
    ]
    if busy:
        raise DemoError(
            f"{', '.join(busy)} in use (another demo or portico serve?). Stop it, or change the "
            f"port in {shown}."
        )
    return config, _declared_key(config_path.parent, config)


def _listeners(config: PorticoConfig) -> list[tuple[str, Listen]]:
    listeners: list[tuple[str, Listen]] = [("gateway.listen", config.gateway.listen)]
    if config.gateway.tls is not None:
        listeners.append(("gateway.tls.listen", config.gateway.tls.listen))
    if config.operations.enabled:
        listeners.append(("operations.listen", config.operations.listen))
    if config.admin is not None and config.admin.enabled:
        listeners.append(("admin.listen", config.admin.listen))
    return listeners


def _declared_key(workdir: Path, config: PorticoConfig) -> str | None:
    """The saved API key of demo/shop, if the config still declares it: else it would get 401."""
    key = saved_api_key(workdir)
    tenant = config.tenants.get("demo")
    shop = tenant.consumers.get("shop") if tenant is not None else None
    if key is None or shop is None:
        return None
    declared = {(ref.id, ref.sha256) for ref in shop.api_keys}
    return key if (key_id_of(key), key_digest(key)) in declared else None


def _fresh_ports(port: int) -> DemoPorts:
    """The sample's ports, but another free one where a port other than the gateway's is busy."""
    if port == 0:
        port = _free_port()
    elif not _port_is_free(port):
        raise DemoError(
            f"port {port} on {HOST} is in use.\n"
            f"Choose another one: {_portico_command()} demo --port {port + 1}"
        )
    tls = TEMPLATE_TLS_PORT if _port_is_free(TEMPLATE_TLS_PORT) else _free_port()
    operations = (
        TEMPLATE_OPERATIONS_PORT if _port_is_free(TEMPLATE_OPERATIONS_PORT) else _free_port()
    )
    admin = TEMPLATE_ADMIN_PORT if _port_is_free(TEMPLATE_ADMIN_PORT) else _free_port()
    return DemoPorts(port, tls, operations, admin)


def _backend_ports(config: PorticoConfig) -> dict[str, int]:
    """Where the kept config expects each sample backend (the sample's port if it moved away)."""
    ports = dict(DEFAULT_PORTS)
    for name, (service_name, index) in _BACKEND_TARGETS.items():
        service = config.services.get(service_name)
        if service is None or index >= len(service.targets):
            continue
        found = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/?", service.targets[index].url)
        if found is not None:
            ports[name] = int(found.group(1))
    # The receiver is where the config's webhook endpoints point.
    for endpoint in (config.events.endpoints if config.events is not None else {}).values():
        found = re.match(r"http://127\.0\.0\.1:(\d+)/webhooks/", endpoint.url)
        if found is not None:
            ports["receiver"] = int(found.group(1))
            break
    return ports


async def _start_backends(ports: Mapping[str, int], config_path: Path, workdir: Path) -> Backends:
    try:
        return await start_backends(HOST, ports, fallback=False, extra=_receiver(workdir))
    except OSError as error:
        raise DemoError(
            f"a sample backend cannot listen: {error.strerror or error} "
            f"(ports {', '.join(str(port) for port in ports.values())}). Stop what uses it, "
            f"or delete {_shown(config_path)} to let the demo choose free ports."
        ) from None


async def _serve(
    config_path: Path,
    config: PorticoConfig,
    backends: Backends,
    stop: asyncio.Event,
    key: str | None,
) -> int:
    loop = asyncio.get_running_loop()
    listen = config.gateway.listen
    try:
        admin = _admin(config, config_path.parent)
    except StoreError as refused:
        print(refused, file=sys.stderr)
        return 1
    gateway = loop.create_task(serving.run(config_path))
    listening = loop.create_task(_wait_listening(listen.host, listen.port))
    stopped = loop.create_task(stop.wait())
    try:
        await asyncio.wait({gateway, listening, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not gateway.done() and listening.done():
            ops = config.operations.listen
            tls = config.gateway.tls
            https = None if tls is None else f"https://{_host(tls.listen.host)}:{tls.listen.port}"
            text = tour(
                f"http://{_host(listen.host)}:{listen.port}",
                config_path,
                backends,
                key,
                f"http://{_host(ops.host)}:{ops.port}",
                https,
                admin,
            )
            print(text, flush=True)
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
        print(f"portico demo: cannot listen: {error.strerror or error}", file=sys.stderr)
    else:
        log.error("the gateway failed", exc_info=error)
    return 1


def _admin(config: PorticoConfig, workdir: Path) -> tuple[str, str] | None:
    """The admin API's URL and an admin token for it, when the config serves it: the one saved
    by an earlier run while it still works, else a new one (role admin), saved beside the
    demo's other keys."""
    settings = config.admin
    if settings is None or not settings.enabled:
        return None
    from datetime import UTC, datetime

    from portico.admin.roles import Role
    from portico.admin.tokens import AdminTokens, generate_token
    from portico.store.database import Database
    from portico.store.migrate import ensure_current

    url = f"http://{_host(settings.listen.host)}:{settings.listen.port}"
    path = workdir / _ADMIN_TOKEN_FILE
    saved = path.read_text(encoding="utf-8").strip() if path.exists() else None
    ensure_current(config.database.url)
    with Database(config.database.url) as database:
        tokens = AdminTokens(database)
        if saved is not None and tokens.verify(saved, datetime.now(UTC)) is not None:
            return url, saved
        new = generate_token()
        tokens.add(new, Role.ADMIN, description="portico demo", created_by="portico demo")
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(new.token + "\n")
    return url, new.token


def _host(host: str) -> str:
    """A host as it goes in a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


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


def _port_is_free(port: int, host: str = HOST) -> bool:
    """Checked before starting, so a busy port gets a clear message instead of a half start."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
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
