"""The ``validation`` policy through a real gateway and a real upstream implementing the
document (tests/policies/validation/orders.yaml): what matches goes through untouched, what does
not gets one 400 listing every error, and the ways around it (duplicates, encodings, content
types, methods, hostile JSON) are refused before the upstream sees them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.policies.validation.orders_upstream import OrdersUpstream
from tests.support.gateway import (
    RawConnection,
    RunningGateway,
    check_problem,
    check_raw_problem,
    route,
    running_gateway,
)

HERE = Path(__file__).parent
PROBLEMS = "https://portico.dev/problems/"
VALID = {"sku": "A-1", "qty": 2}


@pytest.fixture(scope="module")
def upstream() -> Iterator[OrdersUpstream]:
    server = OrdersUpstream()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: OrdersUpstream
) -> Iterator[RunningGateway]:
    directory = tmp_path_factory.mktemp("gateway")
    shutil.copy(HERE / "orders.yaml", directory / "orders.yaml")
    config = {
        "services": {
            "orders": {
                "targets": [upstream.url],
                "retries": 0,
                "openapi": "orders.yaml",
                "policies": [{"type": "validation", "max_depth": 8, "max_array_length": 50}],
            }
        },
        "routes": [
            route("api", "/api/{rest:path}", service="orders"),
            route(
                "short",
                "/v2/{rest:path}",
                service="orders",
                strip_prefix="/v2",
                policies=[{"type": "validation", "base_path": ""}],
            ),
            route(
                "lenient",
                "/lenient/{rest:path}",
                service="orders",
                strip_prefix="/lenient",
                policies=[{"type": "validation", "base_path": "", "undocumented": "pass"}],
            ),
        ],
    }
    # running_gateway writes portico.yaml into this directory: orders.yaml is read beside it.
    with running_gateway(directory, config) as running:
        yield running


@pytest.fixture
def http(gateway: RunningGateway) -> Iterator[httpx.Client]:
    with gateway.client() as client:
        yield client


def errors_of(response: httpx.Response) -> list[dict[str, str]]:
    problem = check_problem(response, 400, PROBLEMS + "validation-failed")
    errors: list[dict[str, str]] = problem["errors"]
    assert all(set(e) == {"pointer", "message"} for e in errors), errors
    return errors


def pointers(response: httpx.Response) -> list[str]:
    return [e["pointer"] for e in errors_of(response)]


# -- what matches goes through ----------------------------------------------------------------


def test_a_request_the_document_describes_reaches_the_upstream_unchanged(
    http: httpx.Client, upstream: OrdersUpstream
) -> None:
    response = http.post("/api/orders", json={**VALID, "note": None, "tags": ["x"]})

    assert response.status_code == 201, response.text
    method, path, body = upstream.received[-1]
    assert (method, path) == ("POST", "/api/orders")
    assert json.loads(body) == {**VALID, "note": None, "tags": ["x"]}


def test_parameters_are_read_as_their_schemas_type(http: httpx.Client) -> None:
    response = http.get(
        "/api/orders",
        params=[("limit", "10"), ("status", "open"), ("status", "shipped"), ("ids", "1,2,3")],
        headers={"X-Tenant": "acme"},
    )

    assert response.status_code == 200, response.text


def test_the_route_prefix_and_base_path_lead_to_the_same_operations(http: httpx.Client) -> None:
    assert http.get("/v2/orders/7").status_code == 200
    assert http.get("/api/orders/7").status_code == 200
    assert pointers(http.get("/v2/orders/0")) == ["/path/id"]


# -- every error, with its pointer ------------------------------------------------------------


def test_every_error_of_a_request_is_listed_with_a_pointer(
    http: httpx.Client, upstream: OrdersUpstream
) -> None:
    before = len(upstream.received)

    response = http.post(
        "/api/orders",
        json={"sku": "", "qty": 0, "colour": "red", "tags": ["a", 1]},
    )

    found = pointers(response)
    assert {"/sku", "/qty", "/tags/1", ""} <= set(found), found
    assert len(upstream.received) == before


def test_parameter_errors_point_at_query_path_and_header(http: httpx.Client) -> None:
    response = http.get(
        "/api/orders",
        params={"limit": "500", "status": "lost", "ids": "1,x"},
        headers={"X-Tenant": "ACME!"},
    )

    assert sorted(pointers(response)) == [
        "/header/x-tenant",
        "/query/ids/1",
        "/query/limit",
        "/query/status/0",
    ]


@pytest.mark.parametrize("limit", ["abc", "1.5", "", "+1", "1_0", " 1", "0x10", "1e2"])
def test_a_parameter_that_does_not_read_as_an_integer_is_refused(
    http: httpx.Client, limit: str
) -> None:
    assert pointers(http.get("/api/orders", params={"limit": limit})) == ["/query/limit"]


def test_a_required_body_that_is_missing_is_refused(http: httpx.Client) -> None:
    response = http.post("/api/orders", headers={"content-type": "application/json"})

    assert errors_of(response) == [{"pointer": "", "message": "a request body is required"}]


def test_a_body_on_an_operation_that_takes_none_is_refused(http: httpx.Client) -> None:
    response = http.request("DELETE", "/api/orders/3", json={"smuggled": True})

    assert pointers(response) == [""]


def test_every_error_is_listed_to_the_policy_limit(
    tmp_path: Path, upstream: OrdersUpstream
) -> None:
    shutil.copy(HERE / "orders.yaml", tmp_path / "orders.yaml")
    config = {
        "services": {"orders": {"targets": [upstream.url], "openapi": "orders.yaml"}},
        "routes": [
            route(
                "api",
                "/api/{rest:path}",
                service="orders",
                policies=[{"type": "validation", "max_errors": 3}],
            )
        ],
    }
    body = {"sku": 1, "qty": "x", "tags": [1, 2, 3, 4]}
    with running_gateway(tmp_path, config) as gateway, gateway.client() as http:
        assert len(errors_of(http.post("/api/orders", json=body))) == 3


# -- what the document does not describe ------------------------------------------------------


def test_a_path_the_document_does_not_describe_is_404(http: httpx.Client) -> None:
    check_problem(http.get("/api/customers"), 404, PROBLEMS + "operation-not-found")
    check_problem(http.get("/api/orders/7/items"), 404, PROBLEMS + "operation-not-found")


def test_a_method_the_document_does_not_describe_is_405_with_its_methods(
    http: httpx.Client,
) -> None:
    response = http.put("/api/orders/7", json=VALID)

    check_problem(response, 405, PROBLEMS + "method-not-allowed")
    assert response.headers["allow"] == "DELETE, GET, HEAD"


def test_head_is_checked_as_the_get_it_stands_for(http: httpx.Client) -> None:
    assert http.head("/api/orders/7").status_code == 200
    response = http.head("/api/orders/0")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


def test_undocumented_pass_lets_unknown_paths_and_methods_through(http: httpx.Client) -> None:
    assert http.get("/lenient/elsewhere").status_code == 404  # the upstream's own 404
    assert http.put("/lenient/orders/7", json=VALID).status_code == 200  # the upstream's
    assert pointers(http.get("/lenient/orders/0")) == ["/path/id"]


# -- content types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", 'Application/JSON;Charset="UTF-8"'],
)
def test_json_content_types_are_accepted_in_any_spelling(
    http: httpx.Client, content_type: str
) -> None:
    response = http.post(
        "/api/orders", content=json.dumps(VALID), headers={"content-type": content_type}
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/jsonx", None],
)
def test_a_json_body_under_another_content_type_is_415(
    http: httpx.Client, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}

    response = http.post("/api/orders", content=json.dumps(VALID), headers=headers)

    check_problem(response, 415, PROBLEMS + "unsupported-media-type")


@pytest.mark.parametrize("charset", ["utf-16", "latin-1", "iso-8859-1"])
def test_a_charset_other_than_utf8_is_415(http: httpx.Client, charset: str) -> None:
    response = http.post(
        "/api/orders",
        content=json.dumps(VALID).encode(charset if charset != "latin-1" else "latin-1"),
        headers={"content-type": f"application/json; charset={charset}"},
    )
    check_problem(response, 415, PROBLEMS + "unsupported-media-type")


def test_two_content_type_fields_are_415(gateway: RunningGateway) -> None:
    body = json.dumps(VALID).encode()
    with RawConnection(gateway.port) as conn:
        conn.send(
            b"POST /api/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        check_raw_problem(conn.read_response(), 415, PROBLEMS + "unsupported-media-type")


def test_a_content_type_once_read_is_still_checked_with_its_body(gateway: RunningGateway) -> None:
    """The entry a Content-Type field found is kept per operation: the next request with the
    same field skips reading it, never the body's checks; two fields are still read as none."""
    valid = json.dumps(VALID).encode()
    invalid = json.dumps({"sku": "A-1", "qty": "two"}).encode()
    head = b"POST /api/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    with RawConnection(gateway.port) as conn:
        for _ in range(2):
            conn.send(head + b"Content-Length: %d\r\n\r\n%s" % (len(valid), valid))
            assert conn.read_response().status == 201
            conn.send(head + b"Content-Length: %d\r\n\r\n%s" % (len(invalid), invalid))
            check_raw_problem(conn.read_response(), 400, PROBLEMS + "validation-failed")
            conn.send(
                head
                + b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(valid), valid)
            )
            check_raw_problem(conn.read_response(), 415, PROBLEMS + "unsupported-media-type")


