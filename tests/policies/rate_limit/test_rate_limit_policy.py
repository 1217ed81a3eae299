"""The ``rate-limit`` policy through a real gateway and a real upstream over sockets, with the
process's own counters: the 429 and its fields, several limits taken all or nothing, plans,
recovery of a client over its limit, and the ways around a limit an attacker would try (other
header spellings and duplicates, a forged X-Forwarded-For, IPv6 addresses, a flood of keys,
other methods)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.support.gateway import RunningGateway, check_problem, route, running_gateway
from tests.support.upstreams import Upstream

from portico.assembly import load_config_text
from portico.config.errors import ConfigError
from portico.identity.apikeys import NewApiKey, generate_key
from portico.shared.memory import MemoryState

RATE_LIMITED = "https://portico.dev/problems/rate-limited"
KEYS: dict[str, NewApiKey] = {name: generate_key() for name in ("basic", "gold", "other")}


def key_entry(name: str) -> dict[str, Any]:
    return {"id": KEYS[name].id, "sha256": KEYS[name].sha256}


def limit(name: str, count: int, **span: Any) -> dict[str, Any]:
    return {"name": name, "limit": count, **span}


def rate_limit(*limits: dict[str, Any], **settings: Any) -> dict[str, Any]:
    return {"type": "rate-limit", "limits": list(limits), **settings}


AUTH = {"type": "auth", "methods": ["api_key"]}
CACHE = {"type": "cache", "scope": "public"}


def config(upstream: Upstream) -> dict[str, Any]:
    hour = {"window": "1h"}
    return {
        "gateway": {"trusted_proxies": ["127.0.0.2/32"]},
        "services": {"main": {"targets": [upstream.url], "retries": 0}},
        "tenants": {
            "acme": {
                "consumers": {
                    "basic": {"api_keys": [key_entry("basic")]},
                    "gold": {"api_keys": [key_entry("gold")], "metadata": {"plan": "gold"}},
                    "other": {"api_keys": [key_entry("other")]},
                }
            }
        },
        "routes": [
            route(
                "pair",
                "/pair/{rest:path}",
                strip_prefix="/pair",
                policies=[
                    AUTH,
                    rate_limit(
                        limit("pair-burst", 3, **hour),
                        limit("pair-daily", 5, period="day"),
                        time_zone="Europe/Paris",
                    ),
                ],
            ),
            route(
                "plans",
                "/plans/{rest:path}",
                strip_prefix="/plans",
                policies=[
                    AUTH,
                    rate_limit(
                        limit("plans-hourly", 2, **hour),
                        plans={"gold": [limit("plans-hourly", 6, **hour)]},
                    ),
                ],
            ),
            # Limited before auth: a 401 of this route has been counted, by client address.
            route(
                "first",
                "/first/{rest:path}",
                strip_prefix="/first",
                policies=[rate_limit(limit("first", 100, by=["ip"], **hour)), AUTH],
            ),
            route(
                "anonymous",
                "/anonymous/{rest:path}",
                strip_prefix="/anonymous",
                policies=[rate_limit(limit("anonymous", 2, **hour))],
            ),
            route(
                "by-header",
                "/by-header/{rest:path}",
                strip_prefix="/by-header",
                policies=[rate_limit(limit("by-header", 2, by=["header:X-Client-Id"], **hour))],
            ),
            route(
                "by-ip",
                "/by-ip/{rest:path}",
                strip_prefix="/by-ip",
                policies=[rate_limit(limit("by-ip", 2, by=["ip"], **hour))],
            ),
            route(
                "methods",
                "/methods/{rest:path}",
                strip_prefix="/methods",
                policies=[
                    rate_limit(limit("methods", 3, by=["ip"], **hour), exempt_methods=["OPTIONS"])
                ],
            ),
            route(
                "quick",
                "/quick/{rest:path}",
                strip_prefix="/quick",
                policies=[rate_limit(limit("quick", 2, by=["route"], window="1s"))],
            ),
            route(
                "roomy",
                "/roomy/{rest:path}",
                strip_prefix="/roomy",
                policies=[rate_limit(limit("roomy", 1000, by=["ip"], **hour))],
            ),
            # Beside a policy that edits the upstream's head as text: the fields are the same.
            route(
                "roomy-text",
                "/roomy-text/{rest:path}",
                strip_prefix="/roomy-text",
                policies=[
                    rate_limit(limit("roomy", 1000, by=["ip"], **hour)),
                    {"type": "headers", "response": {"add": {"X-Edited": "yes"}}},
                ],
            ),
            # Beside another policy that only adds fields: the head is relayed as bytes.
            route(
                "roomy-deprecated",
                "/roomy-deprecated/{rest:path}",
                strip_prefix="/roomy-deprecated",
                policies=[
                    rate_limit(limit("roomy", 1000, by=["ip"], **hour)),
                    {"type": "deprecation", "since": "2026-01-01"},
                ],
            ),
            # A cache hit is answered with the stored head: before the limit, the head of the
            # answer that was stored (Portico's fields of then); after it, the upstream's own.
            route(
                "cached-first",
                "/cached-first/{rest:path}",
                strip_prefix="/cached-first",
                policies=[CACHE, rate_limit(limit("cached-first", 1000, by=["ip"], **hour))],
            ),
            route(
                "cached-last",
                "/cached-last/{rest:path}",
                strip_prefix="/cached-last",
                policies=[rate_limit(limit("cached-last", 1000, by=["ip"], **hour)), CACHE],
            ),
            # One request a client: the second is Portico's 429, on each path of the head.
            route(
                "once",
                "/once/{rest:path}",
                strip_prefix="/once",
                policies=[rate_limit(limit("once", 1, by=["ip"], **hour))],
            ),
            route(
                "once-text",
                "/once-text/{rest:path}",
                strip_prefix="/once-text",
                policies=[
                    rate_limit(limit("once-text", 1, by=["ip"], **hour)),
                    {"type": "headers", "response": {"add": {"X-Edited": "yes"}}},
                ],
            ),
            route("plain", "/plain/{rest:path}", strip_prefix="/plain"),
        ],
    }


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream("limited")
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("gateway"), config(upstream)) as running:
        yield running


@pytest.fixture
def http(gateway: RunningGateway) -> Iterator[httpx.Client]:
    with gateway.client() as client:
        yield client


def with_key(name: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[name].key}


def fields(response: httpx.Response, name: str) -> dict[str, dict[str, int]]:
    """A RateLimit or RateLimit-Policy field as {policy: {param: value}}."""
    values = response.headers.get_list(name)
    assert len(values) == 1, values
    out: dict[str, dict[str, int]] = {}
    for member in values[0].split(","):
        policy, *params = member.strip().split(";")
        assert policy.startswith('"') and policy.endswith('"'), member
        out[policy[1:-1]] = {k: int(v) for k, v in (p.split("=") for p in params)}
    return out


def test_a_request_over_the_limit_gets_429_with_retry_after_and_the_fields(
    http: httpx.Client, upstream: Upstream
) -> None:
    answers = [http.get("/pair/orders", headers=with_key("basic")) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert fields(answers[0], "ratelimit-policy") == {
        "pair-burst": {"q": 3, "w": 3600},
        "pair-daily": {"q": 5, "w": 86400},
    }
    assert [fields(r, "ratelimit")["pair-burst"]["r"] for r in answers] == [2, 1, 0, 0]
    refused = answers[3]
    problem = check_problem(refused, 429, RATE_LIMITED)
    assert problem["limit"] == "pair-burst"
    retry = int(refused.headers["retry-after"])
    assert 0 < retry <= 3600 and problem["retry_after"] == retry
    assert fields(refused, "ratelimit")["pair-burst"]["t"] == retry


def test_a_refused_request_takes_nothing_from_the_other_limits(http: httpx.Client) -> None:
    # The burst (3 an hour) is spent by the previous test or now; the daily quota (5) keeps
    # what the admitted requests took and nothing of the refused ones.
    for _ in range(3):
        http.get("/pair/orders", headers=with_key("other"))
    refused = [http.get("/pair/orders", headers=with_key("other")) for _ in range(10)]
    assert {r.status_code for r in refused} == {429}
    assert fields(refused[-1], "ratelimit")["pair-daily"]["r"] == 2


def test_the_calendar_quota_resets_at_the_end_of_the_day_in_its_time_zone(
    http: httpx.Client,
) -> None:
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    response = http.get("/pair/orders", headers=with_key("gold"))
    now = datetime.now(ZoneInfo("Europe/Paris"))
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), now.tzinfo)
    reset = fields(response, "ratelimit")["pair-daily"]["t"]
    assert abs(reset - (midnight - now).total_seconds()) <= 2


def test_a_consumer_on_a_plan_gets_the_plans_limits(http: httpx.Client) -> None:
    basic = [http.get("/plans/x", headers=with_key("basic")).status_code for _ in range(7)]
    gold = [http.get("/plans/x", headers=with_key("gold")) for _ in range(7)]
    assert basic == [200, 200] + [429] * 5
    assert [r.status_code for r in gold] == [200] * 6 + [429]
    assert fields(gold[0], "ratelimit-policy") == {"plans-hourly": {"q": 6, "w": 3600}}


def test_portico_own_errors_on_a_limited_route_carry_the_fields(
    http: httpx.Client, upstream: Upstream
) -> None:
    # A 401 from auth before the limit: the request was not counted, the policy is still told.
    unauthenticated = http.get("/plans/x")
    assert unauthenticated.status_code == 401
    assert fields(unauthenticated, "ratelimit-policy") == {"plans-hourly": {"q": 2, "w": 3600}}
    assert "ratelimit" not in unauthenticated.headers
    # A 401 after the limit: counted (by address), so both fields.
    counted = http.get("/first/x")
    assert counted.status_code == 401
    assert fields(counted, "ratelimit")["first"]["r"] == 99
    # An upstream failure answered by Portico (502) on a limited route.
    upstream.mode = "drop"
    try:
        failed = http.get("/first/x", headers=with_key("basic"))
    finally:
        upstream.mode = "normal"
    assert failed.status_code == 502
    assert fields(failed, "ratelimit")["first"]["r"] == 98


def test_the_upstreams_own_ratelimit_fields_are_replaced(http: httpx.Client) -> None:
    forged = {"set": ['RateLimit: "roomy";r=99999;t=1', 'RateLimit-Policy: "roomy";q=99999']}
    response = http.get("/roomy/headers", params=forged)
    assert response.status_code == 200
    assert fields(response, "ratelimit")["roomy"]["r"] < 1000
    assert fields(response, "ratelimit-policy") == {"roomy": {"q": 1000, "w": 3600}}
    plain = http.get("/plain/headers", params=forged)
    assert plain.headers["ratelimit"] == '"roomy";r=99999;t=1'  # not Portico's to change


@pytest.mark.parametrize("prefix", ["roomy", "roomy-text", "roomy-deprecated"])
def test_the_upstreams_fields_are_relayed_and_its_ratelimit_fields_replaced_on_every_path(
    http: httpx.Client, prefix: str
) -> None:
    # Whether the route's response policies only add fields (the head relayed as bytes) or one
    # edits it as text, the answer is the same: the upstream's other fields as they came, in
    # their order and repeats, its RateLimit fields (in any spelling, repeated) replaced.
    sent = [
        "X-First: 1",
        'RATELIMIT: "roomy";r=99999;t=1',
        "X-Repeated: a",
        'Ratelimit-Policy: "roomy";q=99999',
        "X-Repeated: b",
        'RateLimit: "other";r=5;t=5',
        'ratelimit-policy: "other";q=5',
    ]
    response = http.get(f"/{prefix}/headers", params={"set": sent})
    assert response.status_code == 200
    names = [name.lower() for name, _ in response.headers.multi_items()]
    assert names.count("ratelimit") == 1 and names.count("ratelimit-policy") == 1
    assert fields(response, "ratelimit-policy") == {"roomy": {"q": 1000, "w": 3600}}
    assert set(fields(response, "ratelimit")) == {"roomy"}
    assert response.headers.get_list("x-repeated") == ["a", "b"]
    assert response.headers["x-first"] == "1"
    assert names.index("x-first") < names.index("x-repeated")
    if prefix == "roomy-text":
        assert response.headers["x-edited"] == "yes"
    if prefix == "roomy-deprecated":
        assert response.headers["deprecation"] == "@1767225600"


def only_one_of_each(response: httpx.Response) -> list[str]:
    """The response's field names (lower case), once each RateLimit field was found once."""
    names = [name.lower() for name, _ in response.headers.multi_items()]
    assert names.count("ratelimit") <= 1 and names.count("ratelimit-policy") == 1, names
    return names


