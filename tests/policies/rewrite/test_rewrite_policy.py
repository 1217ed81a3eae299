"""The ``rewrite`` policy through a real gateway and a real upstream: the path by regular
expression, the query by name, and the ways around them an attacker would try (encodings, dot
segments assembled from captures, CR LF in values, names spelt another way)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.gateway import (
    RawConnection,
    RunningGateway,
    check_problem,
    route,
    run_portico,
    running_gateway,
    write_config,
)
from tests.support.upstreams import Upstream

UNSAFE = "https://portico.dev/problems/unsafe-rewrite"

LINES = {
    "type": "rewrite",
    "path": [{"regex": "^/orders/(?P<id>[^/]+)/lines$", "replace": "/order-lines/{id}"}],
}
# Two captures side by side: a client can make them spell a dot segment.
JOINED = {
    "type": "rewrite",
    "path": [{"regex": "^/files/([^/]*)-([^/]*)$", "replace": "/store/{1}{2}/data"}],
}
EMPTY = {"type": "rewrite", "path": [{"regex": "^/tag/([^/]*)$", "replace": "/tags/{1}/all"}]}
CHAINED = {
    "type": "rewrite",
    "path": [
        {"regex": "^/v1/", "replace": "/api/"},
        {"regex": "/api/", "replace": "/internal/api/"},
    ],
}
QUERY = {
    "type": "rewrite",
    "query": {
        "remove": ["debug"],
        "rename": {"mail": "email", "page": "p"},
        "set": {"api-version": 2, "note": "a b&c=d\r\nX-Evil: 1"},
        "add": {"via": "portico"},
    },
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream("rewrite")
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
) -> Iterator[RunningGateway]:
    def at(name: str, policy: dict[str, Any], **settings: Any) -> dict[str, Any]:
        settings.setdefault("strip_prefix", f"/{name}")
        return route(name, f"/{name}/{{rest:path}}", policies=[policy], **settings)

    config = {
        "services": {"main": {"targets": [upstream.url], "retries": 0}},
        "routes": [
            at("lines", LINES),
            at("joined", JOINED),
            at("empty", EMPTY),
            at("chained", CHAINED),
            at("query", QUERY),
            route(
                "templated",
                "/templated/{id}",
                upstream_path="/orders/{id}/lines",
                policies=[LINES],
            ),
        ],
    }
    with running_gateway(tmp_path_factory.mktemp("gateway"), config) as running:
        yield running


@pytest.fixture
def http(gateway: RunningGateway) -> Iterator[httpx.Client]:
    with gateway.client() as client:
        yield client


def target(upstream: Upstream) -> str:
    return upstream.received[-1].target


def raw_get(gateway: RunningGateway, target: str, method: str = "GET") -> Any:
    with RawConnection(gateway.port) as conn:
        conn.send(f"{method} {target} HTTP/1.1\r\nHost: a\r\n\r\n".encode("latin-1"))
        return conn.read_response(head_only=method == "HEAD")


# -- the path ------------------------------------------------------------------------------------


def test_a_path_rule_rewrites_the_path_with_its_named_group(
    upstream: Upstream, http: httpx.Client
) -> None:
    response = http.get("/lines/orders/1001/lines")
    assert response.status_code == 200
    assert target(upstream) == "/order-lines/1001"


def test_a_path_no_rule_matches_goes_as_the_route_sends_it(
    upstream: Upstream, gateway: RunningGateway
) -> None:
    # Not even re-encoded: the bytes are the client's, as on a route without the policy.
    response = raw_get(gateway, "/lines/orders/1001/items?x=1")
    assert response.status == 200
    assert target(upstream) == "/orders/1001/items?x=1"


def test_rules_run_on_the_decoded_path_and_the_result_is_encoded_again(
    upstream: Upstream, gateway: RunningGateway
) -> None:
    # %6F is "o": the rule matches whatever the spelling, and the capture is sent canonically.
    response = raw_get(gateway, "/lines/%6Frders/caf%c3%a9%20n%C2%B01/lines")
    assert response.status == 200
    assert target(upstream) == "/order-lines/caf%C3%A9%20n%C2%B01"


def test_a_capture_that_holds_an_encoded_percent_stays_encoded(
    upstream: Upstream, gateway: RunningGateway
) -> None:
    response = raw_get(gateway, "/lines/orders/100%2541/lines")
    assert response.status == 200
    # Decoded once to "100%41": a backend decoding it again reads "100%41", never "100A".
    assert target(upstream) == "/order-lines/100%2541"


@pytest.mark.parametrize(
    ("sent", "received"),
    [
        ("/lines/orders/a%3Fadmin=1/lines", "/order-lines/a%3Fadmin=1"),  # a decoded "?"
        ("/lines/orders/a%23frag/lines", "/order-lines/a%23frag"),  # a decoded "#"
        ("/lines/orders/a%20HTTP%2F1.1/lines", None),  # an encoded "/": refused at admission
    ],
)
def test_a_decoded_question_mark_or_hash_cannot_start_a_query_upstream(
    upstream: Upstream, gateway: RunningGateway, sent: str, received: str | None
) -> None:
    before = upstream.count
    response = raw_get(gateway, sent)
    if received is None:
        assert response.status == 400
        assert upstream.count == before
        return
    assert response.status == 200
    assert target(upstream) == received
    assert upstream.received[-1].target.count("?") == 0


def test_rules_apply_in_order_each_on_the_result_of_the_last(
    upstream: Upstream, http: httpx.Client
) -> None:
    assert http.get("/chained/v1/orders").status_code == 200
    assert target(upstream) == "/internal/api/orders"


def test_rules_see_the_path_after_the_routes_upstream_path_template(
    upstream: Upstream, http: httpx.Client
) -> None:
    assert http.get("/templated/77").status_code == 200
    assert target(upstream) == "/order-lines/77"


@pytest.mark.parametrize(
    "path",
    [
        "/joined/files/.-.",  # /store/../data
        "/joined/files/%2e-%2E",  # the same, encoded
        "/joined/files/-.",  # /store/./data
        "/empty/tag/",  # /tags//all: an empty segment
    ],
)
def test_a_rewrite_that_would_make_a_dot_or_empty_segment_is_refused(
    upstream: Upstream, gateway: RunningGateway, path: str
) -> None:
    before = upstream.count
    with gateway.client() as http:
        response = http.get(path)  # httpx sends the path as written
    check_problem(response, 400, UNSAFE)
    assert "segment" in response.json()["detail"]
    assert upstream.count == before  # nothing went upstream


def test_the_same_rule_with_harmless_captures_passes(
    upstream: Upstream, http: httpx.Client
) -> None:
    assert http.get("/joined/files/a-b").status_code == 200
    assert target(upstream) == "/store/ab/data"
    assert http.get("/joined/files/..a-").status_code == 200  # "..a" is no dot segment
    assert target(upstream) == "/store/..a/data"


@pytest.mark.parametrize(
    "path", ["/lines/orders/%0D%0AX-Evil:%201/lines", "/lines/orders/a%00/lines"]
)
def test_an_encoded_control_character_never_reaches_a_rule(
    upstream: Upstream, gateway: RunningGateway, path: str
) -> None:
    before = upstream.count
    response = raw_get(gateway, path)
    assert response.status == 400  # refused by the gateway's path rules before any policy
    assert upstream.count == before


def test_head_is_rewritten_like_get(upstream: Upstream, gateway: RunningGateway) -> None:
    response = raw_get(gateway, "/lines/orders/9/lines", method="HEAD")
    assert response.status == 200
    assert upstream.received[-1].method == "HEAD"
    assert target(upstream) == "/order-lines/9"


# -- the query -----------------------------------------------------------------------------------


def test_query_parameters_are_removed_renamed_set_and_added_in_order(
    upstream: Upstream, gateway: RunningGateway
) -> None:
    query = "q=a%2Bb&debug=1&mail=ada%40example.com&api-version=1&x=%E2%82%AC&page=3&p=forged"
    assert raw_get(gateway, f"/query/search?{query}").status == 200
    assert target(upstream) == (
        "/search?q=a%2Bb&email=ada%40example.com&x=%E2%82%AC&p=3"
        "&api-version=2&note=a%20b%26c%3Dd%0D%0AX-Evil%3A%201&via=portico"
    )
    received = upstream.received[-1]
    assert not any(k.lower() == "x-evil" for k, _ in received.headers)


@pytest.mark.parametrize(
    "spelling", ["%64ebug=1", "deb%75g=1", "debug", "debug=", "debug=1&debug=2"]
)
def test_a_removed_parameter_is_removed_however_the_client_spells_it(
    upstream: Upstream, gateway: RunningGateway, spelling: str
) -> None:
    assert raw_get(gateway, f"/query/search?a=1&{spelling}").status == 200
    assert (
        target(upstream)
        == "/search?a=1&api-version=2&note=a%20b%26c%3Dd%0D%0AX-Evil%3A%201&via=portico"
    )


def test_names_are_compared_exactly_so_another_case_is_another_parameter(
    upstream: Upstream, gateway: RunningGateway
) -> None:
    assert raw_get(gateway, "/query/search?Debug=1&MAIL=x").status == 200
    assert target(upstream).startswith("/search?Debug=1&MAIL=x&api-version=2")


def test_a_query_edit_adds_a_query_to_a_request_without_one(
    upstream: Upstream, http: httpx.Client
) -> None:
    assert http.get("/query/search").status_code == 200
    assert (
        target(upstream)
        == "/search?api-version=2&note=a%20b%26c%3Dd%0D%0AX-Evil%3A%201&via=portico"
    )


def test_a_renamed_parameter_without_a_value_keeps_having_none(
    upstream: Upstream, gateway: RunningGateway
) -> None:
    assert raw_get(gateway, "/query/search?mail&email=forged").status == 200
    assert target(upstream).startswith("/search?email&api-version=2")


# -- the config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "field", "message"),
    [
        ({"path": [{"regex": "([a-", "replace": "/x"}]}, "path.0.regex", "not a valid regular"),
        ({"path": [{"regex": "(a)", "replace": "/{2}"}]}, "path.0", "no group 2"),
        ({"path": [{"regex": "(?P<a>x)", "replace": "/{b}"}]}, "path.0", "no group named 'b'"),
        ({"path": [{"regex": "x", "replace": "/y?z=1"}]}, "path.0", "cannot hold '?'"),
        ({"path": [{"regex": "x", "replace": "/{"}]}, "path.0", "literal braces"),
        ({"query": {"rename": {"a": "a"}}}, "query", "renamed to itself"),
        ({"query": {"remove": [""]}}, "query.remove.0", "cannot be empty"),
        ({}, "policies[0]", "needs path rules, query edits or both"),
    ],
)
def test_a_bad_rewrite_is_refused_at_its_line(
    tmp_path: Path, policy: dict[str, Any], field: str, message: str
) -> None:
    config = {
        "services": {"main": {"targets": ["http://127.0.0.1:9"]}},
        "routes": [route("r", "/r", policies=[{"type": "rewrite", **policy}])],
    }
    path = write_config(tmp_path / "portico.yaml", config)
    result = run_portico("check", str(path), cwd=tmp_path)
    assert result.returncode != 0
    assert "routes[0].policies[0]" in result.stderr, result.stderr
    assert field.replace(".0", "[0]") in result.stderr or field in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
