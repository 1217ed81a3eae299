"""Differential conformance against nginx: Portico must forward no more than nginx does.

nginx (the reference reverse proxy) and Portico run the same configuration in front of the same
logging upstream: an API key on ``GET /partner/orders`` (nginx: on everything under
``/partner/``), the same key on every path for the host ``admin.local``, and a public catch-all.
Each case sends the same raw bytes to both, over a fresh connection, and records an
:class:`Outcome`: the response status (``None`` when the connection closed without one) and what
reached the upstream.

The rule: when nginx refused a request (nothing reached the upstream), Portico must not forward
it either, unless the case is in :data:`KNOWN_DIFFERENCES` with the reason. Portico may refuse
more than nginx. Independently of nginx, every case states Portico's own expected outcome; a
failure reports both checks, so one never hides the other.

Portico keeps its upstream connections alive (this nginx does not), so after each case a plain
request through Portico checks that the upstream still reads requests where they begin: bytes
left behind would be smuggled into the next request and garble the next case.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from tests.support.gateway import RawConnection, RawResponse, RunningGateway, route, running_gateway
from tests.support.nginx import HttpBody, Nginx, require_nginx
from tests.support.upstreams import Received, Upstream

from portico.identity.apikeys import generate_key

require_nginx()

KEY = generate_key()
KEY_FIELD = f"X-API-Key: {KEY.key}"
"""The field the ``api_key`` method reads by default; nginx checks the same one."""
CONSUMER = "t/partner"
PUBLIC = "public.example"
ADMIN = "admin.local"
SOCKET_TIMEOUT = 5.0
SETTLE_QUIET = 0.1
"""An outcome is complete once the upstream logged nothing new for this long..."""
SETTLE_LIMIT = 1.0
"""...or this long after the response, whichever comes first."""
PROBE_PATH = "/conformance-probe"
PROBE = f"GET {PROBE_PATH} HTTP/1.1\r\nHost: {PUBLIC}\r\n\r\n".encode()
"""Sent through Portico after each case: see :func:`probe_upstream_connection`."""

KNOWN_DIFFERENCES: dict[str, str] = {}
"""Case id -> why Portico may forward a request nginx refused. Empty: every request this nginx
refuses is one Portico's own expectation refuses too."""


# -- the two proxies -------------------------------------------------------------------------


def nginx_http_body(upstream: Upstream) -> HttpBody:
    """nginx's side of the reference configuration; otherwise nginx's defaults (among them
    ``underscores_in_headers off`` and ``merge_slashes on``), and no upstream keep-alive."""
    up = f"http://127.0.0.1:{upstream.port}"
    guarded = f"""if ($http_x_api_key != "{KEY.key}") {{ return 401; }}
            proxy_pass {up};"""

    def body(port: int) -> str:
        return f"""\
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    server {{
        listen 127.0.0.1:{port} default_server;
        server_name {PUBLIC};
        location / {{
            proxy_pass {up};
        }}
        location /partner/ {{
            {guarded}
        }}
        location = /partner/orders {{
            {guarded}
        }}
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name {ADMIN};
        location / {{
            {guarded}
        }}
    }}"""

    return body


def portico_config(upstream: Upstream) -> dict[str, Any]:
    auth = [{"type": "auth", "methods": ["api_key"]}]
    tenant, consumer = CONSUMER.split("/")
    keys = [{"id": KEY.id, "sha256": KEY.sha256}]
    return {
        "services": {"main": {"targets": [upstream.url], "retries": 0}},
        "tenants": {tenant: {"consumers": {consumer: {"api_keys": keys}}}},
        "routes": [
            route("partner", "/partner/orders", methods=["GET"], policies=auth),
            route("admin", "/{rest:path}", hosts=[ADMIN], policies=auth),
            route("public", "/{rest:path}"),
        ],
    }


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream("conformance")
    yield server
    server.close()


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[Nginx]:
    with Nginx(tmp_path_factory.mktemp("nginx"), nginx_http_body(upstream)) as server:
        yield server