# -- hostile JSON -----------------------------------------------------------------------------


def post_raw(http: httpx.Client, body: bytes) -> httpx.Response:
    return http.post("/api/orders", content=body, headers={"content-type": "application/json"})


def test_duplicate_keys_are_refused(http: httpx.Client, upstream: OrdersUpstream) -> None:
    before = len(upstream.received)
    response = post_raw(http, b'{"sku": "A-1", "qty": 1, "qty": -5}')

    assert "appears twice" in errors_of(response)[0]["message"]
    assert len(upstream.received) == before


@pytest.mark.parametrize(
    "body",
    [
        b'{"sku": "\xff\xfe", "qty": 1}',
        b'\xef\xbb\xbf{"sku": "A-1", "qty": 1}',
        b'{"sku": "A-1", "qty": NaN}',
        b'{"sku": "A-1", "qty": Infinity}',
        b'{"sku": "A-1", "qty": 1e999}',
        b'{"sku": "A-1", "qty": 1',
        b'{"sku": "A-1", "qty": ' + b"9" * 5000 + b"}",
    ],
    ids=["invalid-utf8", "bom", "nan", "infinity", "overflow", "truncated", "5000-digits"],
)
def test_what_is_not_json_is_refused_with_400(http: httpx.Client, body: bytes) -> None:
    assert pointers(post_raw(http, body)) == [""]


