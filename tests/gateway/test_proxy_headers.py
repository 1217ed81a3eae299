"""What the gateway does to header fields on the way upstream and back."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from tests.gateway.conftest import StartGateway
from tests.support.gateway import RawConnection, RunningGateway, proxy_config, route, service
from tests.support.upstreams import Upstream

HEX32 = re.compile(r"^[0-9a-f]{32}$")
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def fields(echo: dict[str, Any], name: str) -> list[str]:
    """Every value of one header field the upstream received, in order."""
    return [v for k, v in echo["headers"] if k.lower() == name.lower()]


def field(echo: dict[str, Any], name: str) -> str | None:
    values = fields(echo, name)
    assert len(values) <= 1, f"{name} sent {len(values)} times: {values}"
    return values[0] if values else None


def echo_via(gateway: RunningGateway, headers: dict[str, str], path: str = "/echo") -> Any:
    with gateway.client() as http:
        response = http.get(path, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_hop_by_hop_request_fields_are_not_forwarded(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port) as conn:
        conn.send(
            b"GET /echo HTTP/1.1\r\nHost: api.test\r\n"
            b"Connection: keep-alive, X-Private-Hop, x-second-hop\r\n"
            b"Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-Checksum\r\n"
            b"Upgrade: h2c\r\nProxy-Authorization: Basic c2VjcmV0\r\n"
            b"Proxy-Connection: keep-alive\r\n"
            b"X-Private-Hop: secret\r\nX-Second-Hop: also\r\nX-End-To-End: kept\r\n\r\n"
        )
        echo = conn.read_response().json()
    received = {k.lower() for k, _ in echo["headers"]}
    for name in (
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "x-private-hop",
        "x-second-hop",
    ):
        assert name not in received, f"{name} reached the upstream"
    assert field(echo, "x-end-to-end") == "kept"


def test_hop_by_hop_response_fields_are_not_returned(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    sets = [
        "Connection: keep-alive, X-Upstream-Hop",
        "Keep-Alive: timeout=5, max=100",
        "X-Upstream-Hop: internal",
        "Trailer: X-Checksum",
        "Upgrade: h2c",
        "Proxy-Connection: keep-alive",
        "X-End-To-End: kept",
    ]
    query = "&".join("set=" + quote(s) for s in sets)
    with RawConnection(gateway.port) as conn:
        conn.send(f"GET /headers?{query} HTTP/1.1\r\nHost: api.test\r\n\r\n".encode())
        response = conn.read_response()
        names = response.header_names()
        for name in (
            "connection",
            "keep-alive",
            "x-upstream-hop",
            "trailer",
            "upgrade",
            "proxy-connection",
        ):
            assert name not in names, f"{name} reached the client: {response.headers}"
        assert response.header("x-end-to-end") == "kept"
        # The client connection is still a normal keep-alive connection.
        conn.send(b"GET /echo HTTP/1.1\r\nHost: api.test\r\n\r\n")
        assert conn.read_response().status == 200


def test_forwarding_fields_describe_the_client(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    echo = echo_via(gateway, {"Host": "api.example.com:8080"})
    assert field(echo, "x-forwarded-for") == "127.0.0.1"
    assert field(echo, "x-forwarded-proto") == "http"
    assert field(echo, "x-forwarded-host") == "api.example.com:8080"
    assert field(echo, "forwarded") == 'for=127.0.0.1;host="api.example.com:8080";proto=http'


def test_forwarding_fields_from_an_untrusted_peer_are_replaced(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    echo = echo_via(
        gateway,
        {
            "Host": "api.example.com",
            "X-Forwarded-For": "203.0.113.9, 10.0.0.1",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "evil.example",
            "X-Forwarded-Port": "443",
            "Forwarded": "for=203.0.113.9;proto=https",
        },
    )
    assert field(echo, "x-forwarded-for") == "127.0.0.1"
    assert field(echo, "x-forwarded-proto") == "http"
    assert field(echo, "x-forwarded-host") == "api.example.com"
    assert field(echo, "x-forwarded-port") is None
    assert field(echo, "forwarded") == 'for=127.0.0.1;host="api.example.com";proto=http'


def test_forwarding_fields_from_a_trusted_proxy_are_kept_and_extended(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    config = proxy_config(upstream.url)
    config["gateway"] = {"trusted_proxies": ["127.0.0.1/32"]}
    gateway = start_gateway(config)
    echo = echo_via(
        gateway,
        {
            "Host": "internal-lb:8080",
            "X-Forwarded-For": "203.0.113.9",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "api.example.com",
            "Forwarded": 'for=203.0.113.9;host="api.example.com";proto=https',
        },
    )
    assert field(echo, "x-forwarded-for") == "203.0.113.9, 127.0.0.1"
    assert field(echo, "x-forwarded-proto") == "https"
    assert field(echo, "x-forwarded-host") == "api.example.com"
    forwarded = field(echo, "forwarded")
    assert forwarded is not None
    assert forwarded.startswith('for=203.0.113.9;host="api.example.com";proto=https, for=127.0.0.1')


def test_request_id_is_generated_when_absent(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with gateway.client() as http:
        first = http.get("/echo")
        second = http.get("/echo")
    request_id = first.headers["x-request-id"]
    assert HEX32.match(request_id)
    assert field(first.json(), "x-request-id") == request_id
    assert second.headers["x-request-id"] != request_id


def test_request_id_from_the_client_is_propagated(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with gateway.client() as http:
        response = http.get("/echo", headers={"X-Request-ID": "client-req-42"})
    assert response.headers["x-request-id"] == "client-req-42"
    assert fields(response.json(), "x-request-id")[-1] == "client-req-42"


def test_upstream_receives_exactly_one_request_id(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with gateway.client() as http:
        response = http.get("/echo", headers={"X-Request-ID": "client-req-42"})
    assert fields(response.json(), "x-request-id") == ["client-req-42"]


def test_unusable_request_id_from_the_client_is_replaced(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with gateway.client() as http:
        response = http.get("/echo", headers={"X-Request-ID": "has spaces and {braces}"})
    request_id = response.headers["x-request-id"]
    assert HEX32.match(request_id)
    assert fields(response.json(), "x-request-id") == [request_id]


def test_request_id_header_name_is_configurable(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    config = proxy_config(upstream.url)
    config["gateway"] = {"request_id_header": "X-Correlation-ID"}
    gateway = start_gateway(config)
    with gateway.client() as http:
        response = http.get("/echo", headers={"X-Correlation-ID": "corr-1"})
    assert response.headers["x-correlation-id"] == "corr-1"
    assert fields(response.json(), "x-correlation-id")[-1] == "corr-1"
    assert "x-request-id" not in response.headers


def test_traceparent_keeps_the_trace_id_with_a_new_span_id(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    echo = echo_via(gateway, {"traceparent": incoming})
    outgoing = field(echo, "traceparent")
    assert outgoing is not None
    m = TRACEPARENT.match(outgoing)
    assert m is not None, outgoing
    assert m.group(1) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert m.group(2) != "00f067aa0ba902b7"
    assert m.group(3) == "01"


def test_traceparent_span_id_is_new(upstream: Upstream, start_gateway: StartGateway) -> None:
    """The same as above, looking only at the field Portico adds (the last one)."""
    gateway = start_gateway(proxy_config(upstream.url))
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    echo = echo_via(gateway, {"traceparent": incoming})
    m = TRACEPARENT.match(fields(echo, "traceparent")[-1])
    assert m is not None
    assert m.group(1) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert m.group(2) != "00f067aa0ba902b7"
    assert m.group(3) == "00"


def test_traceparent_is_generated_when_absent_or_invalid(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    echo = echo_via(gateway, {})
    m = TRACEPARENT.match(field(echo, "traceparent") or "")
    assert m is not None
    assert m.group(1) != "0" * 32 and m.group(2) != "0" * 16
    # A generated trace reuses the generated request id, so logs and traces share one id.
    assert m.group(1) == field(echo, "x-request-id")

    invalid = "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
    echo = echo_via(gateway, {"traceparent": invalid})
    m = TRACEPARENT.match(fields(echo, "traceparent")[-1])
    assert m is not None and m.group(1) != "0" * 32


def test_client_cannot_send_portico_identity_headers(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    echo = echo_via(
        gateway,
        {
            "X-Portico-Consumer": "admin",
            "x-portico-tenant": "acme",
            "X-PORTICO-SCOPES": "everything",
            "X-Portico-Auth-Method": "api_key",
        },
    )
    assert not [k for k, _ in echo["headers"] if k.lower().startswith("x-portico-")]


def test_host_is_rewritten_to_the_target(upstream: Upstream, start_gateway: StartGateway) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    echo = echo_via(gateway, {"Host": "api.example.com"})
    assert field(echo, "host") == f"127.0.0.1:{upstream.port}"


def test_preserve_host_sends_the_client_host(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(
        {
            "services": {"main": service(upstream.url)},
            "routes": [
                route("kept", "/kept/{rest:path}", preserve_host=True),
                route("rewritten", "/{rest:path}"),
            ],
        }
    )
    assert field(echo_via(gateway, {"Host": "api.example.com"}, "/kept/x"), "host") == (
        "api.example.com"
    )
    assert field(echo_via(gateway, {"Host": "api.example.com"}, "/x"), "host") == (
        f"127.0.0.1:{upstream.port}"
    )


def test_end_to_end_fields_and_their_order_are_kept(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port) as conn:
        conn.send(
            b"GET /echo HTTP/1.1\r\nHost: a\r\nAccept: text/plain\r\nX-Multi: one\r\n"
            b"Cookie: a=1\r\nX-Multi: two\r\nAuthorization: Bearer t0k3n\r\n\r\n"
        )
        echo = conn.read_response().json()
    assert fields(echo, "x-multi") == ["one", "two"]
    assert field(echo, "authorization") == "Bearer t0k3n"
    assert field(echo, "cookie") == "a=1"
    assert field(echo, "accept") == "text/plain"


def test_repeated_response_fields_reach_the_client(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    query = "&".join(
        "set=" + quote(s) for s in ("Set-Cookie: a=1; Path=/", "Set-Cookie: b=2", "Vary: Accept")
    )
    with RawConnection(gateway.port) as conn:
        conn.send(f"GET /headers?{query} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        response = conn.read_response()
    assert [v for k, v in response.headers if k.lower() == "set-cookie"] == ["a=1; Path=/", "b=2"]
    assert response.header("vary") == "Accept"
