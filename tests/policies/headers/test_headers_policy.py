"""The ``headers`` policy, through a real gateway and a real upstream over sockets: request fields
edited before they go upstream, response fields before they reach the client, in the documented
order (remove, rename, set, add), and nothing changed on a route that does not list it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.support.gateway import RunningGateway, route, running_gateway
from tests.support.upstreams import Received, Upstream

EDITS: dict[str, Any] = {
    "type": "headers",
    "request": {
        "set": {"X-Tenant": "acme"},
        "add": {"X-Via-Portico": "yes"},
        "remove": ["Cookie", "X-Debug"],
    },
    "response": {
        "set": {"Cache-Control": "no-store"},
        "add": {"X-Served-By": "portico"},
        "remove": ["X-Internal"],
    },
}
# The same name removed and added: the order (remove, then set, then add) decides what is left.
REPLACE = {
    "type": "headers",
    "request": {"remove": ["X-Trace"], "add": {"X-Trace": "portico"}},
    "response": {"remove": ["X-Trace"], "add": {"X-Trace": "portico"}},
}
# A rename keeps the value and its place; the new name's own fields are dropped when the old is
# there, so a client cannot send a second value alongside the renamed one.
RENAME = {
    "type": "headers",
    "request": {
        "remove": ["X-Gone"],
        "rename": {"X-Client-Token": "X-Partner-Token", "X-Gone": "X-Came-Back", "X-A": "X-B"},
        "set": {"X-Set-After": "portico"},
    },
    "response": {"rename": {"X-Internal-Id": "X-Order-Id", "Server": "X-Upstream-Server"}},
}
SWAP = {"type": "headers", "request": {"rename": {"X-One": "X-Two", "X-Two": "X-One"}}}


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream("headers")
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
) -> Iterator[RunningGateway]:
    config = {
        "services": {"main": {"targets": [upstream.url], "retries": 0}},
        "routes": [
            route("edited", "/edited/{rest:path}", strip_prefix="/edited", policies=[EDITS]),
            route("ordered", "/ordered/{rest:path}", strip_prefix="/ordered", policies=[REPLACE]),
            route("plain", "/plain/{rest:path}", strip_prefix="/plain"),
            route("renamed", "/renamed/{rest:path}", strip_prefix="/renamed", policies=[RENAME]),
            route("swapped", "/swapped/{rest:path}", strip_prefix="/swapped", policies=[SWAP]),
            route(
                "guarded",
                "/guarded/{rest:path}",
                strip_prefix="/guarded",
                policies=[
                    {"type": "headers", "response": {"rename": {"Cache-Control": "X-Cache"}}},
                    {"type": "ip-rules", "deny": ["0.0.0.0/0", "::/0"]},
                ],
            ),
        ],
    }
    with running_gateway(tmp_path_factory.mktemp("gateway"), config) as running:
        yield running


@pytest.fixture
def http(gateway: RunningGateway) -> Iterator[httpx.Client]:
    with gateway.client() as client:
        yield client


def sent_upstream(upstream: Upstream, http: httpx.Client, path: str, **kwargs: Any) -> Received:
    response = http.get(path, **kwargs)
    assert response.status_code == 200, response.text
    return upstream.received[-1]


def values(received: Received, name: str) -> list[str]:
    return [v for k, v in received.headers if k.lower() == name]


def test_request_fields_are_removed_set_and_added_before_going_upstream(
    upstream: Upstream, http: httpx.Client
) -> None:
    received = sent_upstream(
        upstream,
        http,
        "/edited/orders",
        headers=[
            ("X-Tenant", "globex"),
            ("x-tenant", "initech"),
            ("Cookie", "session=secret"),
            ("x-debug", "1"),
            ("X-Via-Portico", "client"),
        ],
    )

    assert received.path == "/orders"
    assert values(received, "x-tenant") == ["acme"]  # every field of that name replaced by one
    assert values(received, "cookie") == []  # removed whatever the case the client used
    assert values(received, "x-debug") == []
    assert values(received, "x-via-portico") == ["client", "yes"]  # appended, the client's kept


def test_response_fields_are_edited_before_reaching_the_client(http: httpx.Client) -> None:
    response = http.get(
        "/edited/headers",
        params=[
            ("set", "X-Internal: db-7.internal"),
            ("set", "Cache-Control: public, max-age=600"),
            ("set", "X-Served-By: orders"),
        ],
    )

    assert response.status_code == 200
    assert "x-internal" not in response.headers
    assert response.headers.get_list("cache-control") == ["no-store"]
    assert response.headers.get_list("x-served-by") == ["orders", "portico"]


def test_a_field_removed_and_added_keeps_only_the_added_value(
    upstream: Upstream, http: httpx.Client
) -> None:
    received = sent_upstream(upstream, http, "/ordered/orders", headers={"X-Trace": "client"})
    response = http.get("/ordered/headers", params={"set": "X-Trace: upstream"})

    assert values(received, "x-trace") == ["portico"]
    assert response.headers.get_list("x-trace") == ["portico"]


def test_a_route_without_the_policy_is_left_alone(upstream: Upstream, http: httpx.Client) -> None:
    received = sent_upstream(
        upstream, http, "/plain/orders", headers={"X-Tenant": "globex", "Cookie": "session=1"}
    )
    response = http.get("/plain/headers", params={"set": "X-Internal: db-7.internal"})

    assert values(received, "x-tenant") == ["globex"]
    assert values(received, "cookie") == ["session=1"]
    assert values(received, "x-via-portico") == []
    assert response.headers.get_list("x-internal") == ["db-7.internal"]
    assert "x-served-by" not in response.headers


def test_a_service_policy_runs_on_each_of_its_routes_unless_the_route_has_its_own(
    tmp_path: Any, upstream: Upstream
) -> None:
    """``services.<name>.policies`` come before a route's own; a route's entry of the same type
    replaces the service's, and a route of another service does not get them."""
    tagged = {"type": "headers", "request": {"set": {"X-Service": "billing"}}}
    own = {"type": "headers", "request": {"set": {"X-Route": "own"}}}
    config = {
        "services": {
            "billing": {"targets": [upstream.url], "retries": 0, "policies": [tagged]},
            "other": {"targets": [upstream.url], "retries": 0},
        },
        "routes": [
            route("inherits", "/inherits/{rest:path}", service="billing"),
            route("overrides", "/overrides/{rest:path}", service="billing", policies=[own]),
            route("elsewhere", "/elsewhere/{rest:path}", service="other"),
        ],
    }
    with running_gateway(tmp_path, config) as running, running.client() as client:
        received = sent_upstream(upstream, client, "/inherits/a")
        assert values(received, "x-service") == ["billing"]
        received = sent_upstream(upstream, client, "/overrides/a")
        assert values(received, "x-service") == []
        assert values(received, "x-route") == ["own"]
        received = sent_upstream(upstream, client, "/elsewhere/a")
        assert values(received, "x-service") == []