def test_a_huge_integer_is_refused_by_its_range_not_by_a_crash(http: httpx.Client) -> None:
    response = post_raw(http, b'{"sku": "A-1", "qty": ' + b"9" * 300 + b"}")
    assert pointers(response) == ["/qty"]


@pytest.mark.parametrize(
    ("body", "limit"),
    [
        (b"[" * 20 + b"]" * 20, "max_depth"),
        (b"[" * 100_000 + b"]" * 100_000, "max_depth"),
        (json.dumps({"sku": "A", "qty": 1, "tags": ["t"] * 51}).encode(), "max_array_length"),
        (json.dumps({"sku": "A" * 100_001, "qty": 1}).encode(), "max_string_length"),
    ],
    ids=["deep", "very-deep", "long-array", "long-string"],
)
def test_json_past_a_limit_is_refused_before_the_schema(
    http: httpx.Client, body: bytes, limit: str
) -> None:
    problem = check_problem(post_raw(http, body), 400, PROBLEMS + "json-limit-exceeded")
    assert limit in problem["detail"]


def test_a_body_over_the_policy_size_is_413(http: httpx.Client) -> None:
    body = json.dumps({"sku": "A", "qty": 1, "note": "n" * 90_000, "x": "y" * 1_000_000})
    problem = check_problem(post_raw(http, body.encode()), 413, PROBLEMS + "request-too-large")
    assert problem["max_body_size"] == 1024 * 1024


# -- query strings and paths as an attacker writes them -----------------------------------------


def test_a_scalar_parameter_given_twice_is_refused(http: httpx.Client) -> None:
    response = http.get("/api/orders?limit=5&limit=5000")
    assert errors_of(response)[0]["pointer"] == "/query/limit"
    assert "2 times" in errors_of(response)[0]["message"]


