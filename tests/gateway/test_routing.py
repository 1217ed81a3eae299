"""Routing through a running gateway: which service gets a request, and with which path."""

from __future__ import annotations

from typing import Any

from tests.gateway.conftest import MakeUpstream, StartGateway
from tests.support.gateway import RawConnection, check_problem, check_raw_problem, route, service
from tests.support.upstreams import Upstream

NOT_FOUND = "https://portico.dev/problems/route-not-found"
METHOD_NOT_ALLOWED = "https://portico.dev/problems/method-not-allowed"


def two_services(make_upstream: MakeUpstream) -> dict[str, object]:
    """Services ``a`` and ``b``, each an upstream that echoes its own name."""
    return {name: service(make_upstream(name).url) for name in ("a", "b")}


def raw_get(port: int, target: str, host: str = "gateway.test") -> tuple[int, Any]:
    """GET exactly ``target`` (httpx would normalise dot segments before sending)."""
    with RawConnection(port) as conn:
        conn.send(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        response = conn.read_response()
    return response.status, response.json()


def test_route_matches_by_method(make_upstream: MakeUpstream, start_gateway: StartGateway) -> None:
    services = two_services(make_upstream)
    gateway = start_gateway(
        {
            "services": services,
            "routes": [
                route("read", "/items", "a", methods=["GET"]),
                route("write", "/items", "b", methods=["post"]),
            ],
        }
    )
    with gateway.client() as http:
        assert http.get("/items").json()["upstream"] == "a"
        assert http.post("/items", content=b"x").json()["upstream"] == "b"


def test_wrong_method_is_405_problem_with_allow(
    make_upstream: MakeUpstream, start_gateway: StartGateway
) -> None:
    a, b = make_upstream("a"), make_upstream("b")
    gateway = start_gateway(
        {
            "services": {"a": service(a.url), "b": service(b.url)},
            "routes": [
                route("read", "/items", "a", methods=["GET"]),
                route("write", "/items", "b", methods=["POST", "PUT"]),
            ],
        }
    )
    with gateway.client() as http:
        response = http.delete("/items")
    check_problem(response, 405, METHOD_NOT_ALLOWED)
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert allowed == {"GET", "HEAD", "POST", "PUT"}  # a GET route takes HEAD too
    assert a.count == b.count == 0


def test_unknown_path_is_404_problem(upstream: Upstream, start_gateway: StartGateway) -> None:
    gateway = start_gateway(
        {"services": {"main": service(upstream.url)}, "routes": [route("items", "/items")]}
    )
    with gateway.client() as http:
        for path in ("/nothing", "/items/1/2", "/items/1", "/itemsx", "/"):
            check_problem(http.get(path), 404, NOT_FOUND)
    assert upstream.count == 0


def test_route_matches_by_host_ignoring_case_and_port(
    make_upstream: MakeUpstream, start_gateway: StartGateway
) -> None:
    services = two_services(make_upstream)
    gateway = start_gateway(
        {
            "services": services,
            "routes": [
                route("api", "/{rest:path}", "a", hosts=["api.example.com"]),
                route("other", "/{rest:path}", "b"),
            ],
        }
    )
    with gateway.client() as http:
        assert http.get("/x", headers={"Host": "api.example.com"}).json()["upstream"] == "a"
        assert http.get("/x", headers={"Host": "API.Example.com:8443"}).json()["upstream"] == "a"
        assert http.get("/x", headers={"Host": "www.example.com"}).json()["upstream"] == "b"


def test_route_matches_by_header_value(
    make_upstream: MakeUpstream, start_gateway: StartGateway
) -> None:
    services = two_services(make_upstream)
    gateway = start_gateway(
        {
            "services": services,
            "routes": [
                route("v1", "/api/{rest:path}", "a"),
                route("v2", "/api/{rest:path}", "b", headers={"X-Api-Version": "2"}),
            ],
        }
    )
    with gateway.client() as http:
        assert http.get("/api/x").json()["upstream"] == "a"
        assert http.get("/api/x", headers={"x-api-version": "2"}).json()["upstream"] == "b"
        assert http.get("/api/x", headers={"X-Api-Version": "3"}).json()["upstream"] == "a"


def test_most_specific_route_wins_whatever_the_order(
    make_upstream: MakeUpstream, start_gateway: StartGateway
) -> None:
    wide, param, literal = make_upstream("wide"), make_upstream("param"), make_upstream("lit")
    gateway = start_gateway(
        {
            "services": {
                "wide": service(wide.url),
                "param": service(param.url),
                "literal": service(literal.url),
            },
            "routes": [
                route("everything", "/{rest:path}", "wide"),
                route("orders-tree", "/v1/orders/{rest:path}", "wide"),
                route("order", "/v1/orders/{id}", "param"),
                route("search", "/v1/orders/search", "literal"),
            ],
        }
    )
    with gateway.client() as http:
        assert http.get("/v1/orders/42").json()["upstream"] == "param"
        assert http.get("/v1/orders/search").json()["upstream"] == "lit"
        assert http.get("/v1/orders/42/items").json()["upstream"] == "wide"
        assert http.get("/v1/other").json()["upstream"] == "wide"


def test_versions_go_to_different_services(
    make_upstream: MakeUpstream, start_gateway: StartGateway
) -> None:
    services = two_services(make_upstream)
    gateway = start_gateway(
        {
            "services": services,
            "routes": [
                route("v1", "/v1/{rest:path}", "a", strip_prefix="/v1"),
                route("v2", "/v2/{rest:path}", "b", strip_prefix="/v2"),
            ],
        }
    )
    with gateway.client() as http:
        one = http.get("/v1/orders/7").json()
        two = http.get("/v2/orders/7").json()
    assert (one["upstream"], one["path"]) == ("a", "/orders/7")
    assert (two["upstream"], two["path"]) == ("b", "/orders/7")


def test_path_parameters_fill_the_upstream_path(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(
        {
            "services": {"main": service(upstream.url)},
            "routes": [
                route("order", "/v1/orders/{id}", upstream_path="/orders/{id}"),
                route(
                    "legacy",
                    "/v2/orders/{id}/{rest:path}",
                    upstream_path="/api/orders/{id}/{rest}",
                ),
            ],
        }
    )
    with gateway.client() as http:
        assert http.get("/v1/orders/42").json()["path"] == "/orders/42"
        assert http.get("/v2/orders/42/items/7").json()["path"] == "/api/orders/42/items/7"
        assert http.get("/v2/orders/42/").json()["path"] == "/api/orders/42/"


def test_strip_prefix_removes_only_the_prefix(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(
        {
            "services": {"main": service(upstream.url)},
            "routes": [route("v1", "/v1/{rest:path}", strip_prefix="/v1")],
        }
    )
    with gateway.client() as http:
        assert http.get("/v1/users/7").json()["path"] == "/users/7"
        assert http.get("/v1/").json()["path"] == "/"
        assert http.get("/v1/v1/x").json()["path"] == "/v1/x"


def test_target_base_path_is_prepended(upstream: Upstream, start_gateway: StartGateway) -> None:
    gateway = start_gateway(
        {
            "services": {"main": service(upstream.url + "/base")},
            "routes": [route("v1", "/v1/{rest:path}", strip_prefix="/v1")],
        }
    )
    with gateway.client() as http:
        assert http.get("/v1/users/7").json()["path"] == "/base/users/7"


def test_query_string_is_passed_unchanged(upstream: Upstream, start_gateway: StartGateway) -> None:
    gateway = start_gateway(
        {
            "services": {"main": service(upstream.url)},
            "routes": [route("v1", "/v1/{rest:path}", strip_prefix="/v1")],
        }
    )
    query = "b=2&a=1&a=%20x%2Fy&empty=&flag&utf=%C3%A9&plus=1+2"
    status, echo = raw_get(gateway.port, f"/v1/search?{query}")
    assert status == 200
    assert echo["target"] == f"/search?{query}"


def test_dot_segments_cannot_escape_a_route_prefix(
    make_upstream: MakeUpstream, start_gateway: StartGateway
) -> None:
    public = make_upstream("public")
    gateway = start_gateway(
        {
            "services": {"public": service(public.url)},
            "routes": [route("files", "/public/{rest:path}", "public", strip_prefix="/public")],
        }
    )
    for target in (
        "/public/../admin/secret",
        "/public/a/../../admin/secret",
        "/public/%2e%2e/admin/secret",
        "/public/%2E%2E/%2e%2e/admin/secret",
        "/public/./../admin",
    ):
        with RawConnection(gateway.port) as conn:
            conn.send(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            check_raw_problem(conn.read_response(), 404, NOT_FOUND)
    assert public.count == 0

    status, echo = raw_get(gateway.port, "/public/a/./b/../c")
    assert status == 200
    assert echo["path"] == "/a/c"
    status, echo = raw_get(gateway.port, "/public/../public/c")
    assert status == 200
    assert echo["path"] == "/c"


def test_rewritten_path_keeps_parameters_percent_encoded(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(
        {
            "services": {"main": service(upstream.url)},
            "routes": [route("order", "/v1/orders/{id}", upstream_path="/orders/{id}/items")],
        }
    )
    status, echo = raw_get(gateway.port, "/v1/orders/a%20b")
    assert status == 200
    assert echo["raw_path"] == "/orders/a%20b/items"
    # An encoded slash could be data or a separator, depending on the backend: refused.
    status, _ = raw_get(gateway.port, "/v1/orders/..%2F..%2Fadmin")
    assert status == 400
    assert all(r.path.startswith("/orders/") for r in upstream.received)


def test_rewritten_path_cannot_inject_header_fields(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(
        {
            "services": {"main": service(upstream.url)},
            "routes": [route("order", "/v1/orders/{id}", upstream_path="/orders/{id}")],
        }
    )
    status, _ = raw_get(gateway.port, "/v1/orders/1%20HTTP%2F1.1%0D%0AX-Injected:%20yes%0D%0Ax:")
    assert status in (200, 400, 404)
    for received in upstream.received:
        assert received.header("x-injected") is None, received


def test_encoded_slash_in_a_path_is_refused_and_other_escapes_are_canonical(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(
        {
            "services": {"main": service(upstream.url)},
            "routes": [route("files", "/files/{rest:path}")],
        }
    )
    status, _ = raw_get(gateway.port, "/files/a%2Fb/c%20d")
    assert status == 400
    assert upstream.count == 0
    status, echo = raw_get(gateway.port, "/files/%61%2C/c%20d%7E")
    assert status == 200
    assert echo["raw_path"] == "/files/a,/c%20d~"
