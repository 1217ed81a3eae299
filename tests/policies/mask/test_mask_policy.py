"""The ``mask`` policy through a real gateway, over sockets, against an upstream that sends exactly
the bytes each test scripts: fields removed or masked by path for consumers without the scope,
and the ways an upstream's body could carry a field past the paths (escaped names, duplicate
members, case, media types with suffixes and parameters, compression nobody asked for, framing by
chunks or by closing, error statuses). Whatever the policy cannot read, it refuses."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.gateway import (
    RawConnection,
    RunningGateway,
    check_problem,
    check_raw_problem,
    route,
    run_portico,
    running_gateway,
    write_config,
)

from portico.identity.apikeys import generate_key
from portico.operations.metrics import exposition, registry

NOT_MASKABLE = "https://portico.dev/problems/response-not-maskable"
READER = generate_key()  # granted pii:read
CLERK = generate_key()  # not granted pii:read

CUSTOMER = {
    "id": "c-100",
    "name": "Ada Lovelace",
    "customer": {"ssn": "078-05-1120", "tier": "gold"},
    "items": [
        {"sku": "GR-BRASS", "cost": 1250, "price": 1999},
        {"sku": "PC-CARDS", "cost": 899, "price": 1299},
    ],
    "auth": {"user": "ada", "password": "analytical", "nested": [{"password": "engine"}]},
}
SECRETS = ("078-05-1120", "1250", "899", "analytical", "engine")
MASK = {
    "type": "mask",
    "remove": ["customer.ssn", "**.password"],
    "mask": ["items[*].cost"],
    "unless_scopes": ["pii:read"],
}


# -- an upstream that sends what the test scripts ----------------------------------------------


class Scripted:
    """A plain HTTP/1.1 server: for each request path, the exact response bytes to send, and
    whether to close the connection after them (a close-delimited body). Records each request's
    header fields."""

    def __init__(self) -> None:
        self.responses: dict[str, tuple[bytes, bool]] = {}
        self.requests: list[list[tuple[str, str]]] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def script(self, path: str, response: bytes, close: bool = False) -> str:
        self.responses[path] = (response, close)
        return path

    def close(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self._sock.close()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        rfile = conn.makefile("rb")
        try:
            while True:
                line = rfile.readline(65536)
                if not line:
                    return
                _, target, _ = line.decode("latin-1").split(" ", 2)
                headers: list[tuple[str, str]] = []
                while (raw := rfile.readline(65536)) not in (b"\r\n", b"\n", b""):
                    name, _, value = raw.decode("latin-1").partition(":")
                    headers.append((name.strip().lower(), value.strip()))
                length = int(dict(headers).get("content-length", "0"))
                if length:
                    rfile.read(length)
                self.requests.append(headers)
                path = target.partition("?")[0]
                response, close = self.responses.get(
                    path, (b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n", False)
                )
                if line.startswith(b"HEAD "):
                    response = response.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
                conn.sendall(response)
                if close:
                    return
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                rfile.close()
                conn.close()


def http_response(
    body: bytes,
    content_type: str | None = "application/json",
    *,
    status: str = "200 OK",
    framing: str = "length",
    extra: str = "",
) -> tuple[bytes, bool]:
    head = f"HTTP/1.1 {status}\r\n"
    if content_type is not None:
        head += f"content-type: {content_type}\r\n"
    head += extra
    if framing == "length":
        return (head + f"content-length: {len(body)}\r\n\r\n").encode("latin-1") + body, False
    if framing == "chunked":
        half = len(body) // 2
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:half], body[half:]) if p)
        return (head + "transfer-encoding: chunked\r\n\r\n").encode() + chunks + b"0\r\n\r\n", False
    assert framing == "close"
    return (head + "connection: close\r\n\r\n").encode("latin-1") + body, True


@pytest.fixture(scope="module")
def upstream() -> Iterator[Scripted]:
    server = Scripted()
    yield server
    server.close()


def serve(upstream: Scripted, path: str, body: bytes, *args: Any, **kwargs: Any) -> str:
    response, close = http_response(body, *args, **kwargs)
    return upstream.script(path, response, close)


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: Scripted
) -> Iterator[RunningGateway]:
    def at(name: str, *policies: dict[str, Any]) -> dict[str, Any]:
        return route(
            name, f"/{name}/{{rest:path}}", strip_prefix=f"/{name}", policies=list(policies)
        )

    auth = {"type": "auth", "methods": ["api_key"]}
    config = {
        "services": {"main": {"targets": [upstream.url], "retries": 0}},
        "tenants": {
            "acme": {
                "consumers": {
                    "reader": {
                        "scopes": ["pii:read"],
                        "api_keys": [{"id": READER.id, "sha256": READER.sha256}],
                    },
                    "clerk": {
                        "scopes": ["orders:read"],
                        "api_keys": [{"id": CLERK.id, "sha256": CLERK.sha256}],
                    },
                }
            }
        },
        "routes": [
            at("open", MASK),
            at("keyed", auth, MASK),
            at("anycase", {**MASK, "ignore_case": True}),
            at("small", {**MASK, "max_body_size": 64}),
            at("small-pass", {**MASK, "max_body_size": 64, "unreadable": "pass"}),
            at("lenient", {**MASK, "unreadable": "pass", "non_json": "pass"}),
            at("nested", {"type": "mask", "remove": ["groups[*][*].ssn", "[*].ssn", "list[1]"]}),
            at("masked", {"type": "mask", "mask": ["**.ssn"], "replacement": None}),
            at("plain"),
        ],
    }
    with running_gateway(tmp_path_factory.mktemp("gateway"), config) as running:
        yield running


@pytest.fixture
def http(gateway: RunningGateway) -> Iterator[httpx.Client]:
    with gateway.client() as client:
        yield client


def assert_masked(response: httpx.Response) -> dict[str, Any]:
    assert NOT_MASKABLE not in response.text, response.text
    for secret in SECRETS:
        assert secret not in response.text
    document = response.json()
    assert document["customer"] == {"tier": "gold"}
    assert [item["cost"] for item in document["items"]] == ["****", "****"]
    assert [item["price"] for item in document["items"]] == [1999, 1299]
    assert document["auth"] == {"user": "ada", "nested": [{}]}
    assert response.headers["content-length"] == str(len(response.content))
    return document


def customer_bytes() -> bytes:
    return json.dumps(CUSTOMER, indent=2).encode()


# -- the fields -----------------------------------------------------------------------------------


def test_fields_are_removed_and_masked_by_path_for_an_anonymous_caller(
    upstream: Scripted, http: httpx.Client
) -> None:
    serve(upstream, "/customer", customer_bytes())
    assert_masked(http.get("/open/customer"))


def test_a_consumer_granted_the_scope_gets_the_body_byte_for_byte(
    upstream: Scripted, http: httpx.Client
) -> None:
    body = customer_bytes()
    serve(upstream, "/customer", body)
    granted = http.get("/keyed/customer", headers={"X-API-Key": READER.key})
    assert granted.status_code == 200
    assert granted.content == body
    assert_masked(http.get("/keyed/customer", headers={"X-API-Key": CLERK.key}))


def test_a_name_spelt_with_unicode_escapes_is_the_same_name(
    upstream: Scripted, http: httpx.Client
) -> None:
    body = (
        rb'{"customer": {"s\u0073n": "078-05-1120", "tier": "gold"},'
        rb' "\u0069tems": [{"c\u006fst": 1250}]}'
    )
    serve(upstream, "/escaped", body)
    response = http.get("/open/escaped")
    assert response.status_code == 200
    assert response.json() == {"customer": {"tier": "gold"}, "items": [{"cost": "****"}]}


@pytest.mark.parametrize(
    "body",
    [
        b'{"customer": {"ssn": "078-05-1120"}, "customer": {"tier": "gold"}}',
        b'{"customer": {"tier": "gold"}, "customer": {"ssn": "078-05-1120", "tier": "gold"}}',
        b'{"customer": {"ssn": "078-05-1120", "ssn": "078-05-1120", "tier": "gold"}}',
    ],
)
def test_duplicate_members_cannot_carry_a_field_past_the_mask(
    upstream: Scripted, http: httpx.Client, body: bytes
) -> None:
    """Parsers disagree on which duplicate wins; the client gets one document, written again
    from the one Portico read, so no duplicate reaches it."""
    serve(upstream, "/duplicates", body)
    response = http.get("/open/duplicates")
    assert response.status_code == 200
    assert b"078-05-1120" not in response.content
    assert response.content.count(b'"customer"') == 1
    assert response.json() == {"customer": {"tier": "gold"}}


def test_fields_in_nested_arrays_and_top_level_arrays_are_found(
    upstream: Scripted, http: httpx.Client
) -> None:
    serve(
        upstream,
        "/groups",
        b'{"groups": [[{"ssn": 1, "a": 1}], [{"ssn": 2}, {"b": 2}]], "list": [0, 1, 2]}',
    )
    response = http.get("/nested/groups")
    assert response.json() == {"groups": [[{"a": 1}], [{}, {"b": 2}]], "list": [0, 2]}
    serve(upstream, "/array", b'[{"ssn": 1, "id": "a"}, {"id": "b"}, 3]')
    assert http.get("/nested/array").json() == [{"id": "a"}, {"id": "b"}, 3]


def test_any_depth_reaches_into_arrays_and_objects_and_masks_whole_values(
    upstream: Scripted, http: httpx.Client
) -> None:
    serve(upstream, "/deep", b'{"a": [{"b": {"ssn": {"number": "078-05-1120"}}}], "ssn": 1}')
    response = http.get("/masked/deep")
    assert response.json() == {"a": [{"b": {"ssn": None}}], "ssn": None}


@pytest.mark.parametrize("depth", [10, 400, 900, 3000])
def test_a_field_nested_deep_is_masked_or_the_body_refused_never_leaked(
    upstream: Scripted, http: httpx.Client, depth: int
) -> None:
    body = b'{"a": ' * depth + b'{"ssn": "078-05-1120"}' + b"}" * depth
    serve(upstream, "/deep-nested", body)
    response = http.get("/masked/deep-nested")
    assert b"078-05-1120" not in response.content
    if response.status_code == 200:
        assert response.content.count(b'"ssn":null') == 1
    else:
        check_problem(response, 502, NOT_MASKABLE)


def test_a_lone_surrogate_stays_escaped(upstream: Scripted, http: httpx.Client) -> None:
    serve(upstream, "/surrogate", b'{"note": "\\ud800 x", "ssn": "078-05-1120"}')
    response = http.get("/masked/surrogate")
    assert response.status_code == 200
    assert response.content == b'{"note":"\\ud800 x","ssn":null}'


def test_names_match_with_case_only_when_the_route_says_ignore_case(
    upstream: Scripted, http: httpx.Client
) -> None:
    serve(upstream, "/cased", b'{"Customer": {"SSN": "078-05-1120"}, "items": [{"COST": 1}]}')
    exact = http.get("/open/cased")
    assert exact.json() == {"Customer": {"SSN": "078-05-1120"}, "items": [{"COST": 1}]}
    folded = http.get("/anycase/cased")
    assert folded.json() == {"Customer": {}, "items": [{"COST": "****"}]}


# -- media types and codings ------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        'application/json;charset="UTF-8"',
        "application/vnd.acme.customer+json",
        "application/problem+json",
        "application/vnd.x+json; version=2; charset=utf-8",
    ],
)
def test_every_json_media_type_is_masked(
    upstream: Scripted, http: httpx.Client, content_type: str
) -> None:
    serve(upstream, "/typed", customer_bytes(), content_type)
    response = http.get("/open/typed")
    assert_masked(response)
    assert response.headers["content-type"] == content_type


def test_json_in_utf_16_is_masked_and_sent_as_utf_8(upstream: Scripted, http: httpx.Client) -> None:
    body = json.dumps(CUSTOMER).encode("utf-16-le")
    serve(upstream, "/utf16", body, "application/json; charset=utf-16le")
    response = http.get("/open/utf16")
    assert_masked(response)
    assert response.headers["content-type"] == "application/json; charset=utf-8"


@pytest.mark.parametrize(
    ("coding", "compress"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("identity, gzip", gzip.compress),
    ],
)
def test_a_body_compressed_though_nobody_asked_is_decoded_and_masked(
    upstream: Scripted, http: httpx.Client, coding: str, compress: Any
) -> None:
    serve(
        upstream,
        "/compressed",
        compress(customer_bytes()),
        extra=f'content-encoding: {coding}\r\netag: "v1"\r\n',
    )
    response = http.get("/open/compressed", headers={"Accept-Encoding": "identity"})
    assert_masked(response)
    assert "content-encoding" not in response.headers
    assert "etag" not in response.headers  # it named the upstream's bytes


def test_a_client_asking_for_gzip_does_not_make_the_upstream_compress(
    upstream: Scripted, http: httpx.Client
) -> None:
    serve(upstream, "/customer", customer_bytes())
    response = http.get("/open/customer", headers={"Accept-Encoding": "gzip, br"})
    assert_masked(response)
    assert "accept-encoding" not in dict(upstream.requests[-1])


@pytest.mark.parametrize(
    ("body", "extra"),
    [
        (b"\x1b\x00\x00" + b"x" * 40, "content-encoding: br\r\n"),
        (
            gzip.compress(gzip.compress(json.dumps(CUSTOMER).encode())),
            "content-encoding: gzip, gzip\r\n",
        ),
        (b"not gzip at all" + json.dumps(CUSTOMER).encode(), "content-encoding: gzip\r\n"),
        (gzip.compress(json.dumps(CUSTOMER).encode())[:-20], "content-encoding: gzip\r\n"),
    ],
)
def test_a_coding_portico_cannot_decode_is_refused(
    upstream: Scripted, http: httpx.Client, body: bytes, extra: str
) -> None:
    serve(upstream, "/coded", body, extra=extra)
    response = http.get("/open/coded")
    check_problem(response, 502, NOT_MASKABLE, secrets=SECRETS)
    assert "coding" in response.json()["detail"]


def test_a_transfer_coding_other_than_chunked_is_refused(
    upstream: Scripted, gateway: RunningGateway
) -> None:
    upstream.script(
        "/te",
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: gzip\r\n"
        b"connection: close\r\n\r\n" + gzip.compress(customer_bytes()),
        close=True,
    )
    with RawConnection(gateway.port) as conn:
        conn.send(b"GET /open/te HTTP/1.1\r\nHost: a\r\n\r\n")
        response = conn.read_response()
    check_raw_problem(response, 502, NOT_MASKABLE)


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_every_framing_of_the_upstream_is_masked_and_sent_with_a_length(
    upstream: Scripted, gateway: RunningGateway, framing: str
) -> None:
    serve(upstream, f"/framed-{framing}", customer_bytes(), framing=framing)
    with RawConnection(gateway.port) as conn:
        conn.send(f"GET /open/framed-{framing} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        response = conn.read_response()
    assert response.status == 200
    assert response.header("content-length") == str(len(response.body))
    assert response.header("transfer-encoding") is None
    for secret in SECRETS:
        assert secret.encode() not in response.body


def test_an_http_1_0_client_gets_the_masked_body_with_its_length(
    upstream: Scripted, gateway: RunningGateway
) -> None:
    serve(upstream, "/customer", customer_bytes(), framing="chunked")
    with RawConnection(gateway.port) as conn:
        conn.send(b"GET /open/customer HTTP/1.0\r\n\r\n")
        response = conn.read_response()
    assert response.status == 200
    assert response.header("content-length") == str(len(response.body))
    assert json.loads(response.body)["customer"] == {"tier": "gold"}


# -- statuses and methods -------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["404 Not Found", "422 Unprocessable Content", "500 Oops"])
def test_error_bodies_are_masked_too(upstream: Scripted, http: httpx.Client, status: str) -> None:
    serve(upstream, "/failing", customer_bytes(), "application/problem+json", status=status)
    response = http.get("/open/failing")
    assert response.status_code == int(status.split()[0])
    assert_masked(response)


def test_head_and_304_have_no_body_to_mask_and_pass(upstream: Scripted, http: httpx.Client) -> None:
    serve(upstream, "/customer", customer_bytes())
    head = http.head("/open/customer")
    assert head.status_code == 200
    assert head.content == b""
    upstream.script("/unchanged", b'HTTP/1.1 304 Not Modified\r\netag: "v1"\r\n\r\n')
    unchanged = http.get("/open/unchanged", headers={"If-None-Match": '"v1"'})
    assert unchanged.status_code == 304
    assert unchanged.content == b""


def test_an_empty_json_body_passes(upstream: Scripted, http: httpx.Client) -> None:
    serve(upstream, "/empty", b"")
    response = http.get("/open/empty")
    assert response.status_code == 200
    assert response.content == b""


# -- what cannot be read --------------------------------------------------------------------------


def test_over_the_limit_the_body_is_refused_and_nothing_leaks(
    upstream: Scripted, http: httpx.Client
) -> None:
    serve(upstream, "/customer", customer_bytes())
    response = http.get("/small/customer")
    check_problem(response, 502, NOT_MASKABLE, secrets=SECRETS)
    assert "limit" in response.json()["detail"]
    # A gzip body that only grows past the limit once decoded is refused the same way.
    serve(
        upstream,
        "/bomb",
        gzip.compress(b'{"a": "' + b"0" * 100_000 + b'"}'),
        extra="content-encoding: gzip\r\n",
    )
    check_problem(http.get("/small/bomb"), 502, NOT_MASKABLE)


def test_over_the_limit_a_route_may_let_the_body_through_unchecked(
    upstream: Scripted, http: httpx.Client
) -> None:
    body = customer_bytes()
    serve(upstream, "/customer", body)
    response = http.get("/small-pass/customer")
    assert response.status_code == 200
    assert response.content == body


@pytest.mark.parametrize(
    "body",
    [
        b'{"customer": {"ssn": "078-05-1120"',  # cut short
        b'{"customer": {"ssn": "078-05-1120"}} trailing',
        b'{"ssn": NaN}',
        b'{"ssn": 1e400}',
        b"\xff\xfe{\x00",
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_a_body_declared_json_that_is_not_is_refused(
    upstream: Scripted, http: httpx.Client, body: bytes
) -> None:
    serve(upstream, "/broken", body)
    response = http.get("/open/broken")
    check_problem(response, 502, NOT_MASKABLE, secrets=("078-05-1120",))


@pytest.mark.parametrize("content_type", ["text/html", "application/x-ndjson", "text/json", None])
def test_a_body_that_is_not_json_is_refused_by_default(
    upstream: Scripted, http: httpx.Client, content_type: str | None
) -> None:
    serve(upstream, "/other", customer_bytes(), content_type)
    check_problem(http.get("/open/other"), 502, NOT_MASKABLE, secrets=SECRETS)
    lenient = http.get("/lenient/other")
    assert lenient.status_code == 200
    assert lenient.content == customer_bytes()


def test_a_client_cannot_ask_for_a_range_that_is_json_on_its_own(
    upstream: Scripted, http: httpx.Client
) -> None:
    """Bytes 23-36 of ``{"customer": {"ssn": "078-05-1120"}}`` are a JSON string."""
    serve(upstream, "/customer", customer_bytes())
    response = http.get("/open/customer", headers={"Range": "bytes=23-36", "If-Range": '"v1"'})
    assert_masked(response)
    sent = dict(upstream.requests[-1])
    assert "range" not in sent and "if-range" not in sent
    # An upstream that answers a part anyway is refused.
    serve(upstream, "/part", b'"078-05-1120"', status="206 Partial Content")
    response = http.get("/open/part")
    check_problem(response, 502, NOT_MASKABLE, secrets=SECRETS)
    assert "part" in response.json()["detail"]


def test_two_content_types_are_refused(upstream: Scripted, http: httpx.Client) -> None:
    serve(upstream, "/two", customer_bytes(), extra="content-type: text/plain\r\n")
    check_problem(http.get("/open/two"), 502, NOT_MASKABLE, secrets=SECRETS)


def test_a_route_without_the_policy_relays_the_body_untouched(
    upstream: Scripted, http: httpx.Client
) -> None:
    body = customer_bytes()
    serve(upstream, "/customer", body)
    response = http.get("/plain/customer", headers={"Accept-Encoding": "gzip"})
    assert response.content == body
    assert dict(upstream.requests[-1])["accept-encoding"] == "gzip"


# -- counted ----------------------------------------------------------------------------------


def test_masked_refused_and_unchecked_responses_are_counted(
    upstream: Scripted, gateway: RunningGateway, http: httpx.Client
) -> None:
    serve(upstream, "/customer", customer_bytes())
    serve(upstream, "/other", b"<html></html>", "text/html")
    assert http.get("/open/customer").status_code == 200
    assert http.get("/open/other").status_code == 502
    assert http.get("/lenient/other").status_code == 200
    text = gateway.call(lambda: exposition(registry(gateway.gateway))).decode()
    assert 'portico_masked_responses_total{route="open"}' in text
    assert 'portico_mask_refusals_total{reason="content_type",route="open"}' in text
    assert 'portico_mask_unchecked_responses_total{reason="content_type",route="lenient"}' in text


# -- the config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"remove": ["a..b"]}, "expected a name"),
        ({"remove": ["**"]}, "must be followed"),
        ({"mask": ["a[x]"]}, "expected [*]"),
        ({"unless_scopes": ["pii:read"]}, "needs fields"),
        ({"remove": ["a"], "unreadable": "ignore"}, "unreadable"),
        ({"remove": ["a"], "max_body_size": "lots"}, "max_body_size"),
    ],
)
def test_a_bad_mask_is_refused_at_its_line(
    tmp_path: Path, policy: dict[str, Any], message: str
) -> None:
    config = {
        "services": {"main": {"targets": ["http://127.0.0.1:9"]}},
        "routes": [route("r", "/r", policies=[{"type": "mask", **policy}])],
    }
    path = write_config(tmp_path / "portico.yaml", config)
    result = run_portico("check", str(path), cwd=tmp_path)
    assert result.returncode != 0
    assert "routes[0].policies[0]" in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