@pytest.fixture(scope="module")
def portico(
    tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("portico"), portico_config(upstream)) as gateway:
        yield gateway


# -- outcomes --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one proxy did with one request."""

    status: int | None
    """The response status; ``None`` if the connection closed (or timed out) without one."""
    reached: tuple[Received, ...]
    """What the upstream received meanwhile."""
    response: RawResponse | None = field(default=None, compare=False, repr=False)
    elapsed: float = field(default=0.0, compare=False)
    """Seconds from sending the request to the end of the response."""
    closed: bool | None = field(default=None, compare=False)
    """Whether the proxy closed the connection after the response (when asked to check)."""
    out_of_step: str | None = field(default=None, compare=False)
    """What showed that the proxy's upstream connection was left out of step (when probed)."""

    @property
    def refused(self) -> bool:
        return not self.reached

    def summary(self) -> str:
        status = "no response" if self.status is None else str(self.status)
        if self.refused:
            return f"{status}, nothing forwarded"
        return f"{status}, forwarded {[f'{r.method} {r.target}' for r in self.reached]}"


def send(
    port: int,
    request: bytes,
    upstream: Upstream,
    *,
    head_only: bool,
    check_closed: bool = False,
    probe: bool = False,
) -> Outcome:
    """Send ``request`` on a new connection; the answer and what reached ``upstream``.

    ``probe`` sends :data:`PROBE` afterwards, for a proxy that keeps upstream connections open.
    """
    upstream.received.clear()
    in_flight = upstream.in_flight
    started = time.monotonic()
    with RawConnection(port, timeout=SOCKET_TIMEOUT) as conn:
        # A proxy may answer and close before it has read everything: what it answered matters.
        with contextlib.suppress(OSError):
            conn.send(request)
        response = read_response(conn, head_only=head_only)
        elapsed = time.monotonic() - started
        closed = conn.is_closed(timeout=3) if check_closed and response is not None else None
    reached = settle(upstream, in_flight)
    return Outcome(
        status=response.status if response is not None else None,
        reached=reached,
        response=response,
        elapsed=elapsed,
        closed=closed,
        out_of_step=probe_upstream_connection(port, upstream) if probe else None,
    )


def settle(upstream: Upstream, in_flight: int) -> tuple[Received, ...]:
    """What the upstream logged, once it stopped logging (a proxy may forward after answering).

    A request that was forwarded and answered is logged already: only a refusal (or an answer
    sent before the upstream finished reading) waits for the upstream to stay quiet."""
    deadline = time.monotonic() + SETTLE_LIMIT
    seen = len(upstream.received)
    quiet_since = time.monotonic()
    while not (seen and upstream.in_flight <= in_flight) and time.monotonic() < deadline:
        time.sleep(0.02)
        count = len(upstream.received)
        if count != seen:
            seen, quiet_since = count, time.monotonic()
        elif upstream.in_flight <= in_flight and time.monotonic() - quiet_since >= SETTLE_QUIET:
            break
    return tuple(upstream.received)


def probe_upstream_connection(port: int, upstream: Upstream) -> str | None:
    """What is wrong with a :data:`PROBE` sent next, if anything.

    Bytes a proxy leaves on a kept-alive upstream connection (a body sent without the framing
    that announces it) are read by the upstream as the start of the next request: that is
    request smuggling, and it would also garble the outcome of whichever case comes next."""
    upstream.received.clear()
    with RawConnection(port, timeout=SOCKET_TIMEOUT) as conn:
        conn.send(PROBE)
        response = read_response(conn, head_only=False)
    status = response.status if response is not None else None
    seen = [f"{r.method} {r.target}" for r in upstream.received]
    if status == 200 and seen == [f"GET {PROBE_PATH}"]:
        return None
    return f"a GET {PROBE_PATH} sent next got {status} and the upstream read {seen}"