@pytest.mark.parametrize("prefix", ["once", "once-text"])
def test_porticos_own_429_carries_one_ratelimit_and_one_ratelimit_policy(
    http: httpx.Client, prefix: str
) -> None:
    # Sent to the upstream with its own RateLimit fields, which the first answer replaces and
    # the 429 (Portico's, no upstream) never had.
    forged = {"set": ['RateLimit: "x";r=99999;t=1', 'RateLimit-Policy: "x";q=99999']}
    admitted, refused = (http.get(f"/{prefix}/headers", params=forged) for _ in range(2))
    assert admitted.status_code == 200
    check_problem(refused, 429, RATE_LIMITED)
    for response in (admitted, refused):
        assert only_one_of_each(response).count("ratelimit") == 1
        assert fields(response, "ratelimit-policy") == {prefix: {"q": 1, "w": 3600}}
        assert fields(response, "ratelimit")[prefix]["r"] == 0
    if prefix == "once-text":
        assert refused.headers["x-edited"] == "yes"


@pytest.mark.parametrize("prefix", ["cached-first", "cached-last"])
def test_a_cached_answer_carries_this_requests_fields_not_the_stored_ones(
    http: httpx.Client, prefix: str
) -> None:
    forged = {
        "set": [
            "Cache-Control: max-age=300",
            f'RateLimit: "{prefix}";r=99999;t=1',
            f'Ratelimit-Policy: "{prefix}";q=99999',
        ]
    }
    stored = http.get(f"/{prefix}/headers", params=forged)
    hit = http.get(f"/{prefix}/headers", params=forged)
    assert "stored" in stored.headers["cache-status"] and "hit" in hit.headers["cache-status"]
    for response in (stored, hit):
        only_one_of_each(response)
        assert fields(response, "ratelimit-policy") == {prefix: {"q": 1000, "w": 3600}}
    before = fields(stored, "ratelimit")[prefix]["r"]
    if prefix == "cached-first":
        # The hit is answered before the limit counts it: the policy only, nothing stored.
        assert "ratelimit" not in hit.headers
    else:
        assert fields(hit, "ratelimit")[prefix]["r"] == before - 1


