"""The ``cache`` policy with Redis: two ``portico serve`` processes share what either stored,
``portico cache purge`` removes a route's or a path's entries, and Redis going away follows
``on_redis_failure``. The in-process state refuses a purge from the CLI, saying why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.policies.cache.origin import Origin
from tests.support.gateway import (
    PorticoProcess,
    check_problem,
    route,
    run_portico,
    wait_for,
    with_defaults,
    write_config,
)
from tests.support.redis import RedisServer, redis_for_session, running_redis

PROBLEMS = "https://portico.dev/problems/"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with redis_for_session() as server:
        yield server


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.close()


def config(origin: Origin, redis_url: str | None, **settings: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "services": {"main": {"targets": [origin.url], "retries": 0}},
        "routes": [
            route("products", "/products/{rest:path}", policies=[{"type": "cache", **settings}]),
            route("prices", "/prices/{rest:path}", policies=[{"type": "cache", **settings}]),
            route("plain", "/plain/{rest:path}"),
        ],
    }
    if redis_url is not None:
        out["redis"] = {"url": redis_url, "timeout": "200ms"}
    return out


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, origin: Origin, redis_server: RedisServer
) -> Iterator[tuple[PorticoProcess, PorticoProcess]]:
    shared = config(origin, redis_server.url)
    one = PorticoProcess(tmp_path_factory.mktemp("one"), shared)
    try:
        two = PorticoProcess(tmp_path_factory.mktemp("two"), shared)
        try:
            yield one, two
        finally:
            two.stop()
    finally:
        one.stop()


HOST = {"Host": "api.example"}
"""Two processes listen on two ports: the clients name one host, as behind a load balancer
(the Host is part of the key, since the upstream sees it)."""


def status_of(response: httpx.Response) -> str:
    return response.headers.get("cache-status", "")


def stored_soon(http: httpx.Client, url: str, **kwargs: Any) -> httpx.Response:
    """The hit for a response just stored. The write to Redis leaves as the response goes out,
    so a request at that very instant may still miss (and store it again)."""

    def hit() -> httpx.Response | None:
        response = http.get(url, **kwargs)
        return response if status_of(response).startswith("Portico; hit") else None

    found = wait_for(hit, what=f"a hit for {url}")
    assert isinstance(found, httpx.Response)
    return found


def test_a_response_stored_by_one_process_is_a_hit_in_another(
    pair: tuple[PorticoProcess, PorticoProcess], origin: Origin
) -> None:
    one, two = pair
    with one.client(headers=HOST) as first, two.client(headers=HOST) as second:
        stored = first.get("/products/shared?h=Cache-Control:max-age%3D60")
        assert status_of(stored) == "Portico; fwd=miss; stored"
        hit = stored_soon(second, "/products/shared?h=Cache-Control:max-age%3D60")
        assert status_of(hit).startswith("Portico; hit; ttl=")
        assert hit.json() == stored.json()
        head = second.head("/products/shared?h=Cache-Control:max-age%3D60")
        assert status_of(head).startswith("Portico; hit")
        assert head.headers["content-length"] == str(len(stored.content))


def test_vary_variants_are_shared_too(
    pair: tuple[PorticoProcess, PorticoProcess], origin: Origin
) -> None:
    one, two = pair
    url = "/products/varied?h=Vary:Accept-Language"
    with one.client(headers=HOST) as first, two.client(headers=HOST) as second:
        first.get(url, headers={"Accept-Language": "en"})
        first.get(url, headers={"Accept-Language": "fr"})
        stored_soon(second, url, headers={"Accept-Language": "fr"})
        assert status_of(second.get(url, headers={"Accept-Language": "de"})) == (
            "Portico; fwd=miss; stored"
        )


def test_an_unsafe_request_through_one_process_makes_the_path_stale_in_the_other(
    pair: tuple[PorticoProcess, PorticoProcess], origin: Origin
) -> None:
    one, two = pair
    url = "/products/changing?h=Cache-Control:max-age%3D60"
    with one.client(headers=HOST) as first, two.client(headers=HOST) as second:
        first.get(url)
        stored_soon(second, url)
        assert first.put("/products/changing?status=204").status_code == 204

        def stale() -> httpx.Response | None:
            response = second.get(url)
            return response if "detail=invalidated" in status_of(response) else None

        assert wait_for(stale, what="the stored response made stale")  # the write leaves async
        stored_soon(second, url)  # stored again, and served


def test_purge_of_a_path_and_of_a_route_from_the_cli(
    pair: tuple[PorticoProcess, PorticoProcess], tmp_path: Path, origin: Origin
) -> None:
    one, _ = pair
    with one.client() as http:
        for url in ("/products/1", "/products/1?x=1", "/products/2", "/prices/1"):
            http.get(url)
            stored_soon(http, url)

        purged = run_portico(
            "cache", "purge", "-c", str(one.config_path), "--route", "products",
            "--key", "/products/%31", cwd=tmp_path,
        )  # fmt: skip
        assert purged.returncode == 0, purged.stderr
        assert "purged 2 cache entries" in purged.stderr
        assert status_of(http.get("/products/1")) == "Portico; fwd=miss; stored"
        assert status_of(http.get("/products/1?x=1")) == "Portico; fwd=miss; stored"
        assert status_of(http.get("/products/2")).startswith("Portico; hit")

        whole = run_portico(
            "cache", "purge", "-c", str(one.config_path), "--route", "products", cwd=tmp_path
        )
        assert whole.returncode == 0, whole.stderr
        assert status_of(http.get("/products/2")) == "Portico; fwd=miss; stored"
        assert status_of(http.get("/prices/1")).startswith("Portico; hit")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--route", "nowhere"], "has no route 'nowhere' (its routes: plain, prices, products)"),
        (["--route", "plain"], "route 'plain' has no cache policy"),
        (["--route", "products", "--key", "products/1"], "must be a path starting with /"),
        (["--route", "products", "--key", "/a%2fb"], "is not a path a route could match"),
    ],
)
def test_purge_refuses_what_it_cannot_do_in_one_line(
    args: list[str], message: str, tmp_path: Path, origin: Origin, redis_server: RedisServer
) -> None:
    path = write_config(tmp_path / "portico.yaml", with_defaults(config(origin, redis_server.url)))
    result = run_portico("cache", "purge", "-c", str(path), *args, cwd=tmp_path)
    assert result.returncode == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_purge_with_the_in_process_state_says_it_cannot_reach_the_gateway(
    tmp_path: Path, origin: Origin
) -> None:
    path = write_config(tmp_path / "portico.yaml", with_defaults(config(origin, None)))
    result = run_portico("cache", "purge", "-c", str(path), "--route", "products", cwd=tmp_path)
    assert result.returncode == 1
    assert "has no redis section, so the cache lives in the memory" in result.stderr


@pytest.mark.parametrize("on_failure", ["open", "closed"])
def test_redis_away_follows_on_redis_failure(
    on_failure: str, tmp_path: Path, origin: Origin
) -> None:
    with running_redis() as server:
        process = PorticoProcess(tmp_path, config(origin, server.url, on_redis_failure=on_failure))
        try:
            with process.client() as http:
                http.get("/products/a")
                assert status_of(http.get("/products/a")).startswith("Portico; hit")
                server.stop()
                try:
                    for _ in range(4):
                        away = http.get("/products/a")
                        if on_failure == "open":
                            assert away.status_code == 200
                            assert status_of(away) == (
                                "Portico; fwd=miss; detail=shared-state-unavailable"
                            )
                        else:
                            check_problem(away, 503, PROBLEMS + "shared-state-unavailable")
                            assert away.headers["retry-after"] == "1"
                            assert "cache-status" not in away.headers
                    assert http.get("/plain/a").status_code == 200
                finally:
                    server.start()
                # Back: stored and served again (a pooled connection that Redis's restart
                # closed fails its next command once, hence the wait).
                wait_for(
                    lambda: status_of(http.get("/products/b")).startswith("Portico; hit"),
                    what="hits once Redis is back",
                )
            # Logged once per ten seconds, not once per request (a slow machine may span two).
            assert 1 <= process.log().count("cache policy of route products: shared state") <= 2
        finally:
            process.stop()