def read_response(conn: RawConnection, *, head_only: bool) -> RawResponse | None:
    """The final response, or ``None`` if none came; a broken body keeps the status."""
    try:
        status, reason, headers, _ = conn.read_head()
        while 100 <= status < 200 and status != 101:
            status, reason, headers, _ = conn.read_head()
    except (OSError, ValueError):  # closed, reset, timed out or not HTTP
        return None
    response = RawResponse(status, reason, headers, b"")
    if not head_only and status not in (101, 204, 304):
        with contextlib.suppress(OSError, ValueError):
            response.body = read_body(conn, response)
    return response


def read_body(conn: RawConnection, response: RawResponse) -> bytes:
    rfile = conn.rfile
    if "chunked" in (response.header("transfer-encoding") or "").lower():
        out = bytearray()
        while size := int(rfile.readline(1024).split(b";", 1)[0].strip(), 16):
            out += rfile.read(size)
            rfile.readline(16)
        while rfile.readline(65536) not in (b"\r\n", b"\n", b""):
            pass
        return bytes(out)
    length = response.header("content-length")
    return rfile.read(int(length)) if length is not None else rfile.read()


# -- cases -----------------------------------------------------------------------------------

Expectation = Callable[[Outcome], str | None]
"""Portico's own expected outcome for a case: what is wrong with ``outcome``, or ``None``."""


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    request: bytes
    expect: Expectation | None
    """Portico's own expected outcome; ``None`` when only the comparison with nginx applies."""
    check_closed: bool = False

    @property
    def head_only(self) -> bool:
        return self.request.startswith(b"HEAD ")


def request(
    method: str,
    target: str,
    *fields: str,
    host: str | None = PUBLIC,
    version: str = "HTTP/1.1",
    body: bytes = b"",
) -> bytes:
    """Exact request bytes: the request line, ``Host`` (unless ``None``), ``fields``, ``body``."""
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines.extend(fields)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def refused(*statuses: int) -> Expectation:
    def expect(outcome: Outcome) -> str | None:
        if outcome.status in statuses and outcome.refused:
            return None
        return f"expected {' or '.join(map(str, statuses))} with nothing forwarded"

    return expect


def forwarded(path: str) -> Expectation:
    def expect(outcome: Outcome) -> str | None:
        if outcome.status == 200 and [r.path for r in outcome.reached] == [path]:
            return None
        return f"expected 200 with {path} forwarded"

    return expect


def forwarded_for_partner(outcome: Outcome) -> str | None:
    """Forwarded by the ``partner`` route: the upstream is told who called."""
    consumers = [r.header("x-portico-consumer") for r in outcome.reached]
    if outcome.status == 200 and consumers == [CONSUMER]:
        return None
    return f"expected 200, forwarded once as {CONSUMER}; the upstream was told {consumers}"


def method_refused(outcome: Outcome) -> str | None:
    if not outcome.refused or outcome.status not in (401, 405):
        return "expected 405 or 401 with nothing forwarded"
    allow = outcome.response.header("allow") if outcome.response else None
    if outcome.status == 405 and "GET" not in {m.strip() for m in (allow or "").split(",")}:
        return f"expected a 405 to allow GET, got Allow: {allow!r}"
    return None


def fields_of(received: Received, name: str) -> list[str]:
    return [value for key, value in received.headers if key.lower() == name]


def no_identity_fields(outcome: Outcome) -> str | None:
    if outcome.status != 200 or len(outcome.reached) != 1:
        return "expected 200 with the request forwarded once"
    (received,) = outcome.reached
    names = [name for name, _ in received.headers]
    identity = [n for n in names if n.lower().replace("_", "-").startswith("x-portico-")]
    underscored = [n for n in names if "_" in n]
    forwarded_for = fields_of(received, "x-forwarded-for")
    if identity or underscored:
        return f"fields forwarded: {sorted({*identity, *underscored})}"
    if forwarded_for != ["127.0.0.1"]:
        return f"expected x-forwarded-for 127.0.0.1 alone, forwarded {forwarded_for}"
    return None


