"""The ``on_preflight`` hook of the policy contract, through a real gateway and real sockets,
with test policies registered as a third-party policy would be: the gateway routes a CORS
preflight as the request it announces and hands it to the first policy with the hook, before any
``on_request`` and whatever the route's methods; the other policies' response hooks never see
the answer; anything that is not a preflight for such a route is served as before."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel
from tests.support.gateway import RawConnection, check_problem, route, running_gateway
from tests.support.upstreams import Upstream

from portico.gateway import problems
from portico.gateway.exchange import Exchange, Reply
from portico.gateway.headers import Headers
from portico.identity.context import BuildContext
from portico.policies.catalogue import POLICIES
from portico.policies.registry import PolicyType


class NoSettings(BaseModel):
    pass


class Refuse:
    """Refuses every request, and marks every response it sees."""

    needs_body = True  # a preflight is answered without its body being read

    def on_request(self, exchange: Exchange) -> Reply:
        return problems.problem(problems.UNAUTHORIZED, exchange.request_id)

    def on_response(self, exchange: Exchange, status: int, headers: Headers) -> None:
        headers.set("x-refuse-saw", "yes")


class Answer:
    """Answers preflights with what it was asked, so a test sees which route answered."""

    needs_body = False

    def __init__(self, name: str) -> None:
        self.name = name

    def on_request(self, exchange: Exchange) -> None:
        return None

    def on_preflight(self, exchange: Exchange) -> Reply:
        asked = exchange.headers.get("access-control-request-method") or ""
        fields = Headers([("x-answered-by", self.name), ("x-asked", asked)])
        return Reply(204, fields)


class AnswerSettings(BaseModel):
    name: str = "answer"


@pytest.fixture(autouse=True)
def test_policies() -> Iterator[None]:
    def build_refuse(settings: NoSettings, context: BuildContext) -> Refuse:
        return Refuse()

    def build_answer(settings: AnswerSettings, context: BuildContext) -> Answer:
        return Answer(settings.name)

    POLICIES.add("refuse", PolicyType(NoSettings, build_refuse))
    POLICIES.add("answer", PolicyType(AnswerSettings, build_answer))
    try:
        yield
    finally:
        POLICIES.remove("refuse")
        POLICIES.remove("answer")


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream("preflight")
    yield server
    server.close()


def config(upstream: Upstream) -> dict[str, object]:
    answer = {"type": "answer", "name": "put"}
    return {
        "services": {"main": {"targets": [upstream.url], "retries": 0}},
        "routes": [
            route("put", "/things", methods=["PUT"], policies=[{"type": "refuse"}, answer]),
            route("get", "/things", methods=["GET"], policies=[{"type": "answer", "name": "get"}]),
            route("plain", "/plain", methods=["GET", "OPTIONS"]),
        ],
    }


def preflight(method: str, origin: str | None = "https://a.example") -> dict[str, str]:
    headers = {"Access-Control-Request-Method": method}
    if origin is not None:
        headers["Origin"] = origin
    return headers


def test_a_preflight_is_answered_by_the_route_of_the_method_it_announces(
    tmp_path: Path, upstream: Upstream
) -> None:
    with running_gateway(tmp_path, config(upstream)) as gateway, gateway.client() as http:
        before = upstream.count
        put = http.options("/things", headers=preflight("PUT"))
        get = http.options("/things", headers=preflight("GET"))
        assert upstream.count == before

    # Neither route lists OPTIONS; the PUT route's first policy refuses everything, and its
    # response hook never sees the preflight's answer.
    assert put.status_code == 204
    assert put.headers["x-answered-by"] == "put"
    assert put.headers["x-asked"] == "PUT"
    assert "x-refuse-saw" not in put.headers
    assert put.headers["x-request-id"]
    assert get.headers["x-answered-by"] == "get"


def test_what_is_not_a_preflight_for_such_a_route_is_served_as_before(
    tmp_path: Path, upstream: Upstream
) -> None:
    with running_gateway(tmp_path, config(upstream)) as gateway, gateway.client() as http:
        # No Origin, or a method no route of the path serves: a plain OPTIONS (405).
        for headers in (preflight("PUT", origin=None), preflight("DELETE")):
            check_problem(
                http.options("/things", headers=headers),
                405,
                "https://portico.dev/problems/method-not-allowed",
            )
        # A route without the hook takes its OPTIONS upstream, preflight or not.
        relayed = http.options("/plain", headers=preflight("GET"))
        assert relayed.status_code == 200
        assert relayed.json()["method"] == "OPTIONS"
        # The actual request meets the policies as usual.
        refused = http.put("/things")
        check_problem(refused, 401, "https://portico.dev/problems/unauthorized")
        assert refused.headers["x-refuse-saw"] == "yes"


def test_a_preflight_with_a_body_is_answered_without_reading_it(
    tmp_path: Path, upstream: Upstream
) -> None:
    with (
        running_gateway(tmp_path, config(upstream)) as gateway,
        RawConnection(gateway.port) as conn,
    ):
        conn.send(
            b"OPTIONS /things HTTP/1.1\r\nHost: t\r\nOrigin: https://a.example\r\n"
            b"Access-Control-Request-Method: PUT\r\nContent-Length: 100\r\n\r\n"
        )
        response = conn.read_response()
        assert response.status == 204
        assert response.header("content-length") is None
        # The body was never read, so the connection cannot carry another request.
        assert response.header("connection") == "close"
        assert conn.is_closed()


def test_http_clients_accept_the_204(tmp_path: Path, upstream: Upstream) -> None:
    with running_gateway(tmp_path, config(upstream)) as gateway:
        response = httpx.options(gateway.url + "/things", headers=preflight("PUT"), trust_env=False)
    assert response.status_code == 204
    assert response.content == b""
