"""The ``cache`` policy with the in-process state, through a real gateway over sockets: what is
stored, what is served, and the ways around it an attacker would try (unkeyed headers, path and
query spellings, another consumer's responses, credentials, HEAD against GET)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.policies.cache.origin import Origin
from tests.support.gateway import (
    RawConnection,
    RunningGateway,
    check_problem,
    route,
    running_gateway,
)

from portico.assembly import load_config_text
from portico.config.errors import ConfigError
from portico.identity.apikeys import NewApiKey, generate_key
from portico.operations.metrics import exposition, registry

PROBLEMS = "https://portico.dev/problems/"
KEYS: dict[str, NewApiKey] = {name: generate_key() for name in ("billing", "support", "shop")}


def key_entry(name: str) -> dict[str, Any]:
    return {"id": KEYS[name].id, "sha256": KEYS[name].sha256}


def as_consumer(name: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[name].key}


def cache(**settings: Any) -> dict[str, Any]:
    return {"type": "cache", **settings}


def auth() -> dict[str, Any]:
    return {"type": "auth", "methods": ["api_key"]}


def gateway_config(origin: Origin) -> dict[str, Any]:
    return {
        "services": {
            "main": {"targets": [origin.url], "retries": 0},
            "gone": {"targets": ["http://127.0.0.1:9"], "retries": 0},
        },
        "tenants": {
            "acme": {
                "consumers": {
                    "billing": {"api_keys": [key_entry("billing")]},
                    "support": {"api_keys": [key_entry("support")]},
                }
            },
            "globex": {"consumers": {"shop": {"api_keys": [key_entry("shop")]}}},
        },
        "routes": [
            route("open", "/open/{rest:path}", policies=[cache()]),
            route("small", "/small/{rest:path}", policies=[cache(max_body_size=1000)]),
            route("mine", "/mine/{rest:path}", policies=[auth(), cache()]),
            route("team", "/team/{rest:path}", policies=[auth(), cache(scope="tenant")]),
            route("everyone", "/everyone/{rest:path}", policies=[auth(), cache(scope="public")]),
            route("capped", "/capped/{rest:path}", policies=[cache(max_ttl="5s")]),
            route("keyed", "/keyed/{rest:path}", policies=[cache(key_headers=["X-Region"])]),
            route("broken", "/broken/{rest:path}", service="gone", policies=[cache()]),
        ],
    }


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, origin: Origin) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("cache"), gateway_config(origin)) as running:
        yield running


@pytest.fixture
def http(gateway: RunningGateway) -> Iterator[httpx.Client]:
    with gateway.client() as client:
        yield client


_unique = iter(range(1_000_000))


def fresh(prefix: str = "/open") -> str:
    """A path no other test used: each test starts with an empty cache for it."""
    return f"{prefix}/r{next(_unique)}"


def status_of(response: httpx.Response) -> str:
    return response.headers.get("cache-status", "")


def is_hit(response: httpx.Response) -> bool:
    return status_of(response).startswith("Portico; hit")


def served_by_upstream(origin: Origin, http: httpx.Client, url: str, **kwargs: Any) -> bool:
    """Whether the request reached the upstream (the cache did not answer it)."""
    before = origin.count
    http.get(url, **kwargs)
    return origin.count > before


# -- what is stored and served -------------------------------------------------------------------


def test_second_get_is_answered_from_the_cache_with_age_and_cache_status(
    origin: Origin, http: httpx.Client
) -> None:
    url = fresh() + "?h=Cache-Control:max-age%3D60"
    first = http.get(url)
    assert status_of(first) == "Portico; fwd=miss; stored"
    assert "age" not in first.headers
    before = origin.count
    second = http.get(url)
    assert origin.count == before
    assert second.status_code == 200
    assert second.json() == first.json()
    assert status_of(second).startswith("Portico; hit; ttl=")
    assert 0 < int(status_of(second).rsplit("=", 1)[1]) <= 60
    assert int(second.headers["age"]) >= 0
    assert second.headers["cache-control"] == "max-age=60"
    assert second.headers["x-request-id"] != first.headers["x-request-id"]


def test_head_is_answered_from_a_stored_get(
    origin: Origin, gateway: RunningGateway, http: httpx.Client
) -> None:
    url = fresh()
    stored = http.get(url)
    before = origin.count
    with RawConnection(gateway.port) as conn:
        conn.send(f"HEAD {url} HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n\r\n".encode())
        head = conn.read_response(head_only=True)
    assert origin.count == before
    assert head.status == 200
    assert head.header("cache-status").startswith("Portico; hit")
    assert head.header("content-length") == str(len(stored.content))
    assert head.body == b""


def test_a_head_does_not_store_a_response_for_get(origin: Origin, http: httpx.Client) -> None:
    url = fresh()
    head = http.head(url)
    assert status_of(head) == "Portico; fwd=miss"
    assert served_by_upstream(origin, http, url)
    assert not served_by_upstream(origin, http, url)


def test_get_after_a_stored_get_never_gets_a_body_for_head(
    gateway: RunningGateway, http: httpx.Client
) -> None:
    # The HEAD answered from the cache must leave the connection usable: no body bytes follow.
    url = fresh()
    http.get(url)
    with RawConnection(gateway.port) as conn:
        host = f"Host: 127.0.0.1:{gateway.port}\r\n"
        conn.send(f"HEAD {url} HTTP/1.1\r\n{host}\r\nGET {url} HTTP/1.1\r\n{host}\r\n".encode())
        head = conn.read_response(head_only=True)
        get = conn.read_response()
    assert head.body == b""
    assert json.loads(get.body)["method"] == "GET"


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        (["Cache-Control:no-store"], "no-store"),
        (["Cache-Control:private, max-age=60"], "private"),
        (["Cache-Control:no-cache"], "no-cache"),
        (["Cache-Control:max-age=0"], "max-age=0"),
        (["Cache-Control:max-age=60, no-store"], "no-store among others"),
        (["Cache-Control:max-age=60", "Cache-Control:no-store"], "no-store in a second field"),
        (["CACHE-CONTROL:NO-STORE"], "upper case"),
        (["Set-Cookie:session=abc"], "Set-Cookie"),
        (["Vary:*"], "Vary: *"),
        (["Vary:Accept, *"], "Vary with *"),
        (["Cache-Control:max-age=60", "Age:60"], "already as old as its lifetime"),
        (["Cache-Control:max-age=60", "Age:x"], "an Age that is not a number"),
        (["Cache-Control:max-age=abc"], "a max-age that is not a number"),
        (["Expires:0"], "an invalid Expires"),
        (["Expires:Thu, 01 Jan 1970 00:00:00 GMT"], "an Expires in the past"),
    ],
)
def test_responses_that_forbid_or_cannot_be_stored_are_not(
    fields: list[str], why: str, origin: Origin, http: httpx.Client
) -> None:
    url = fresh() + "?" + str(httpx.QueryParams([("h", f) for f in fields]))
    first = http.get(url)
    assert status_of(first) == "Portico; fwd=miss", why
    assert served_by_upstream(origin, http, url), why


@pytest.mark.parametrize("status", [201, 206, 302, 400, 403, 429, 500, 502, 503])
def test_statuses_outside_the_list_are_not_stored(
    status: int, origin: Origin, http: httpx.Client
) -> None:
    url = fresh() + f"?status={status}&h=Cache-Control:max-age%3D60"
    http.get(url)
    assert served_by_upstream(origin, http, url)


def test_a_404_is_stored_as_rfc_9110_allows(origin: Origin, http: httpx.Client) -> None:
    url = fresh() + "?status=404"
    assert status_of(http.get(url)) == "Portico; fwd=miss; stored"
    assert not served_by_upstream(origin, http, url)


def test_portico_own_errors_are_never_stored(http: httpx.Client) -> None:
    url = fresh("/broken")
    for _ in range(2):
        response = http.get(url)
        assert response.status_code == 502
        assert status_of(response) == "Portico; fwd=miss"


def test_s_maxage_wins_over_max_age_for_a_shared_cache(origin: Origin, http: httpx.Client) -> None:
    url = fresh() + "?h=Cache-Control:max-age%3D0,%20s-maxage%3D60"
    assert status_of(http.get(url)) == "Portico; fwd=miss; stored"
    assert not served_by_upstream(origin, http, url)


def test_age_from_an_upstream_cache_shortens_the_lifetime(http: httpx.Client) -> None:
    url = fresh() + "?h=Cache-Control:max-age%3D60&h=Age:50"
    http.get(url)
    hit = http.get(url)
    assert is_hit(hit)
    assert int(hit.headers["age"]) >= 50
    assert int(status_of(hit).rsplit("=", 1)[1]) <= 10


def test_max_ttl_caps_what_the_upstream_asks_for(http: httpx.Client) -> None:
    url = fresh("/capped") + "?h=Cache-Control:max-age%3D3600"
    http.get(url)
    hit = http.get(url)
    assert is_hit(hit)
    assert int(status_of(hit).rsplit("=", 1)[1]) <= 5


def test_a_body_over_the_limit_streams_through_unstored(origin: Origin, http: httpx.Client) -> None:
    url = fresh("/small") + "?size=5000"
    first = http.get(url)
    assert first.status_code == 200
    assert len(first.json()["padding"]) == 5000
    assert status_of(first) == "Portico; fwd=miss; detail=too-large"
    assert served_by_upstream(origin, http, url)
    small = fresh("/small")
    http.get(small)
    assert not served_by_upstream(origin, http, small)


# -- the request's own Cache-Control -------------------------------------------------------------


def test_request_no_cache_goes_upstream_and_refreshes_the_stored_response(
    origin: Origin, http: httpx.Client
) -> None:
    url = fresh()
    first = http.get(url)
    refreshed = http.get(url, headers={"Cache-Control": "no-cache"})
    assert status_of(refreshed) == "Portico; fwd=request; stored"
    assert refreshed.json()["n"] > first.json()["n"]
    hit = http.get(url)
    assert is_hit(hit)
    assert hit.json()["n"] == refreshed.json()["n"]


@pytest.mark.parametrize(
    "fields",
    [{"Cache-Control": "max-age=0"}, {"Pragma": "no-cache"}, {"Cache-Control": "No-Cache"}],
)
def test_requests_asking_for_the_origin_get_it(
    fields: dict[str, str], origin: Origin, http: httpx.Client
) -> None:
    url = fresh()
    http.get(url)
    assert served_by_upstream(origin, http, url, headers=fields)


def test_request_no_store_keeps_the_response_out_of_the_cache(
    origin: Origin, http: httpx.Client
) -> None:
    url = fresh()
    http.get(url, headers={"Cache-Control": "no-store"})
    assert served_by_upstream(origin, http, url)


@pytest.mark.parametrize(
    "fields",
    [
        {"If-None-Match": '"x"'},
        {"If-Modified-Since": "Thu, 01 Jan 2026 00:00:00 GMT"},
        {"Range": "bytes=0-1"},
    ],
)
def test_conditional_and_range_requests_go_to_the_origin(
    fields: dict[str, str], origin: Origin, http: httpx.Client
) -> None:
    url = fresh()
    http.get(url)
    assert served_by_upstream(origin, http, url, headers=fields)


# -- keys: what must share an entry, what must not -----------------------------------------------


def test_query_order_and_escapes_of_unreserved_characters_share_one_entry(
    origin: Origin, http: httpx.Client
) -> None:
    path = fresh()
    http.get(path + "?a=1&b=2")
    assert not served_by_upstream(origin, http, path + "?b=2&a=1")
    assert not served_by_upstream(origin, http, path + "?a=%31&b=2&&")
    assert not served_by_upstream(origin, http, path + "?b=2&a=1&")


@pytest.mark.parametrize(
    ("stored", "other"),
    [
        ("?q=a+b", "?q=a%20b"),  # backends disagree on +
        ("?a=1&a=2", "?a=2&a=1"),  # the order of one name's values matters
        ("?a", "?a="),
        ("?a=1", "?A=1"),
        ("?x=%2f", "?x=/"),  # a reserved character's escape is not the character
        ("", "?"),
    ],
)
def test_queries_that_backends_may_read_differently_do_not_share(
    stored: str, other: str, origin: Origin, http: httpx.Client
) -> None:
    path = fresh()
    http.get(path + stored)
    if other == "?":
        # An empty query is no query: the upstream receives the same target.
        assert not served_by_upstream(origin, http, path + other)
        return
    assert served_by_upstream(origin, http, path + other)


def test_path_spellings_the_upstream_reads_alike_share_one_entry(
    gateway: RunningGateway, origin: Origin
) -> None:
    name = f"item{next(_unique)}"

    def get(target: str) -> bool:
        before = origin.count
        with RawConnection(gateway.port) as conn:
            conn.send(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n\r\n".encode())
            response = conn.read_response()
        assert response.status == 200, response
        return origin.count > before

    assert get(f"/open/{name}a.")
    assert not get(f"/open/{name}a%2e")
    assert not get(f"/open/x/../{name}a.")
    assert not get(f"/open//{name}a%2E")
    assert not get(f"/open/%{ord(name[0]):02x}{name[1:]}a.")
    # Another resource for the upstream, another entry.
    assert get(f"/open/{name}A.")


def test_host_spellings_do_not_poison_one_another(gateway: RunningGateway, origin: Origin) -> None:
    path = fresh()

    def get(host: str, extra: str = "") -> dict[str, Any]:
        with RawConnection(gateway.port) as conn:
            conn.send(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
            response = conn.read_response()
        assert response.status == 200, response
        body: dict[str, Any] = response.json()
        return body

    # The upstream sees the client's Host in X-Forwarded-Host: a response that reflects it
    # must never be served for another Host.
    evil = get("evil.example")
    assert evil["x_forwarded_host"] == "evil.example"
    good = get("api.example")
    assert good["x_forwarded_host"] == "api.example"
    assert get("API.example")["n"] > good["n"]
    assert get("api.example:8443")["n"] > good["n"]
    assert get("api.example")["n"] == good["n"]  # a hit


def test_forwarding_fields_from_an_untrusted_client_neither_reach_nor_poison(
    gateway: RunningGateway, origin: Origin
) -> None:
    path = fresh()
    host = f"127.0.0.1:{gateway.port}"

    def get(extra: str) -> dict[str, Any]:
        with RawConnection(gateway.port) as conn:
            conn.send(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
            response = conn.read_response()
        assert response.status == 200, response
        body: dict[str, Any] = response.json()
        return body

    attempt = get("X-Forwarded-Host: evil.example\r\nForwarded: host=evil.example\r\n")
    assert attempt["x_forwarded_host"] == host
    plain = get("")
    assert plain["x_forwarded_host"] == host
    assert plain["n"] > attempt["n"]


def test_key_headers_are_part_of_the_key(origin: Origin, http: httpx.Client) -> None:
    url = fresh("/keyed")
    http.get(url, headers={"X-Region": "eu"})
    assert not served_by_upstream(origin, http, url, headers={"X-Region": "eu"})
    assert served_by_upstream(origin, http, url, headers={"X-Region": "us"})
    assert served_by_upstream(origin, http, url)


def test_vary_stores_one_variant_per_value(origin: Origin, http: httpx.Client) -> None:
    url = fresh() + "?h=Vary:Accept-Language"
    english = http.get(url, headers={"Accept-Language": "en"})
    french = http.get(url, headers={"Accept-Language": "fr"})
    assert french.json()["language"] == "fr"
    assert status_of(french) == "Portico; fwd=miss; stored"
    again_en = http.get(url, headers={"Accept-Language": "en"})
    again_fr = http.get(url, headers={"Accept-Language": "fr"})
    assert is_hit(again_en)
    assert is_hit(again_fr)
    assert again_en.json() == english.json()
    assert again_fr.json() == french.json()
    assert served_by_upstream(origin, http, url, headers={"Accept-Language": "de"})
    assert served_by_upstream(origin, http, url)


# -- whose responses ---------------------------------------------------------------------------


def test_a_consumer_never_reads_another_consumers_cached_response(
    origin: Origin, http: httpx.Client
) -> None:
    url = fresh("/mine")
    billing = http.get(url, headers=as_consumer("billing"))
    assert billing.json()["consumer"] == "acme/billing"
    support = http.get(url, headers=as_consumer("support"))
    assert support.json()["consumer"] == "acme/support"
    assert not is_hit(support)
    again = http.get(url, headers=as_consumer("billing"))
    assert is_hit(again)
    assert again.json()["consumer"] == "acme/billing"


def test_an_unauthenticated_request_never_reads_a_consumers_response(
    origin: Origin, http: httpx.Client
) -> None:
    url = fresh("/mine")
    http.get(url, headers=as_consumer("billing"))
    anonymous = http.get(url)
    assert anonymous.status_code == 401
    assert "cache-status" not in anonymous.headers


def test_tenant_scope_shares_within_a_tenant_only(origin: Origin, http: httpx.Client) -> None:
    url = fresh("/team")
    http.get(url, headers=as_consumer("billing"))
    same_tenant = http.get(url, headers=as_consumer("support"))
    assert is_hit(same_tenant)
    other = http.get(url, headers=as_consumer("shop"))
    assert not is_hit(other)
    assert other.json()["consumer"] == "globex/shop"


def test_a_public_route_shares_between_consumers(http: httpx.Client) -> None:
    url = fresh("/everyone")
    http.get(url, headers=as_consumer("billing"))
    shop = http.get(url, headers=as_consumer("shop"))
    assert is_hit(shop)


@pytest.mark.parametrize("credentials", [{"Authorization": "Bearer x"}, {"Cookie": "sid=1"}])
def test_credentials_portico_did_not_check_keep_the_response_private(
    credentials: dict[str, str], origin: Origin, http: httpx.Client
) -> None:
    url = fresh()
    first = http.get(url, headers=credentials)
    assert status_of(first) == "Portico; fwd=miss"
    assert served_by_upstream(origin, http, url, headers=credentials)
    # Nor does an anonymous caller's stored response answer them.
    http.get(url)
    assert not served_by_upstream(origin, http, url)
    assert served_by_upstream(origin, http, url, headers=credentials)


def test_credentials_portico_did_not_check_may_share_a_public_response(
    origin: Origin, http: httpx.Client
) -> None:
    url = fresh() + "?h=Cache-Control:public,%20max-age%3D60"
    first = http.get(url, headers={"Authorization": "Bearer x"})
    assert status_of(first) == "Portico; fwd=miss; stored"
    assert not served_by_upstream(origin, http, url, headers={"Authorization": "Bearer y"})


# -- metrics -----------------------------------------------------------------------------------


def test_hits_misses_and_stores_are_counted_for_prometheus(
    gateway: RunningGateway, http: httpx.Client
) -> None:
    url = fresh()
    http.get(url)
    http.get(url)
    http.get(url, headers={"Cache-Control": "no-cache"})
    text = gateway.call(lambda: exposition(registry(gateway.gateway))).decode()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("portico_cache")
    }
    assert samples['portico_cache_lookups_total{result="hit",route="open"}'] >= 1
    assert samples['portico_cache_lookups_total{result="miss",route="open"}'] >= 1
    assert samples['portico_cache_lookups_total{result="bypass",route="open"}'] >= 1
    assert samples['portico_cache_stores_total{route="open"}'] >= 2


# -- the route's order -------------------------------------------------------------------------

ORDER_CONFIG = """\
services:
  catalogue:
    targets: [http://127.0.0.1:9]
    policies:
      - type: cache
  plain:
    targets: [http://127.0.0.1:9]
routes:
  - name: products
    match: {path: /products}
    service: catalogue
    policies:
      - type: auth
        methods: [api_key]
  - name: listed-after
    match: {path: /other}
    service: plain
    policies:
      - type: cache
        ttl: 5s
      - type: auth
        methods: [api_key]
  - name: addresses
    match: {path: /addresses}
    service: plain
    policies:
      - type: cache
        ttl: 6s
      - type: ip-rules
        allow: [10.0.0.0/8]
  - name: fine
    match: {path: /fine}
    service: plain
    policies:
      - type: auth
        methods: [api_key]
      - type: cache
        ttl: 7s
"""


def test_a_cache_before_auth_or_ip_rules_is_refused_since_a_hit_would_skip_them() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(ORDER_CONFIG, "portico.yaml")
    message = str(caught.value)
    assert (
        "portico.yaml:5:15: services.catalogue.policies[0].type: route 'products' runs auth "
        "after this cache" in message
    )
    assert "routes[1].policies[0].type: route 'listed-after' runs auth after this cache" in message
    assert "routes[2].policies[0].type: route 'addresses' runs ip-rules after this cache" in message
    assert "'fine'" not in message
    assert len(caught.value.issues) == 3


@pytest.mark.parametrize(
    ("policies", "expected"),
    [
        (
            [{"type": "cache"}, {"type": "cors", "origins": ["https://a.example"]}],
            "routes[0].policies[0].type: route 'r' runs cors after this cache",
        ),
        (
            [{"type": "mask", "remove": ["ssn"]}, {"type": "cache"}],
            "routes[0].policies[1].type: route 'r' runs mask before this cache",
        ),
        (
            [{"type": "cache", "scope": "tenant"}, {"type": "mask", "remove": ["ssn"]}],
            "routes[0].policies[0].scope: route 'r' runs mask, which depends on each consumer's",
        ),
    ],
)
def test_where_cache_stands_among_body_and_header_policies_is_checked(
    policies: list[dict[str, Any]], expected: str
) -> None:
    # The policy types named here may be added by other folders: the check reads only the
    # types' names, so its message is there whether or not the type itself is known.
    config = {
        "services": {"s": {"targets": ["http://127.0.0.1:9"]}},
        "routes": [{"name": "r", "match": {"path": "/r"}, "service": "s", "policies": policies}],
    }
    with pytest.raises(ConfigError) as caught:
        load_config_text(json.dumps(config), "portico.yaml")
    assert expected in str(caught.value)


# -- invalidation by unsafe requests (RFC 9111 §4.4) ---------------------------------------------


def test_a_successful_unsafe_request_makes_every_stored_response_of_its_path_stale(
    origin: Origin, http: httpx.Client
) -> None:
    path = fresh()
    urls = [path + "?h=Cache-Control:max-age%3D60", path + "?h=Cache-Control:max-age%3D60&a=1"]
    other = fresh() + "?h=Cache-Control:max-age%3D60"
    for url in (*urls, other):
        http.get(url)
        assert is_hit(http.get(url))

    for method in ("POST", "PUT", "DELETE", "PATCH", "PURGE"):  # an unknown method is unsafe
        changed = http.request(method, path + "?status=200")
        assert changed.status_code == 200
        for url in urls:  # every query of the path: stale, stored again
            stale = http.get(url)
            assert status_of(stale) == "Portico; fwd=miss; stored; detail=invalidated"
            assert is_hit(http.get(url))
    assert is_hit(http.get(other))  # another path keeps its responses


def test_an_unsafe_request_that_fails_invalidates_nothing(
    origin: Origin, http: httpx.Client
) -> None:
    url = fresh() + "?h=Cache-Control:max-age%3D60"
    http.get(url)
    path = url.split("?")[0]
    for status in (400, 404, 500, 503):
        assert http.post(f"{path}?status={status}").status_code == status
        assert is_hit(http.get(url))


def test_a_head_or_options_request_invalidates_nothing(origin: Origin, http: httpx.Client) -> None:
    url = fresh() + "?h=Cache-Control:max-age%3D60"
    http.get(url)
    http.head(url)
    http.request("OPTIONS", url)
    assert is_hit(http.get(url))


def test_only_if_cached_is_answered_from_the_cache_or_504_without_asking_upstream(
    origin: Origin, http: httpx.Client
) -> None:
    url = fresh() + "?h=Cache-Control:max-age%3D60"
    only = {"Cache-Control": "only-if-cached"}
    before = origin.count
    for asked in (only, {"Cache-Control": "only-if-cached, max-age=0"}):
        check_problem(http.get(url, headers=asked), 504, PROBLEMS + "not-cached")
    conditional = {**only, "If-None-Match": '"x"'}
    check_problem(http.get(url, headers=conditional), 504, PROBLEMS + "not-cached")
    assert origin.count == before  # none of them reached the upstream

    http.get(url)  # now stored
    hit = http.get(url, headers=only)
    assert hit.status_code == 200 and is_hit(hit)