def test_an_unexploded_array_given_twice_is_refused(http: httpx.Client) -> None:
    assert pointers(http.get("/api/orders?ids=1,2&ids=3")) == ["/query/ids"]
    assert http.get("/api/orders?status=open&status=shipped").status_code == 200


def test_percent_encoded_and_plus_spelled_values_are_decoded_once(http: httpx.Client) -> None:
    assert http.get("/api/orders?limit=%31%30").status_code == 200
    assert pointers(http.get("/api/orders?limit=%2B1")) == ["/query/limit"]
    assert pointers(http.get("/api/orders?li%6Dit=abc")) == ["/query/limit"]


def test_a_query_that_is_not_utf8_is_refused(http: httpx.Client) -> None:
    assert pointers(http.get("/api/orders?limit=%ff")) == ["/query"]


def test_an_encoded_path_parameter_is_checked_decoded(http: httpx.Client) -> None:
    assert http.get("/api/orders/%37").status_code == 200
    assert pointers(http.get("/api/orders/%2D1")) == ["/path/id"]


def test_a_header_parameter_given_twice_is_refused(gateway: RunningGateway) -> None:
    with RawConnection(gateway.port) as conn:
        conn.send(
            b"GET /api/orders HTTP/1.1\r\nHost: x\r\nX-Tenant: acme\r\nx-tenant: evil\r\n\r\n"
        )
        problem = check_raw_problem(conn.read_response(), 400, PROBLEMS + "validation-failed")
    assert problem["errors"][0]["pointer"] == "/header/x-tenant"


def test_cookie_parameters_are_read_from_the_cookie_fields(gateway: RunningGateway) -> None:
    def get(*cookies: str) -> Any:
        fields = "".join(f"Cookie: {c}\r\n" for c in cookies)
        with RawConnection(gateway.port) as conn:
            conn.send(f"GET /api/orders HTTP/1.1\r\nHost: x\r\n{fields}\r\n".encode())
            return conn.read_response()

    assert get("theme=dark; session=deadbeef").status == 200
    assert get("theme=dark").status == 200  # not required
    assert get("session=deadbeef; ", "lang=en").status == 200  # split over two fields
    for refused in (["session=NOT-HEX!"], ["session=deadbeef; session=cafebabe"]):
        problem = check_raw_problem(get(*refused), 400, PROBLEMS + "validation-failed")
        assert [e["pointer"] for e in problem["errors"]] == ["/cookie/session"]
    # Two fields, one session each: a backend may read either, so one value is not enough.
    split = check_raw_problem(
        get("session=deadbeef", "session=0000000z"), 400, PROBLEMS + "validation-failed"
    )
    assert split["errors"][0]["message"] == "given 2 times; this parameter takes one value"


def test_an_exploded_form_object_is_read_from_its_properties(http: httpx.Client) -> None:
    """``shade`` is an object in ``form`` style, exploded: ``?color=red&size=9``."""
    assert http.get("/api/orders", params={"color": "red", "size": "9"}).status_code == 200
    assert http.get("/api/orders", params={"size": "50"}).status_code == 200
    assert sorted(pointers(http.get("/api/orders", params={"color": "green", "size": "51"}))) == [
        "/query/shade/color",
        "/query/shade/size",
    ]
    twice = http.get("/api/orders?color=red&color=blue")
    assert errors_of(twice) == [
        {"pointer": "/query/shade/color", "message": "given more than once"}
    ]


def test_a_trailing_slash_reaches_the_same_operation(http: httpx.Client) -> None:
    assert http.get("/api/orders/7/").status_code == 200
    assert pointers(http.get("/api/orders/0/")) == ["/path/id"]


def test_brackets_inside_strings_do_not_count_as_depth(http: httpx.Client) -> None:
    body = {"sku": "[[[[{{{{[[[[", "qty": 1, "note": '\\"[[[[[[[[[[[[', "tags": ["]]]]", "[[[["]}
    assert post_raw(http, json.dumps(body).encode()).status_code == 201
    nested = {"sku": "A", "qty": 1, "tags": [[[[[[[["x"]]]]]]]]}
    problem = check_problem(
        post_raw(http, json.dumps(nested).encode()), 400, PROBLEMS + "json-limit-exceeded"
    )
    assert "max_depth" in problem["detail"]