def connection_listed_fields_kept(outcome: Outcome) -> str | None:
    if outcome.status != 200 or len(outcome.reached) != 1:
        return "expected 200 with the request forwarded once"
    (received,) = outcome.reached
    for name in ("x-forwarded-for", "x-request-id", "traceparent"):
        if len(values := fields_of(received, name)) != 1:
            return f"expected one {name} forwarded, got {values}"
    if received.body_length != 5:
        return f"expected the 5-byte body forwarded, the upstream read {received.body_length}"
    return None


def upgrade_not_forwarded(outcome: Outcome) -> str | None:
    if outcome.status is None:
        return "expected a response"
    if upgrade := [v for r in outcome.reached for v in fields_of(r, "upgrade")]:
        return f"expected no upgrade forwarded, forwarded {upgrade}"
    if not outcome.closed:
        return "expected the connection closed after the response"
    return None


CHUNKED_HELLO = b"5\r\nhello\r\n0\r\n\r\n"
NO_KEY_401 = refused(401, 400)
BAD_REQUEST = refused(400)

PATH_CASES = [
    Case("path-encoded-letter", request("GET", "/partner/%6frders"), NO_KEY_401),
    Case("path-encoded-first-letter", request("GET", "/%70artner/orders"), NO_KEY_401),
    Case("path-trailing-slash", request("GET", "/partner/orders/"), NO_KEY_401),
    Case("path-double-slash", request("GET", "/partner//orders"), NO_KEY_401),
    Case("path-dot-segment", request("GET", "/partner/./orders"), NO_KEY_401),
    Case("path-dot-dot-segment", request("GET", "/x/../partner/orders"), NO_KEY_401),
    Case("path-dot-dot-encoded-slash", request("GET", "/x/..%2fpartner/orders"), NO_KEY_401),
    Case("path-encoded-dot-dot", request("GET", "/x/%2e%2e/partner/orders"), NO_KEY_401),
    Case("path-encoded-slash", request("GET", "/partner%2forders"), NO_KEY_401),
    Case("path-encoded-nul-suffix", request("GET", "/partner/orders%00"), NO_KEY_401),
    Case("path-raw-backslash", request("GET", "/partner\\orders"), NO_KEY_401),
    Case("path-encoded-backslash", request("GET", "/partner%5corders"), NO_KEY_401),
    Case("path-semicolon-parameter", request("GET", "/partner/orders;x=1"), NO_KEY_401),
    Case("path-encoded-semicolon", request("GET", "/partner/orders%3bx=1"), NO_KEY_401),
    Case("path-double-encoded-dot-dot", request("GET", "/x/%252e%252e/partner/orders"), NO_KEY_401),
    # Both match paths case-sensitively, so this is the public route's: only the rule applies.
    Case("path-upper-case", request("GET", "/PARTNER/orders"), None),
]

METHOD_CASES = [
    Case("method-head", request("HEAD", "/partner/orders"), method_refused),
    Case("method-delete", request("DELETE", "/partner/orders"), method_refused),
    Case("method-put", request("PUT", "/partner/orders", "Content-Length: 0"), method_refused),
    Case("method-patch", request("PATCH", "/partner/orders", "Content-Length: 0"), method_refused),
    Case("method-post", request("POST", "/partner/orders", "Content-Length: 0"), method_refused),
    Case("method-options", request("OPTIONS", "/partner/orders"), method_refused),
    Case(
        "method-head-with-key",
        request("HEAD", "/partner/orders", KEY_FIELD),
        forwarded_for_partner,
    ),
]

