"""Sample backends for ``portico demo``: an orders service (in two versions) and a CRM.

They are small HTTP/1.1 servers on asyncio and httptools, with keep-alive (the gateway pools its
upstream connections) and sample data in memory. Every JSON answer carries a ``debug`` object with
what the backend received from the gateway: the path after rewriting, the request ID, the
``X-Forwarded-For`` chain and every ``X-Portico-*`` identity field, so a user sees the gateway at
work.

``orders`` v1 writes money as a number; v2 writes it as ``{amount, currency}`` and nests the
customer. Both versions serve the same order book, so an order created through one is visible
through the other.

Run ``python -m portico.demo.backends`` to start them alone on their default ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, unquote

import httptools

__all__ = [
    "DEFAULT_PORTS",
    "Backend",
    "Backends",
    "CustomerDirectory",
    "OrderBook",
    "Request",
    "Response",
    "crm_app",
    "orders_app",
    "start_backends",
]

DEFAULT_PORTS: Mapping[str, int] = {
    "orders-v1": 9101,
    "orders-v2": 9102,
    "crm-1": 9201,
    "crm-2": 9202,
    "receiver": 9301,
}
"""Where each backend listens when the port is free (the ports written in the sample config)."""

CURRENCY = "EUR"

log = logging.getLogger("portico.demo")


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-cased names; a repeated field keeps its first value, except X-Forwarded-For."""
    body: bytes
    fields: tuple[tuple[str, str], ...] = ()
    """Every field as received, in order, with lower-cased names (repeats kept)."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"


App = Callable[[Request], Response]


def json_response(status: int, data: Mapping[str, Any], *headers: tuple[str, str]) -> Response:
    body = json.dumps(data, indent=2, ensure_ascii=False).encode() + b"\n"
    return Response(status, body, headers)


def problem(status: int, detail: str) -> Response:
    """An RFC 9457 problem, as a well-behaved backend answers its errors."""
    title = http.HTTPStatus(status).phrase
    data = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    body = json.dumps(data, indent=2).encode() + b"\n"
    return Response(status, body, content_type="application/problem+json")


def debug_info(name: str, request: Request) -> dict[str, Any]:
    return {
        "served_by": name,
        "path": request.path,
        "request_id": request.headers.get("x-request-id"),
        "x_forwarded_for": request.headers.get("x-forwarded-for"),
        # The trace context Portico sent on (docs/tracing.md).
        "traceparent": request.headers.get("traceparent"),
        # Every X-Portico-* field received: the identity Portico vouches for (docs/identity.md).
        "portico_headers": {
            _display_name(header): value
            for header, value in sorted(request.headers.items())
            if header.startswith("x-portico-")
        },
    }


def _display_name(header: str) -> str:
    """``x-portico-auth-method`` as the guides write it: ``X-Portico-Auth-Method``."""
    return "-".join(part.capitalize() for part in header.split("-"))


# -- orders ----------------------------------------------------------------------------------------

CATALOGUE: Mapping[str, tuple[str, int]] = {
    "BK-ENGINE": ("Analytical Engine manual", 4990),
    "GR-BRASS": ("Brass gear set", 1250),
    "PC-CARDS": ("Punched cards, box of 500", 899),
}
"""SKU -> (name, unit price in cents)."""


@dataclass(slots=True)
class Line:
    sku: str
    quantity: int

    @property
    def name(self) -> str:
        return CATALOGUE[self.sku][0]

    @property
    def unit_price(self) -> int:
        return CATALOGUE[self.sku][1]


@dataclass(slots=True)
class Order:
    id: str
    customer_id: str
    status: str
    created_at: str
    lines: list[Line]

    @property
    def total(self) -> int:
        return sum(line.unit_price * line.quantity for line in self.lines)


@dataclass(slots=True)
class OrderBook:
    """The orders both versions of the service read and write."""

    orders: dict[str, Order] = field(default_factory=dict)

    @classmethod
    def sample(cls) -> OrderBook:
        book = cls()
        for order in (
            Order("1001", "c-100", "shipped", "2026-03-02T09:14:00Z", [Line("BK-ENGINE", 1)]),
            Order(
                "1002",
                "c-101",
                "processing",
                "2026-03-04T16:40:00Z",
                [Line("GR-BRASS", 2), Line("PC-CARDS", 1)],
            ),
            Order("1003", "c-100", "delivered", "2026-02-11T11:02:00Z", [Line("PC-CARDS", 3)]),
        ):
            book.orders[order.id] = order
        return book

    def add(self, customer_id: str, lines: list[Line]) -> Order:
        number = max((int(key) for key in self.orders), default=1000) + 1
        order = Order(str(number), customer_id, "received", "2026-03-05T10:00:00Z", lines)
        self.orders[order.id] = order
        return order


def _money_v1(cents: int) -> float:
    return cents / 100


def _money_v2(cents: int) -> dict[str, str]:
    return {"amount": f"{cents // 100}.{cents % 100:02d}", "currency": CURRENCY}


def order_v1(order: Order) -> dict[str, Any]:
    return {
        "id": order.id,
        "customer_id": order.customer_id,
        "status": order.status,
        "created_at": order.created_at,
        "items": [
            {
                "sku": line.sku,
                "name": line.name,
                "quantity": line.quantity,
                "unit_price": _money_v1(line.unit_price),
            }
            for line in order.lines
        ],
        "total": _money_v1(order.total),
        "currency": CURRENCY,
    }


def order_v2(order: Order) -> dict[str, Any]:
    return {
        "id": order.id,
        "status": order.status,
        "created_at": order.created_at,
        "customer": {"id": order.customer_id},
        "lines": [
            {
                "product": {"sku": line.sku, "name": line.name},
                "quantity": line.quantity,
                "unit_price": _money_v2(line.unit_price),
            }
            for line in order.lines
        ],
        "total": _money_v2(order.total),
    }


def _parse_new_order(body: bytes) -> tuple[str, list[Line]] | str:
    """The customer and lines of a new order, or what is wrong with the body."""
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        return "the body is not valid JSON"
    if not isinstance(data, dict):
        return 'expected a JSON object: {"customer_id": "c-100", "items": [...]}'
    customer_id = data.get("customer_id")
    if not isinstance(customer_id, str) or not customer_id:
        return "customer_id must be a non-empty string"
    items = data.get("items")
    if not isinstance(items, list) or not items:
        return 'items must be a non-empty list of {"sku": ..., "quantity": ...}'
    lines = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            return f'items[{i}] must be an object: {{"sku": "GR-BRASS", "quantity": 2}}'
        sku, quantity = item.get("sku"), item.get("quantity", 1)
        if not isinstance(sku, str) or sku not in CATALOGUE:
            return f"items[{i}].sku must be one of {', '.join(CATALOGUE)}"
        if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= 99:
            return f"items[{i}].quantity must be a whole number from 1 to 99"
        lines.append(Line(sku, quantity))
    return customer_id, lines


def orders_app(name: str, book: OrderBook, version: int) -> App:
    """``GET /orders``, ``GET /orders/{id}``, ``POST /orders`` and ``GET /health``."""
    shape = order_v2 if version == 2 else order_v1

    def listing(orders: list[dict[str, Any]], debug: dict[str, Any]) -> dict[str, Any]:
        if version == 2:
            return {"data": orders, "meta": {"count": len(orders)}, "debug": debug}
        return {"orders": orders, "count": len(orders), "debug": debug}

    def app(request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        if path == "/health":
            return health(name, request)
        debug = debug_info(name, request)
        if path == "/orders":
            if request.method in ("GET", "HEAD"):
                customer = request.query.get("customer_id")
                orders = [
                    shape(order)
                    for order in book.orders.values()
                    if customer is None or order.customer_id == customer
                ]
                return json_response(200, listing(orders, debug))
            if request.method == "POST":
                parsed = _parse_new_order(request.body)
                if isinstance(parsed, str):
                    return problem(422, parsed)
                order = book.add(*parsed)
                location = ("Location", f"/orders/{order.id}")
                return json_response(201, {**shape(order), "debug": debug}, location)
            return method_not_allowed("GET, HEAD, POST")
        if (match := _ORDER_PATH.fullmatch(path)) is not None:
            if request.method not in ("GET", "HEAD"):
                return method_not_allowed("GET, HEAD")
            found = book.orders.get(match.group(1))
            if found is None:
                return problem(404, f"there is no order {match.group(1)!r}")
            return json_response(200, {**shape(found), "debug": debug})
        return problem(404, f"{name} has no resource at {request.path}")

    return app


_ORDER_PATH = re.compile(r"/orders/([^/]+)")


# -- crm -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    name: str
    email: str
    company: str
    tier: str

    def as_json(self) -> dict[str, str]:
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "company": self.company,
            "tier": self.tier,
        }


@dataclass(frozen=True, slots=True)
class CustomerDirectory:
    customers: Mapping[str, Customer]

    @classmethod
    def sample(cls) -> CustomerDirectory:
        people = (
            Customer("c-100", "Ada Lovelace", "ada@example.com", "Analytical Engines Ltd", "gold"),
            Customer("c-101", "Grace Hopper", "grace@example.com", "Compiler Works", "silver"),
            Customer("c-102", "Alan Turing", "alan@example.com", "Bletchley Systems", "silver"),
        )
        return cls({person.id: person for person in people})


_CUSTOMER_PATH = re.compile(r"/customers/([^/]+)")


def crm_app(name: str, directory: CustomerDirectory) -> App:
    """``GET /customers/{id}``, ``GET /customers?email=`` and ``GET /health``."""

    def app(request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        if path == "/health":
            return health(name, request)
        if request.method not in ("GET", "HEAD"):
            return method_not_allowed("GET, HEAD")
        debug = debug_info(name, request)
        if path == "/customers":
            email = request.query.get("email")
            found = [
                customer.as_json()
                for customer in directory.customers.values()
                if email is None or customer.email.lower() == email.lower()
            ]
            return json_response(200, {"customers": found, "debug": debug})
        if (match := _CUSTOMER_PATH.fullmatch(path)) is not None:
            customer = directory.customers.get(match.group(1))
            if customer is None:
                return problem(404, f"there is no customer {match.group(1)!r}")
            return json_response(200, {**customer.as_json(), "debug": debug})
        return problem(404, f"{name} has no resource at {request.path}")

    return app


def health(name: str, request: Request) -> Response:
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed("GET, HEAD")
    return json_response(200, {"status": "ok", "service": name})


def method_not_allowed(allow: str) -> Response:
    response = problem(405, f"allowed methods: {allow}")
    return Response(response.status, response.body, (("Allow", allow),), response.content_type)


# -- HTTP/1.1 server -------------------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One client connection: parse requests with httptools, answer each in order."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._fields: list[tuple[str, str]] = []
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not subclass asyncio.Transport, hence the cast).
        self._transport = cast(asyncio.Transport, transport)
        self._backend.connections.add(self._transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._backend.connections.discard(self._transport)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._close()
        except httptools.HttpParserError:
            self._write(problem(400, "malformed HTTP request"), keep_alive=False, head=False)
            self._close()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._fields = []
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._fields.append((key, text))
        previous = self._headers.get(key)
        if previous is None:
            self._headers[key] = text
        elif key == "x-forwarded-for":  # a list: each proxy appends to it
            self._headers[key] = f"{previous}, {text}"

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        raw_path, _, raw_query = self._url.decode("latin-1").partition("?")
        method = self._parser.get_method().decode("ascii")
        request = Request(
            method=method,
            path=unquote(raw_path),
            query=dict(parse_qsl(raw_query)),
            headers=self._headers,
            body=b"".join(self._body),
            fields=tuple(self._fields),
        )
        try:
            response = self._backend.app(request)
        except Exception:  # a bug in a sample must not take the connection down silently
            self._backend.log_error(request)
            response = problem(500, "the sample backend failed")
        keep_alive = self._parser.should_keep_alive()
        self._write(response, keep_alive=keep_alive, head=method == "HEAD")
        if not keep_alive:
            self._close()

    def _write(self, response: Response, *, keep_alive: bool, head: bool) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        status = http.HTTPStatus(response.status)
        lines = [
            f"HTTP/1.1 {status.value} {status.phrase}\r\n",
            f"content-type: {response.content_type}\r\n",
            f"content-length: {len(response.body)}\r\n",
        ]
        lines.extend(f"{name}: {value}\r\n" for name, value in response.headers)
        if not keep_alive:
            lines.append("connection: close\r\n")
        lines.append("\r\n")
        head_bytes = "".join(lines).encode("latin-1")
        self._transport.write(head_bytes if head else head_bytes + response.body)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class Backend:
    """One sample service listening on one port."""

    def __init__(self, name: str, app: App) -> None:
        self.name = name
        self.app = app
        self.connections: set[asyncio.Transport] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def log_error(self, request: Request) -> None:
        log.exception("%s failed on %s %s", self.name, request.method, request.path)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for transport in list(self.connections):
            transport.close()
        await self._server.wait_closed()


@dataclass(frozen=True, slots=True)
class Backends:
    """The running sample services, by name (``orders-v1``, ``orders-v2``, ``crm-1``, ``crm-2``)."""

    host: str
    services: Mapping[str, Backend]

    @property
    def ports(self) -> dict[str, int]:
        return {name: backend.port for name, backend in self.services.items()}

    async def close(self) -> None:
        await asyncio.gather(*(backend.close() for backend in self.services.values()))


async def start_backends(
    host: str = "127.0.0.1",
    ports: Mapping[str, int] = DEFAULT_PORTS,
    *,
    fallback: bool = True,
    extra: Mapping[str, App] | None = None,
) -> Backends:
    """Start every sample service on its port in ``ports``; if that one is taken, on any port
    (``fallback``) or not at all (``OSError``: a config already names the port). ``extra``: more
    services by name (the webhook receiver, :mod:`portico.demo.receiver`)."""
    book = OrderBook.sample()
    directory = CustomerDirectory.sample()
    apps: dict[str, App] = {
        "orders-v1": orders_app("orders-v1", book, version=1),
        "orders-v2": orders_app("orders-v2", book, version=2),
        "crm-1": crm_app("crm-1", directory),
        "crm-2": crm_app("crm-2", directory),
        **(extra or {}),
    }
    started: dict[str, Backend] = {}
    try:
        for name, app in apps.items():
            backend = Backend(name, app)
            try:
                await backend.start(host, ports.get(name, 0))
            except OSError:
                if not fallback:
                    raise
                await backend.start(host, 0)
            started[name] = backend
    except BaseException:
        await Backends(host, started).close()
        raise
    return Backends(host, started)


async def _serve_forever() -> None:
    backends = await start_backends()
    for name, port in backends.ports.items():
        print(f"{name} on http://{backends.host}:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await backends.close()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever())