def test_an_anonymous_caller_is_limited_by_its_address(gateway: RunningGateway) -> None:
    # Keyed by consumer, without authentication: the client address stands in.
    with gateway.client() as first, gateway.client() as second:
        statuses = [first.get("/anonymous/a").status_code for _ in range(2)]
        statuses.append(second.get("/anonymous/b").status_code)
    assert statuses[:2] == [200, 200]
    assert statuses[2] == 429  # the same address, another connection


def test_a_forged_x_forwarded_for_does_not_change_the_key(http: httpx.Client) -> None:
    # 127.0.0.1 is not a trusted proxy here: its X-Forwarded-For is not believed.
    statuses = [
        http.get("/by-ip/x", headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code
        for i in range(4)
    ]
    assert statuses == [200, 200, 429, 429]


def test_ipv6_clients_are_counted_by_their_64_prefix(upstream: Upstream, tmp_path: Path) -> None:
    # A trusted proxy (the test client's address) names IPv6 clients.
    cfg = config(upstream)
    cfg["gateway"]["trusted_proxies"] = ["127.0.0.1/32"]
    with running_gateway(tmp_path, cfg) as running, running.client() as http:

        def status(client_ip: str) -> int:
            return http.get("/by-ip/x", headers={"X-Forwarded-For": client_ip}).status_code

        assert [status("2001:db8:1:2::1"), status("2001:db8:1:2::ffff")] == [200, 200]
        assert status("2001:db8:1:2:aaaa::9") == 429  # the same /64
        assert status("2001:db8:1:3::1") == 200  # another /64
        # An IPv4-mapped address is that IPv4 address.
        assert [status("192.0.2.7"), status("192.0.2.7")] == [200, 200]
        assert status("::ffff:192.0.2.7") == 429


def test_a_header_key_ignores_the_names_case_and_counts_duplicates_apart(
    http: httpx.Client,
) -> None:
    assert http.get("/by-header/x", headers={"X-Client-Id": "alpha"}).status_code == 200
    assert http.get("/by-header/x", headers={"x-client-id": "alpha"}).status_code == 200
    assert http.get("/by-header/x", headers={"X-CLIENT-ID": "alpha"}).status_code == 429
    # Repeating the field makes another key, never a way to reuse alpha's first value...
    repeated = httpx.Headers([("X-Client-Id", "alpha"), ("X-Client-Id", "beta")])
    assert http.get("/by-header/x", headers=repeated).status_code == 200
    # ...and the values' case matters (they are the client's identifiers, not names).
    assert http.get("/by-header/x", headers={"X-Client-Id": "ALPHA"}).status_code == 200


def test_head_is_counted_and_an_exempt_method_is_not(http: httpx.Client) -> None:
    assert http.options("/methods/x").status_code != 429
    assert http.head("/methods/x").status_code == 200
    assert http.get("/methods/x").status_code == 200
    for _ in range(5):
        assert http.options("/methods/x").status_code != 429
    assert http.get("/methods/x").status_code == 200
    head = http.head("/methods/x")
    assert head.status_code == 429 and head.content == b""
    assert fields(head, "ratelimit")["methods"]["r"] == 0


def test_a_client_that_keeps_hammering_is_still_admitted_at_the_limits_rate(
    http: httpx.Client,
) -> None:
    # Refused requests take nothing: a client that never stops (2 per second allowed) still
    # gets requests through in every later window, where counting refusals would shut it out.
    statuses: list[int] = []
    deadline = time.monotonic() + 3.2
    while time.monotonic() < deadline:
        statuses.append(http.get("/quick/x").status_code)
        time.sleep(0.005)
    admitted = statuses.count(200)
    assert statuses.count(429) > admitted
    assert 4 <= admitted <= 10  # 2 at once, then about 2 a second


def test_a_client_over_its_limit_is_admitted_after_retry_after(http: httpx.Client) -> None:
    statuses = [http.get("/quick/y") for _ in range(10)]
    refused = [r for r in statuses if r.status_code == 429]
    assert refused
    time.sleep(int(refused[-1].headers["retry-after"]))
    assert http.get("/quick/y").status_code == 200


def test_the_counters_of_a_flood_of_keys_stay_within_the_memory_bound(
    upstream: Upstream, tmp_path: Path
) -> None:
    state = MemoryState(max_keys=50)
    with (
        running_gateway(tmp_path, config(upstream), shared=state) as running,
        running.client() as http,
    ):
        for i in range(300):
            http.get("/by-header/x", headers={"X-Client-Id": f"client-{i}"})
        assert len(state.table) <= 50
        # A value longer than a key may hold is stored by its digest.
        http.get("/by-header/x", headers={"X-Client-Id": "z" * 10_000})
        assert max(len(k) for k in state.table._values) < 200


def test_refusals_are_counted_per_route_and_limit_on_metrics(
    upstream: Upstream, tmp_path: Path
) -> None:
    with running_gateway(tmp_path, config(upstream)) as running, running.client() as http:
        for _ in range(4):
            http.get("/by-ip/x")
        port = running.gateway.runtime.config.operations.listen.port
        assert port is not None
        counters = running.gateway.stats.counters["portico_rate_limited_requests"]
        assert counters.values[("by-ip", "by-ip")] == 2


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (rate_limit(limit("a", 5)), "give either window"),
        (rate_limit(limit("a", 5, window="1s", period="day")), "give either window"),
        (rate_limit(limit("a", 5, window="1.5s")), "whole seconds"),
        (rate_limit(limit("a", 5, window="1s"), limit("a", 6, period="day")), "used twice"),
        (rate_limit(limit("a", 5, window="1s", by=["cookie"])), "is not a key"),
        (rate_limit(limit("a", 5, period="day"), time_zone="Mars/Olympus"), "not a time zone"),
        (rate_limit(limit("a b", 5, window="1s")), "name"),
        (
            rate_limit(limit("a", 5, window="1s"), plans={"gold": [limit("a", 9, window="1s")]}),
            "on plan 'platinum'",
        ),
    ],
)
def test_invalid_settings_are_reported_by_check(entry: dict[str, Any], message: str) -> None:
    import yaml

    text = yaml.safe_dump(
        {
            "services": {"main": {"targets": ["http://127.0.0.1:1"]}},
            "tenants": {"acme": {"consumers": {"x": {"metadata": {"plan": "platinum"}}}}},
            "routes": [route("r", "/r", policies=[entry])],
        }
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "portico.yaml")
    assert message in str(caught.value)
    assert "portico.yaml:" in str(caught.value)


def test_a_bad_limit_is_one_error_not_also_an_empty_list() -> None:
    """Pydantic drops the item that failed and then finds the list too short: that second
    message says nothing the first did not, so it is not shown."""
    text = yaml.safe_dump(
        {
            "services": {"main": {"targets": ["http://127.0.0.1:1"]}},
            "routes": [
                route("r", "/r", policies=[rate_limit(limit("b", 20_000_000, window="1m"))])
            ],
        }
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "portico.yaml")
    assert len(caught.value.issues) == 1
    assert "a window's limit is at most 10000000" in str(caught.value)
    assert "at least 1 item" not in str(caught.value)