SPOOFING_CASES = [
    Case(
        "spoof-underscore-consumer",
        request("GET", "/anything", "X_Portico_Consumer: t/root"),
        no_identity_fields,
    ),
    Case(
        "spoof-consumer",
        request("GET", "/anything", "X-Portico-Consumer: t/root"),
        no_identity_fields,
    ),
    Case("spoof-tenant", request("GET", "/anything", "x-portico-tenant: t"), no_identity_fields),
    Case(
        "spoof-scopes", request("GET", "/anything", "X-PORTICO-SCOPES: admin"), no_identity_fields
    ),
    Case(
        "spoof-underscore-forwarded-for",
        request("GET", "/anything", "X_Forwarded_For: 1.2.3.4"),
        no_identity_fields,
    ),
]

CONNECTION_CASES = [
    Case(
        "connection-lists-gateway-fields",
        request(
            "POST",
            "/anything",
            "Connection: keep-alive, x-forwarded-for, x-request-id, traceparent, content-length",
            "Content-Length: 5",
            body=b"hello",
        ),
        connection_listed_fields_kept,
    ),
]

HOST_CASES = [
    Case("host-trailing-dot", request("GET", "/x", host="admin.local."), NO_KEY_401),
    Case("host-upper-case", request("GET", "/x", host="ADMIN.LOCAL"), NO_KEY_401),
    Case("host-with-port", request("GET", "/x", host="admin.local:80"), NO_KEY_401),
    Case("host-absolute-form-wins", request("GET", "http://admin.local/x"), NO_KEY_401),
    Case("host-with-space", request("GET", "/x", host="a b"), BAD_REQUEST),
    Case("host-with-path", request("GET", "/x", host="x/../y"), BAD_REQUEST),
    Case("host-with-quote", request("GET", "/x", host='x"y'), BAD_REQUEST),
    Case("host-with-backslash", request("GET", "/x", host="x\\"), BAD_REQUEST),
    Case("host-twice", request("GET", "/x", f"Host: {ADMIN}"), BAD_REQUEST),
    Case(
        "host-absolute-form-userinfo",
        request("GET", "http://user:pw@public.example/x"),
        BAD_REQUEST,
    ),
    Case("host-absolute-form-public", request("GET", "http://public.example/a"), forwarded("/a")),
]

AUTHORIZATION_CASES = [
    Case(
        "authorization-twice",
        request("GET", "/anything", "Authorization: Basic YTpi", "Authorization: Basic Yzpk"),
        BAD_REQUEST,
    ),
]

FRAMING_CASES = [
    Case(
        "chunked-malformed-size",
        request(
            "POST", "/anything", "Transfer-Encoding: chunked", body=b"zz\r\nhello\r\n0\r\n\r\n"
        ),
        refused(400),  # an answer at all: the old gateway waited past the socket timeout
    ),
    Case(
        "te-gzip-chunked",
        request("POST", "/anything", "Transfer-Encoding: gzip, chunked", body=CHUNKED_HELLO),
        refused(501, 400),
    ),
    Case(
        "te-identity-then-chunked",
        request(
            "POST",
            "/anything",
            "Transfer-Encoding: identity",
            "Transfer-Encoding: chunked",
            body=CHUNKED_HELLO,
        ),
        refused(400, 501),
    ),
    Case(
        "te-gzip",
        request("POST", "/anything", "Transfer-Encoding: gzip", body=b"hello"),
        refused(400, 501),
    ),
    Case(
        "te-chunked-http-1.0",
        request(
            "POST",
            "/anything",
            "Transfer-Encoding: chunked",
            version="HTTP/1.0",
            body=CHUNKED_HELLO,
        ),
        BAD_REQUEST,
    ),
    Case(
        "content-length-and-chunked",
        request(
            "POST",
            "/anything",
            "Content-Length: 5",
            "Transfer-Encoding: chunked",
            body=CHUNKED_HELLO,
        ),
        BAD_REQUEST,
    ),
    Case(
        "content-length-twice-different",
        request("POST", "/anything", "Content-Length: 5", "Content-Length: 6", body=b"hello!"),
        BAD_REQUEST,
    ),
]