def test_a_bad_service_policy_is_reported_at_its_line(tmp_path: Any) -> None:
    from tests.support.gateway import run_portico, write_config

    config = {
        "services": {
            "main": {
                "targets": ["http://127.0.0.1:9"],
                "policies": [{"type": "headers", "requets": {}}],
            }
        },
        "routes": [route("r", "/r")],
    }
    path = write_config(tmp_path / "portico.yaml", config)
    result = run_portico("check", str(path), cwd=tmp_path)
    assert result.returncode != 0
    assert "services.main.policies[0]" in result.stderr
    assert "request" in result.stderr  # did you mean


def test_a_renamed_request_field_keeps_its_value_and_replaces_the_clients_own(
    upstream: Upstream, http: httpx.Client
) -> None:
    received = sent_upstream(
        upstream,
        http,
        "/renamed/orders",
        headers=[
            ("x-partner-token", "forged-by-client"),
            ("X-CLIENT-TOKEN", "t-1"),  # any case
            ("X-Client-Token", "t-2"),  # every field of that name, in order
            ("X-Gone", "removed first"),
            ("X-Set-After", "client"),
        ],
    )

    assert values(received, "x-partner-token") == ["t-1", "t-2"]
    assert values(received, "x-client-token") == []
    # remove runs before rename: a removed field is not renamed.
    assert values(received, "x-came-back") == []
    assert values(received, "x-set-after") == ["portico"]


def test_a_rename_whose_field_is_absent_leaves_the_new_name_alone(
    upstream: Upstream, http: httpx.Client
) -> None:
    received = sent_upstream(upstream, http, "/renamed/orders", headers={"X-B": "kept"})
    assert values(received, "x-b") == ["kept"]


def test_renames_apply_at_once_so_two_fields_swap_names(
    upstream: Upstream, http: httpx.Client
) -> None:
    received = sent_upstream(
        upstream, http, "/swapped/orders", headers=[("X-One", "1"), ("X-Two", "2")]
    )
    assert values(received, "x-two") == ["1"]
    assert values(received, "x-one") == ["2"]


def test_a_response_field_is_renamed_before_reaching_the_client(http: httpx.Client) -> None:
    response = http.get(
        "/renamed/headers",
        params=[("set", "X-Internal-Id: 42"), ("set", "X-Order-Id: stale")],
    )
    assert response.status_code == 200
    assert response.headers.get_list("x-order-id") == ["42"]
    assert "x-internal-id" not in response.headers


def test_porticos_own_answers_are_renamed_too(http: httpx.Client) -> None:
    """A 403 from a policy after it passes through its response side, as any answer does."""
    response = http.get("/guarded/orders")
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers.get_list("x-cache") == ["no-store"]
    assert "cache-control" not in response.headers


@pytest.mark.parametrize(
    ("rename", "message"),
    [
        ({"Content-Length": "X-Length"}, "cannot be renamed"),
        ({"X-Length": "Transfer-Encoding"}, "cannot be renamed"),
        ({"X-Who": "X-Portico-Consumer"}, "cannot be renamed"),
        ({"Host": "X-Host"}, "cannot be renamed"),
        ({"X-A": "x-a"}, "renamed to itself"),
        ({"X-A": "X-C", "X-B": "x-c"}, "both renamed"),
        ({"X-A": "X-B", "x-a": "X-C"}, "renamed twice"),
        ({"X-A": "Not A Name"}, "not a valid HTTP header name"),
    ],
)
def test_a_rename_that_would_break_the_message_is_refused_at_its_line(
    tmp_path: Any, rename: dict[str, str], message: str
) -> None:
    from tests.support.gateway import run_portico, write_config

    config = {
        "services": {"main": {"targets": ["http://127.0.0.1:9"]}},
        "routes": [
            route("r", "/r", policies=[{"type": "headers", "response": {"rename": rename}}])
        ],
    }
    path = write_config(tmp_path / "portico.yaml", config)
    result = run_portico("check", str(path), cwd=tmp_path)
    assert result.returncode != 0
    assert "routes[0].policies[0].response.rename" in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
