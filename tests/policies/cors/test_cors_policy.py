"""The ``cors`` policy, through a real gateway and a real upstream over sockets, judged the way a
browser judges the answers (:mod:`tests.policies.cors.browser` writes the Fetch standard's CORS
check and CORS-preflight fetch): preflights answered by the gateway before any other policy,
even on a route whose methods do not list OPTIONS; the CORS fields on every response of the
route, Portico's own errors included; and the ways around it an attacker would try (``null``,
case, a trailing slash, ports, schemes, suffixes, two Origin fields, the upstream's own fields).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.policies.cors.browser import cors_check, preflight_passes, readable_fields
from tests.support.gateway import (
    RawConnection,
    RunningGateway,
    check_problem,
    check_raw_problem,
    route,
    running_gateway,
)
from tests.support.upstreams import Upstream, refused_url

from portico.identity.apikeys import generate_key

APP = "https://app.example.com"
KEY = generate_key()
REFUSED = "https://portico.dev/problems/cors-preflight-refused"

APP_CORS: dict[str, Any] = {
    "type": "cors",
    "origins": [APP, "https://*.partner.example", "http://localhost:3000"],
    "methods": ["GET", "PUT", "DELETE"],
    "headers": ["Content-Type", "X-Trace"],
    "credentials": True,
    "max_age": 600,
}
PUBLIC_CORS: dict[str, Any] = {"type": "cors", "origins": ["*"]}
OPEN_CORS: dict[str, Any] = {
    "type": "cors",
    "origins": [APP],
    "methods": ["*"],
    "headers": ["*"],
    "credentials": True,
}
AUTH: dict[str, Any] = {"type": "auth", "methods": ["api_key"]}


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream("cors")
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
) -> Iterator[RunningGateway]:
    config = {
        "services": {
            "main": {"targets": [upstream.url], "retries": 0},
            "dead": {"targets": [refused_url()], "retries": 0, "circuit_breaker": None},
            "shared": {"targets": [upstream.url], "retries": 0, "policies": [PUBLIC_CORS]},
        },
        "tenants": {
            "acme": {"consumers": {"shop": {"api_keys": [{"id": KEY.id, "sha256": KEY.sha256}]}}}
        },
        "routes": [
            # CORS before auth in the list, and after it: the preflight never meets auth.
            route("app", "/app/{rest:path}", strip_prefix="/app", policies=[APP_CORS, AUTH]),
            route("after-auth", "/guarded/{rest:path}", policies=[AUTH, APP_CORS]),
            route("read-only", "/things", methods=["GET", "PUT"], policies=[APP_CORS]),
            route("public", "/public/{rest:path}", strip_prefix="/public", policies=[PUBLIC_CORS]),
            route("open", "/open/{rest:path}", policies=[OPEN_CORS]),
            route("down", "/down", service="dead", policies=[APP_CORS]),
            route("small", "/small", max_body_size="16B", policies=[APP_CORS]),
            route("shared", "/shared/{rest:path}", service="shared", strip_prefix="/shared"),
            route("plain", "/plain", methods=["GET"]),
        ],
    }
    with running_gateway(tmp_path_factory.mktemp("gateway"), config) as running:
        yield running


@pytest.fixture
def http(gateway: RunningGateway) -> Iterator[httpx.Client]:
    with gateway.client() as client:
        yield client


def preflight(
    http: httpx.Client,
    path: str,
    origin: str,
    method: str,
    fields: str | None = None,
) -> httpx.Response:
    headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if fields is not None:
        headers["Access-Control-Request-Headers"] = fields
    return http.options(path, headers=headers)


def pairs(response: httpx.Response) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw]


def cors_fields(response: httpx.Response) -> list[str]:
    return [k for k, _ in pairs(response) if k.lower().startswith("access-control-")]


def varies_on_origin(response: httpx.Response) -> bool:
    return any(
        token.strip().lower() == "origin"
        for value in response.headers.get_list("vary")
        for token in value.split(",")
    )


# -- preflights ------------------------------------------------------------------------------


def test_an_allowed_preflight_lets_the_browser_send_the_request(
    http: httpx.Client, upstream: Upstream
) -> None:
    before = upstream.count
    response = preflight(http, "/app/orders/7", APP, "PUT", "content-type,x-trace")

    assert response.status_code == 204, response.text
    assert preflight_passes(APP, "PUT", ["content-type", "x-trace"], True, 204, pairs(response))
    assert response.headers["access-control-max-age"] == "600"
    assert "content-length" not in response.headers  # a 204 has none (RFC 9110 §8.6)
    assert response.headers["x-request-id"]
    assert upstream.count == before  # the upstream never sees a preflight


def test_a_preflight_is_answered_before_auth_wherever_auth_is_listed(http: httpx.Client) -> None:
    for path in ("/app/orders", "/guarded/orders"):
        response = preflight(http, path, APP, "DELETE")
        assert response.status_code == 204, (path, response.text)
        assert preflight_passes(APP, "DELETE", [], True, 204, pairs(response))
        # ... while the actual request without a key is refused by auth.
        assert http.delete(path, headers={"Origin": APP}).status_code == 401


def test_a_preflight_is_answered_on_a_route_whose_methods_do_not_list_options(
    http: httpx.Client,
) -> None:
    response = preflight(http, "/things", APP, "PUT", "content-type")
    assert response.status_code == 204, response.text
    assert preflight_passes(APP, "PUT", ["content-type"], True, 204, pairs(response))
    # A plain OPTIONS (no preflight) is still the route's business: it does not take OPTIONS.
    plain = http.options("/things", headers={"Origin": APP})
    check_problem(plain, 405, "https://portico.dev/problems/method-not-allowed")


def test_a_preflight_for_a_method_the_path_does_not_serve_is_routed_as_options(
    http: httpx.Client,
) -> None:
    response = preflight(http, "/things", APP, "DELETE")
    check_problem(response, 405, "https://portico.dev/problems/method-not-allowed")
    assert not cors_fields(response)
    assert not preflight_passes(APP, "DELETE", [], True, 405, pairs(response))


def test_a_preflight_to_a_route_without_cors_is_an_ordinary_options_request(
    http: httpx.Client,
) -> None:
    response = preflight(http, "/plain", APP, "GET")
    check_problem(response, 405, "https://portico.dev/problems/method-not-allowed")
    assert not cors_fields(response)


@pytest.mark.parametrize(
    ("origin", "method", "fields", "detail"),
    [
        ("https://evil.example", "PUT", None, "the origin is not allowed"),
        (APP, "PUT", "content-type, x-admin", "the header field x-admin is not allowed"),
        (APP, "PUT", "x-trace,authorization", "the header field authorization is not allowed"),
        (APP, "PUT", "x trace", "Access-Control-Request-Headers is not a list of field names"),
    ],
)
def test_a_disallowed_preflight_gets_a_clear_refusal_and_no_cors_fields(
    http: httpx.Client, origin: str, method: str, fields: str | None, detail: str
) -> None:
    response = preflight(http, "/app/orders", origin, method, fields)

    problem = check_problem(response, 403, REFUSED)
    assert detail in problem["detail"]
    assert not cors_fields(response)
    asked = [f.strip() for f in (fields or "").split(",") if f.strip()]
    assert not preflight_passes(origin, method, asked, True, 403, pairs(response))


def test_a_preflight_for_a_method_the_policy_does_not_allow_is_refused(
    http: httpx.Client,
) -> None:
    # /app serves every method, but its CORS policy allows GET, PUT and DELETE only.
    response = preflight(http, "/app/orders", APP, "PATCH")
    problem = check_problem(response, 403, REFUSED)
    assert problem["detail"] == "the method PATCH is not allowed from another origin"
    assert not cors_fields(response)


def test_wildcard_methods_and_headers_answer_what_was_asked_even_authorization(
    http: httpx.Client,
) -> None:
    response = preflight(http, "/open/x", APP, "PATCH", "authorization, x-anything")
    assert response.status_code == 204, response.text
    assert response.headers["access-control-allow-methods"] == "PATCH"
    assert response.headers["access-control-allow-headers"] == "authorization, x-anything"
    assert preflight_passes(
        APP, "PATCH", ["authorization", "x-anything"], True, 204, pairs(response)
    )


# -- the origin, as an attacker writes it ------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "null",
        "https://APP.example.com",
        "HTTPS://app.example.com",
        "https://app.example.com/",
        "https://app.example.com:443",
        "https://app.example.com:8443",
        "http://app.example.com",
        "https://app.example.com.evil.net",
        "https://evilapp.example.com",
        "https://app.example.co",
        "https://partner.example",
        "https://evilpartner.example",
        "https://x.partner.example.evil.net",
        "https://x.partner.example:8443",
        "http://x.partner.example",
        "http://localhost:3001",
        "http://localhost",
        "https://app.example.com, https://evil.example",
        "",
    ],
)
def test_an_origin_that_is_not_exactly_an_allowed_one_is_refused(
    http: httpx.Client, origin: str
) -> None:
    pre = preflight(http, "/app/orders", origin, "PUT")
    check_problem(pre, 403, REFUSED)
    assert not cors_fields(pre)

    actual = http.get("/app/orders", headers={"Origin": origin, "X-API-Key": KEY.key})
    assert actual.status_code == 200
    assert not cors_fields(actual)
    assert varies_on_origin(actual)
    assert not cors_check(origin, True, pairs(actual))


@pytest.mark.parametrize(
    "origin",
    ["https://a.partner.example", "https://a-b.c.partner.example", "http://localhost:3000"],
)
def test_pattern_and_port_origins_are_allowed_exactly(http: httpx.Client, origin: str) -> None:
    response = preflight(http, "/app/orders", origin, "PUT")
    assert response.status_code == 204
    assert preflight_passes(origin, "PUT", [], True, 204, pairs(response))


def test_two_origin_fields_match_nothing(gateway: RunningGateway) -> None:
    with RawConnection(gateway.port) as conn:
        conn.send(
            b"OPTIONS /app/orders HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\n"
            b"Origin: " + APP.encode() + b"\r\nAccess-Control-Request-Method: PUT\r\n\r\n"
        )
        refused = conn.read_response()
        check_raw_problem(refused, 403, REFUSED)
        assert not any(k.lower().startswith("access-control-") for k, _ in refused.headers)

        conn.send(
            b"GET /app/orders HTTP/1.1\r\nHost: t\r\nOrigin: " + APP.encode() + b"\r\n"
            b"Origin: https://evil.example\r\nX-API-Key: " + KEY.key.encode() + b"\r\n\r\n"
        )
        actual = conn.read_response()
        assert actual.status == 200
        assert actual.header("access-control-allow-origin") is None


# -- actual requests -------------------------------------------------------------------------


def test_an_allowed_origin_can_read_the_response_and_portico_s_fields(http: httpx.Client) -> None:
    response = http.get("/app/orders", headers={"Origin": APP, "X-API-Key": KEY.key})

    assert response.status_code == 200
    fields = pairs(response)
    assert cors_check(APP, True, fields)
    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["access-control-allow-credentials"] == "true"
    assert varies_on_origin(response)
    assert "x-request-id" in readable_fields(True, fields)
    exposed = response.headers["access-control-expose-headers"].lower().split(", ")
    assert {"ratelimit", "ratelimit-policy", "retry-after", "x-request-id"} <= set(exposed)


def test_a_request_without_origin_is_served_and_varies_on_origin(
    http: httpx.Client, upstream: Upstream
) -> None:
    response = http.get("/app/orders", headers={"X-API-Key": KEY.key})
    assert response.status_code == 200
    assert not cors_fields(response)
    assert varies_on_origin(response)


def test_a_disallowed_origin_s_request_still_reaches_the_upstream_but_cannot_be_read(
    http: httpx.Client, upstream: Upstream
) -> None:
    before = upstream.count
    response = http.get(
        "/app/orders", headers={"Origin": "https://evil.example", "X-API-Key": KEY.key}
    )
    assert response.status_code == 200
    assert upstream.count == before + 1
    assert not cors_check("https://evil.example", False, pairs(response))


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE"])
def test_every_method_of_the_route_gets_the_cors_fields(http: httpx.Client, method: str) -> None:
    response = http.request(method, "/app/x", headers={"Origin": APP, "X-API-Key": KEY.key})
    assert response.status_code == 200
    assert cors_check(APP, True, pairs(response))


def test_portico_s_own_errors_carry_the_cors_fields(http: httpx.Client) -> None:
    unauthorized = http.get("/app/orders", headers={"Origin": APP})
    check_problem(unauthorized, 401, "https://portico.dev/problems/unauthorized")
    assert cors_check(APP, True, pairs(unauthorized))
    assert "x-request-id" in readable_fields(True, pairs(unauthorized))

    guarded = http.get("/guarded/orders", headers={"Origin": APP})
    check_problem(guarded, 401, "https://portico.dev/problems/unauthorized")
    assert cors_check(APP, True, pairs(guarded))

    down = http.get("/down", headers={"Origin": APP})
    check_problem(down, 502, "https://portico.dev/problems/upstream-unavailable")
    assert cors_check(APP, True, pairs(down))


def test_the_gateway_s_refusals_before_the_policies_carry_the_cors_fields(
    gateway: RunningGateway,
) -> None:
    origin = b"Origin: " + APP.encode() + b"\r\n"
    refusals = [
        # Over the route's limit by Content-Length, and while a chunked body streams.
        (b"POST /small HTTP/1.1\r\nHost: t\r\n" + origin + b"Content-Length: 17\r\n\r\n", 413),
        (
            b"POST /small HTTP/1.1\r\nHost: t\r\n" + origin + b"Transfer-Encoding: chunked\r\n\r\n"
            b"20\r\n" + b"x" * 32 + b"\r\n0\r\n\r\n",
            413,
        ),
        # An upgrade the route does not relay.
        (
            b"GET /small HTTP/1.1\r\nHost: t\r\n"
            + origin
            + b"Connection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            400,
        ),
    ]
    for request, status in refusals:
        with RawConnection(gateway.port) as conn:
            conn.send(request)
            response = conn.read_response()
        assert response.status == status, response
        assert response.header("access-control-allow-origin") == APP, response
        assert cors_check(APP, True, response.headers)


def test_the_upstream_s_own_cors_fields_are_replaced_by_the_route_s(http: httpx.Client) -> None:
    target = (
        "/app/headers?set=Access-Control-Allow-Origin:%20*"
        "&set=Access-Control-Allow-Credentials:%20true&set=Vary:%20Accept-Encoding"
    )
    evil = http.get(target, headers={"Origin": "https://evil.example", "X-API-Key": KEY.key})
    assert evil.status_code == 200
    assert not cors_fields(evil)
    assert not cors_check("https://evil.example", False, pairs(evil))
    assert varies_on_origin(evil)

    app = http.get(target, headers={"Origin": APP, "X-API-Key": KEY.key})
    assert app.headers.get_list("access-control-allow-origin") == [APP]
    assert cors_check(APP, True, pairs(app))


def test_any_origin_without_credentials_is_one_answer_for_everyone(http: httpx.Client) -> None:
    for origin in (APP, "https://elsewhere.example", "null"):
        response = http.get("/public/x", headers={"Origin": origin})
        assert response.headers["access-control-allow-origin"] == "*"
        assert cors_check(origin, False, pairs(response))
        # With credentials a browser refuses '*': cookies never go to a wildcard.
        assert not cors_check(origin, True, pairs(response))
        assert not varies_on_origin(response)
    pre = preflight(http, "/public/x", "https://elsewhere.example", "POST", "x-custom")
    check_problem(pre, 403, REFUSED)  # headers: none allowed by default
    pre = preflight(http, "/public/x", "https://elsewhere.example", "POST")
    assert pre.status_code == 204
    assert preflight_passes("https://elsewhere.example", "POST", [], False, 204, pairs(pre))


def test_a_service_s_cors_policy_covers_its_routes(http: httpx.Client) -> None:
    response = http.get("/shared/x", headers={"Origin": APP})
    assert cors_check(APP, False, pairs(response))
    pre = preflight(http, "/shared/x", APP, "GET")
    assert pre.status_code == 204
