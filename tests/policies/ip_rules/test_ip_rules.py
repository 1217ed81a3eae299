"""IP allow and deny lists, per route (the ``ip-rules`` policy) and global (``gateway.ip_rules``),
over real IPv4 and IPv6 sockets, with the client address resolved through trusted proxies."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.gateway import RunningGateway, check_problem, client, running_gateway
from tests.support.upstreams import Upstream

from portico.assembly import load_config_text
from portico.config.errors import ConfigError

IP_FORBIDDEN = "https://portico.dev/problems/ip-forbidden"


class Site:
    """A gateway in front of one upstream, reached over IPv4 or IPv6 loopback."""

    def __init__(self, gateway: RunningGateway, upstream: Upstream, host: str) -> None:
        self.gateway = gateway
        self.upstream = upstream
        self.http = client(f"http://{host}:{gateway.port}")

    def get(self, path: str = "/admin/users", **headers: str) -> httpx.Response:
        return self.http.get(path, headers=headers)


StartSite = Callable[..., Site]


@pytest.fixture
def start_site(tmp_path: Path) -> Iterator[StartSite]:
    """``start_site(route_rules, listen=..., **gateway_settings)``: routes ``/admin/...`` (with
    the ``ip-rules`` policy when rules are given) and ``/public/...`` (without)."""
    with contextlib.ExitStack() as stack:
        count = 0

        def start(
            rules: dict[str, Any] | None = None, listen: str = "127.0.0.1:0", **gateway: Any
        ) -> Site:
            nonlocal count
            count += 1
            upstream = Upstream("ip-rules")
            stack.callback(upstream.close)
            admin: dict[str, Any] = {
                "name": "admin",
                "match": {"path": "/admin/{rest:path}"},
                "service": "main",
            }
            if rules is not None:
                admin["policies"] = [{"type": "ip-rules", **rules}]
            config = {
                "gateway": {"listen": listen, **gateway},
                "services": {"main": {"targets": [upstream.url]}},
                "routes": [
                    admin,
                    {"name": "public", "match": {"path": "/public/{rest:path}"}, "service": "main"},
                ],
            }
            directory = tmp_path / f"gateway-{count}"
            directory.mkdir()
            gateway_ = stack.enter_context(running_gateway(directory, config))
            host = "[::1]" if listen.startswith("[") else "127.0.0.1"
            site = Site(gateway_, upstream, host)
            stack.callback(site.http.close)
            return site

        yield start


def check_forbidden(response: httpx.Response) -> None:
    check_problem(response, 403, IP_FORBIDDEN)


# -- per route ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "allowed"),
    [
        pytest.param({"allow": ["127.0.0.1/32"]}, True, id="allowed-network"),
        pytest.param({"allow": ["127.0.0.1"]}, True, id="allowed-address"),
        pytest.param({"allow": ["10.0.0.0/8", "192.168.0.0/16"]}, False, id="not-in-allow-list"),
        pytest.param({"deny": ["127.0.0.0/8"]}, False, id="denied"),
        pytest.param({"deny": ["10.0.0.0/8"]}, True, id="not-denied"),
        pytest.param({"allow": ["127.0.0.0/8"], "deny": ["127.0.0.1"]}, False, id="deny-wins"),
    ],
)
def test_route_rules_decide_for_the_ipv4_client(
    start_site: StartSite, rules: dict[str, Any], allowed: bool
) -> None:
    site = start_site(rules)

    response = site.get()

    if allowed:
        assert response.status_code == 200
        assert site.upstream.count == 1
    else:
        check_forbidden(response)
        assert site.upstream.count == 0


@pytest.mark.parametrize(
    ("rules", "allowed"),
    [
        pytest.param({"allow": ["::1/128"]}, True, id="allowed-network"),
        pytest.param({"allow": ["::1"]}, True, id="allowed-address"),
        pytest.param({"allow": ["2001:db8::/32"]}, False, id="not-in-allow-list"),
        pytest.param({"allow": ["127.0.0.0/8"]}, False, id="ipv4-list-only"),
        pytest.param({"deny": ["::1"]}, False, id="denied"),
        pytest.param({"deny": ["2001:db8::/32", "127.0.0.1"]}, True, id="not-denied"),
    ],
)
def test_route_rules_decide_for_the_ipv6_client(
    start_site: StartSite, rules: dict[str, Any], allowed: bool
) -> None:
    site = start_site(rules, listen="[::1]:0")

    response = site.get()

    if allowed:
        assert response.status_code == 200
        assert site.upstream.received[0].header("x-forwarded-for") == "::1"
    else:
        check_forbidden(response)
        assert site.upstream.count == 0


def test_route_rules_leave_other_routes_alone(start_site: StartSite) -> None:
    site = start_site({"deny": ["127.0.0.1"]})

    check_forbidden(site.get("/admin/users"))
    assert site.get("/public/catalog").status_code == 200
    assert site.upstream.paths() == ["/public/catalog"]


# -- client address through proxies ------------------------------------------------------------


@pytest.mark.parametrize(
    ("forwarded_for", "allowed"),
    [
        pytest.param("203.0.113.7", False, id="denied-client"),
        pytest.param("198.51.100.1", True, id="other-client"),
        # Only the nearest untrusted hop is believed: what the client itself wrote is not.
        pytest.param("203.0.113.7, 198.51.100.1", True, id="client-written-hop-ignored"),
        pytest.param("198.51.100.1, 203.0.113.7", False, id="nearest-untrusted-hop-decides"),
    ],
)
def test_forwarded_for_from_a_trusted_proxy_names_the_client(
    start_site: StartSite, forwarded_for: str, allowed: bool
) -> None:
    site = start_site({"deny": ["203.0.113.0/24"]}, trusted_proxies=["127.0.0.1/32"])

    response = site.get(**{"X-Forwarded-For": forwarded_for})

    if allowed:
        assert response.status_code == 200
    else:
        check_forbidden(response)


def test_forwarded_for_through_a_trusted_ipv6_proxy_names_an_ipv6_client(
    start_site: StartSite,
) -> None:
    site = start_site({"allow": ["2001:db8::/32"]}, listen="[::1]:0", trusted_proxies=["::1/128"])

    assert site.get(**{"X-Forwarded-For": "2001:db8::7"}).status_code == 200
    check_forbidden(site.get(**{"X-Forwarded-For": "2001:db9::7"}))
    check_forbidden(site.get())


@pytest.mark.parametrize("trusted_proxies", [[], ["10.0.0.0/8"]], ids=["none", "others"])
def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    start_site: StartSite, trusted_proxies: list[str]
) -> None:
    spoofed = {"X-Forwarded-For": "198.51.100.1"}
    allow_spoofed = start_site({"allow": ["198.51.100.0/24"]}, trusted_proxies=trusted_proxies)
    deny_peer = start_site({"deny": ["127.0.0.1"]}, trusted_proxies=trusted_proxies)

    check_forbidden(allow_spoofed.get(**spoofed))
    check_forbidden(deny_peer.get(**spoofed))
    assert allow_spoofed.upstream.count == deny_peer.upstream.count == 0


# -- global rules ------------------------------------------------------------------------------


def test_global_rules_refuse_before_routing(start_site: StartSite) -> None:
    site = start_site(ip_rules={"deny": ["127.0.0.1"]})

    check_forbidden(site.get("/public/catalog"))
    # Even a path no route matches is refused as forbidden, not reported as missing.
    check_forbidden(site.get("/no/such/route"))
    assert site.upstream.count == 0


def test_global_allow_list_admits_ipv6_client_and_refuses_ipv4(start_site: StartSite) -> None:
    ipv6 = start_site(listen="[::1]:0", ip_rules={"allow": ["::1/128"]})
    ipv4 = start_site(ip_rules={"allow": ["::1/128"]})

    assert ipv6.get("/public/catalog").status_code == 200
    check_forbidden(ipv4.get("/public/catalog"))


def test_global_and_route_rules_both_apply(start_site: StartSite) -> None:
    site = start_site(
        {"deny": ["203.0.113.0/24"]},
        trusted_proxies=["127.0.0.1/32"],
        ip_rules={"deny": ["192.0.2.0/24"]},
    )

    check_forbidden(site.get("/public/catalog", **{"X-Forwarded-For": "192.0.2.1"}))
    check_forbidden(site.get("/admin/users", **{"X-Forwarded-For": "203.0.113.1"}))
    assert site.get("/public/catalog", **{"X-Forwarded-For": "203.0.113.1"}).status_code == 200
    assert site.get("/admin/users", **{"X-Forwarded-For": "198.51.100.1"}).status_code == 200


# -- configuration -----------------------------------------------------------------------------


def _route_with(policy: dict[str, Any]) -> str:
    return json.dumps(
        {
            "services": {"main": {"targets": ["http://127.0.0.1:9"]}},
            "routes": [
                {
                    "name": "admin",
                    "match": {"path": "/admin"},
                    "service": "main",
                    "policies": [policy],
                }
            ],
        }
    )


@pytest.mark.parametrize(
    ("policy", "path", "message"),
    [
        pytest.param(
            {"type": "ip-rules", "allow": ["10.0.0.0/33"]},
            "routes[0].policies[0].allow[0]",
            "is not an IP address or network",
            id="bad-prefix",
        ),
        pytest.param(
            {"type": "ip-rules", "deny": ["2001:db8::/129"]},
            "routes[0].policies[0].deny[0]",
            "is not an IP address or network",
            id="bad-ipv6-prefix",
        ),
        pytest.param(
            {"type": "ip-rules", "deny": ["office"]},
            "routes[0].policies[0].deny[0]",
            "is not an IP address or network",
            id="name",
        ),
        pytest.param(
            {"type": "ip-rules"}, "routes[0].policies[0]", "give allow, deny or both", id="empty"
        ),
        pytest.param(
            {"type": "ip-rules", "allow": ["10.0.0.0/8"], "permit": ["10.0.0.1"]},
            "routes[0].policies[0].permit",
            "unknown key 'permit'; expected one of: allow, deny",
            id="unknown-key",
        ),
    ],
)
def test_invalid_route_rules_are_config_errors_at_their_line(
    policy: dict[str, Any], path: str, message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config_text(_route_with(policy), "portico.yaml")

    issue = refused.value.issues[0]
    assert issue.path == path, refused.value.issues
    assert message in issue.message
    assert issue.line is not None


def test_listen_accepts_a_bracketed_ipv6_address() -> None:
    config = load_config_text(json.dumps({"gateway": {"listen": "[::1]:8080"}}), "portico.yaml")

    assert (config.gateway.listen.host, config.gateway.listen.port) == ("::1", 8080)