REQUEST_LINE_CASES = [
    Case("http-version-2.0", request("GET", "/", version="HTTP/2.0"), refused(505, 400)),
    Case("request-line-encoded-nul", request("GET", "/%00"), BAD_REQUEST),
]

UPGRADE_CASES = [
    Case(
        "upgrade-h2c",
        request(
            "GET",
            "/anything",
            "Connection: Upgrade",
            "Upgrade: h2c",
            "HTTP2-Settings: AAMAAABkAAQAAP__",
        ),
        upgrade_not_forwarded,
        check_closed=True,
    ),
]

HEAD_SIZE_CASES = [
    Case(
        "head-200-fields",
        request("GET", "/anything", *(f"X-F-{n}: v" for n in range(200))),
        refused(431, 400),
    ),
    Case(
        "head-70000-bytes",
        request("GET", "/anything", "X-Long: " + "a" * 70_000),
        refused(431, 400),
    ),
]

CASES = [
    *PATH_CASES,
    *METHOD_CASES,
    *SPOOFING_CASES,
    *CONNECTION_CASES,
    *HOST_CASES,
    *AUTHORIZATION_CASES,
    *FRAMING_CASES,
    *REQUEST_LINE_CASES,
    *UPGRADE_CASES,
    *HEAD_SIZE_CASES,
]


# -- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "fields", "host", "status"),
    [
        pytest.param("/partner/orders", (KEY_FIELD,), PUBLIC, 200, id="protected-with-key"),
        pytest.param("/partner/orders", (), PUBLIC, 401, id="protected-without-key"),
        pytest.param("/partner/orders", ("X-API-Key: pk_wrong_key",), PUBLIC, 401, id="wrong-key"),
        pytest.param("/anything", (), PUBLIC, 200, id="public"),
        pytest.param("/x", (KEY_FIELD,), ADMIN, 200, id="admin-host-with-key"),
        pytest.param("/x", (), ADMIN, 401, id="admin-host-without-key"),
    ],
)
def test_both_proxies_apply_the_reference_configuration(
    nginx: Nginx,
    portico: RunningGateway,
    upstream: Upstream,
    target: str,
    fields: tuple[str, ...],
    host: str,
    status: int,
) -> None:
    raw = request("GET", target, *fields, host=host)
    for name, port in (("nginx", nginx.port), ("portico", portico.port)):
        outcome = send(port, raw, upstream, head_only=False)
        assert outcome.status == status, (name, outcome.summary())
        assert [r.path for r in outcome.reached] == ([target] if status == 200 else []), (
            name,
            outcome.summary(),
        )


def test_known_differences_name_existing_cases() -> None:
    assert set(KNOWN_DIFFERENCES) <= {case.id for case in CASES}
    assert all(reason.strip() for reason in KNOWN_DIFFERENCES.values())


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in CASES])
def test_portico_forwards_nothing_nginx_refuses(
    nginx: Nginx, portico: RunningGateway, upstream: Upstream, case: Case
) -> None:
    reference = send(nginx.port, case.request, upstream, head_only=case.head_only)
    outcome = send(
        portico.port,
        case.request,
        upstream,
        head_only=case.head_only,
        check_closed=case.check_closed,
        probe=True,
    )

    failures: list[str] = []
    if reference.refused and not outcome.refused and case.id not in KNOWN_DIFFERENCES:
        failures.append(
            f"nginx refused ({reference.summary()}) but Portico forwarded ({outcome.summary()})"
        )
    if outcome.out_of_step:
        failures.append(f"Portico left its upstream connection out of step: {outcome.out_of_step}")
    if case.expect is not None and (problem := case.expect(outcome)):
        failures.append(f"Portico's own expectation: {problem}")
    if failures:
        outcomes = [f"nginx: {reference.summary()}", f"portico: {outcome.summary()}"]
        pytest.fail("\n".join([*failures, *outcomes]), pytrace=False)
