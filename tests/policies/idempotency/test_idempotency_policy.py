"""The ``idempotency`` policy through a real gateway and a real upstream over sockets, with the
in-process state (a gateway in this process) and with Redis (``portico serve`` with a ``redis``
section): replays, payload mismatches, concurrent retries, missing and malformed keys, keys of
another consumer, 5xx answers, and Redis going away."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from tests.support.gateway import (
    PorticoProcess,
    check_problem,
    route,
    running_gateway,
    wait_for,
)
from tests.support.redis import RedisServer, redis_for_session, running_redis
from tests.support.upstreams import Upstream

from portico.assembly import load_config_text
from portico.config.errors import ConfigError
from portico.identity.apikeys import NewApiKey, generate_key

PROBLEMS = "https://portico.dev/problems/"
KEYS: dict[str, NewApiKey] = {name: generate_key() for name in ("billing", "shop")}


class Gateway(Protocol):
    def client(self, **kwargs: Any) -> httpx.Client: ...


def idempotency(**settings: Any) -> dict[str, Any]:
    return {"type": "idempotency", **settings}


def gateway_config(upstream: Upstream) -> dict[str, Any]:
    def key_entry(name: str) -> dict[str, Any]:
        return {"id": KEYS[name].id, "sha256": KEYS[name].sha256}

    return {
        "services": {"main": {"targets": [upstream.url], "retries": 0}},
        "tenants": {
            "acme": {"consumers": {"billing": {"api_keys": [key_entry("billing")]}}},
            "globex": {"consumers": {"shop": {"api_keys": [key_entry("shop")]}}},
        },
        "routes": [
            route("orders", "/orders/{rest:path}", strip_prefix="/orders",
                  policies=[idempotency()]),
            route("strict", "/strict/{rest:path}", strip_prefix="/strict",
                  policies=[idempotency(required=True)]),
            route("mine", "/mine/{rest:path}", strip_prefix="/mine",
                  policies=[{"type": "auth", "methods": ["api_key"]}, idempotency()]),
            route("errors", "/errors/{rest:path}", strip_prefix="/errors",
                  policies=[idempotency(store_server_errors=True)]),
        ],
    }  # fmt: skip


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with redis_for_session() as server:
        yield server


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream("idempotent")
    yield server
    server.close()


@contextlib.contextmanager
def serving(
    kind: str, directory: Path, config: dict[str, Any], redis_url: str
) -> Iterator[Gateway]:
    """A gateway with the in-process state (in this process), or ``portico serve`` with Redis."""
    if kind == "memory":
        with running_gateway(directory, config) as running:
            yield running
        return
    process = PorticoProcess(directory, {**config, "redis": {"url": redis_url, "timeout": "1s"}})
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module", params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture(scope="module")
def redis_url(request: pytest.FixtureRequest, backend: str) -> str:
    if backend == "memory":
        return ""
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture(scope="module")
def gateway(
    backend: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp(backend)
    with serving(backend, directory, gateway_config(upstream), redis_url) as running:
        yield running


@pytest.fixture
def http(gateway: Gateway) -> Iterator[httpx.Client]:
    with gateway.client() as client:
        yield client


def new_key() -> str:
    return f'"{uuid.uuid4()}"'


def post(http: httpx.Client, url: str, key: str | None, body: bytes = b'{"amount": 10}',
         **headers: str) -> httpx.Response:  # fmt: skip
    fields = {"content-type": "application/json", **headers}
    if key is not None:
        fields["Idempotency-Key"] = key
    return http.post(url, content=body, headers=fields)


def retried(http: httpx.Client, url: str, key: str, **headers: str) -> httpx.Response:
    """A retry of a request just answered. With Redis the record is written as the answer goes
    out: a retry at that very instant is told 409 (in flight, as the draft says), and the next
    one gets the replay. 409s never reach the upstream."""
    response = wait_for(lambda: _not_in_flight(post(http, url, key, **headers)), what="retry")
    assert isinstance(response, httpx.Response)
    return response


def test_a_retry_with_the_same_key_and_payload_replays_the_first_response(
    upstream: Upstream, http: httpx.Client
) -> None:
    key = new_key()
    first = post(http, "/orders/charge", key)
    assert first.status_code == 200
    assert "idempotent-replayed" not in first.headers
    before = upstream.count
    again = retried(http, "/orders/charge", key)
    assert upstream.count == before
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers["x-request-id"] != first.headers["x-request-id"]


def test_a_bare_key_is_the_same_key_as_its_quoted_form(
    upstream: Upstream, http: httpx.Client
) -> None:
    bare = str(uuid.uuid4())
    post(http, "/orders/charge", bare)
    again = retried(http, "/orders/charge", f'"{bare}"')
    assert again.headers.get("idempotent-replayed") == "true"


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/orders/charge", b'{"amount": 11}'),
        ("/orders/refund", b'{"amount": 10}'),
        ("/orders/charge?currency=eur", b'{"amount": 10}'),
    ],
)
def test_the_same_key_with_another_payload_is_422(
    url: str, body: bytes, upstream: Upstream, http: httpx.Client
) -> None:
    key = new_key()
    post(http, "/orders/charge", key)
    before = upstream.count
    reused = post(http, url, key, body)
    assert upstream.count == before
    check_problem(reused, 422, PROBLEMS + "idempotency-key-reused")


def test_the_same_key_with_another_method_is_422(upstream: Upstream, http: httpx.Client) -> None:
    key = new_key()
    post(http, "/orders/charge", key)
    patched = http.patch(
        "/orders/charge", content=b'{"amount": 10}', headers={"Idempotency-Key": key}
    )
    check_problem(patched, 422, PROBLEMS + "idempotency-key-reused")


def test_two_identical_requests_at_once_reach_the_upstream_once_and_the_other_gets_409(
    backend: str, redis_url: str, tmp_path: Path
) -> None:
    held = Upstream("held")  # answers /hold only once released
    key = new_key()
    barrier = threading.Barrier(2)
    try:
        with (
            serving(backend, tmp_path, gateway_config(held), redis_url) as gateway,
            gateway.client() as one,
            gateway.client() as two,
            ThreadPoolExecutor(2) as pool,
        ):

            def send(client: httpx.Client) -> httpx.Response:
                barrier.wait()
                return post(client, "/orders/hold", key)

            futures = [pool.submit(send, one), pool.submit(send, two)]
            wait_for(lambda: any(f.done() for f in futures), what="the 409")
            refused = next(f for f in futures if f.done()).result()
            check_problem(refused, 409, PROBLEMS + "idempotency-key-in-flight")
            assert refused.headers["retry-after"] == "1"
            assert held.count == 1
            held.release_held()
            answered = [f.result() for f in futures if f.result().status_code == 200]
            assert len(answered) == 1
            assert held.count == 1
            replay = wait_for(lambda: _replayed(post(one, "/orders/hold", key)), what="replay")
            assert replay.content == answered[0].content
            assert held.count == 1
    finally:
        held.close()


def _replayed(response: httpx.Response) -> httpx.Response | None:
    # With Redis the record is written just after the answer: a retry within that instant is
    # still told 409, as the draft says for a request in flight.
    return response if response.headers.get("idempotent-replayed") == "true" else None


def test_a_missing_key_is_400_where_required_and_passes_elsewhere(http: httpx.Client) -> None:
    check_problem(post(http, "/strict/charge", None), 400, PROBLEMS + "idempotency-key-missing")
    assert post(http, "/orders/charge", None).status_code == 200
    assert http.get("/strict/charge").status_code == 200  # GET needs no key


@pytest.mark.parametrize(
    "key",
    ['""', '"unterminated', '"bad\\escape"', '"a" b', "two words", "x" * 300, '"\u00e9"', ""],
)
def test_a_malformed_key_is_400(key: str, http: httpx.Client) -> None:
    response = http.post(
        "/strict/charge", content=b"{}", headers=[("Idempotency-Key", key.encode("latin-1"))]
    )
    check_problem(response, 400, PROBLEMS + "idempotency-key-invalid")


def test_two_idempotency_key_fields_are_400(http: httpx.Client) -> None:
    response = http.post(
        "/orders/charge",
        content=b"{}",
        headers=[("Idempotency-Key", '"a"'), ("Idempotency-Key", '"b"')],
    )
    check_problem(response, 400, PROBLEMS + "idempotency-key-invalid")


def test_one_consumer_cannot_replay_anothers_response(
    upstream: Upstream, http: httpx.Client
) -> None:
    key = new_key()
    billing = post(http, "/mine/charge", key, **{"X-API-Key": KEYS["billing"].key})
    assert billing.status_code == 200
    before = upstream.count
    shop = post(http, "/mine/charge", key, **{"X-API-Key": KEYS["shop"].key})
    assert upstream.count == before + 1
    assert "idempotent-replayed" not in shop.headers
    assert "acme/billing" not in shop.text
    again = retried(http, "/mine/charge", key, **{"X-API-Key": KEYS["billing"].key})
    assert again.headers["idempotent-replayed"] == "true"


def test_a_5xx_is_not_stored_so_a_retry_runs_again(upstream: Upstream, http: httpx.Client) -> None:
    key = new_key()
    assert post(http, "/orders/status/503", key).status_code == 503
    before = upstream.count
    # With Redis the key is freed while the 503 goes out: a retry at that instant may still be
    # told 409 (in flight), and the next one runs.
    retry = wait_for(lambda: _not_in_flight(post(http, "/orders/status/503", key)), what="run")
    assert retry.status_code == 503
    assert upstream.count == before + 1
    assert "idempotent-replayed" not in retry.headers


def _not_in_flight(response: httpx.Response) -> httpx.Response | None:
    return None if response.status_code == 409 else response


def test_store_server_errors_replays_a_5xx(upstream: Upstream, http: httpx.Client) -> None:
    key = new_key()
    post(http, "/errors/status/500", key)
    retry = retried(http, "/errors/status/500", key)
    assert retry.status_code == 500
    assert retry.headers["idempotent-replayed"] == "true"


def test_a_4xx_of_the_upstream_is_stored_and_replayed(http: httpx.Client) -> None:
    key = new_key()
    post(http, "/orders/status/404", key)
    retry = retried(http, "/orders/status/404", key)
    assert retry.status_code == 404
    assert retry.headers["idempotent-replayed"] == "true"


def test_a_204_is_stored_and_replayed(http: httpx.Client) -> None:
    key = new_key()
    assert post(http, "/orders/status/204", key).status_code == 204
    retry = retried(http, "/orders/status/204", key)
    assert retry.status_code == 204
    assert retry.headers["idempotent-replayed"] == "true"


def test_keys_of_one_route_are_not_keys_of_another(upstream: Upstream, http: httpx.Client) -> None:
    key = new_key()
    post(http, "/orders/charge", key)
    before = upstream.count
    other = post(http, "/errors/charge", key)
    assert upstream.count == before + 1
    assert "idempotent-replayed" not in other.headers


# -- Redis going away ----------------------------------------------------------------------------


@pytest.mark.parametrize("on_failure", ["open", "closed"])
def test_redis_away_follows_on_redis_failure(
    on_failure: str, tmp_path: Path, upstream: Upstream
) -> None:
    with running_redis() as server:
        config = {
            "redis": {"url": server.url, "timeout": "200ms"},
            "services": {"main": {"targets": [upstream.url], "retries": 0}},
            "routes": [
                route("orders", "/orders/{rest:path}", strip_prefix="/orders",
                      policies=[idempotency(on_redis_failure=on_failure)]),
            ],
        }  # fmt: skip
        process = PorticoProcess(tmp_path, config)
        try:
            with process.client() as http:
                assert post(http, "/orders/charge", new_key()).status_code == 200
                server.stop()
                try:
                    for _ in range(4):
                        away = post(http, "/orders/charge", new_key())
                        if on_failure == "closed":
                            check_problem(away, 503, PROBLEMS + "shared-state-unavailable")
                            assert away.headers["retry-after"] == "1"
                        else:
                            assert away.status_code == 200
                finally:
                    server.start()
                # Back: replays again (a pooled connection that Redis's restart closed fails its
                # next command once, hence the wait).
                key = new_key()
                wait_for(
                    lambda: post(http, "/orders/charge", key).headers.get("idempotent-replayed"),
                    what="replays once Redis is back",
                )
            log = process.log()
            # Logged once per ten seconds, not once per request (a slow machine may span two).
            assert 1 <= log.count("idempotency policy of route orders: shared state failed") <= 2
        finally:
            process.stop()


def test_idempotency_before_auth_is_refused_since_a_replay_would_skip_auth() -> None:
    text = """\
services:
  payments:
    targets: [http://127.0.0.1:9]
    policies:
      - type: idempotency
routes:
  - name: charges
    match: {path: /charges}
    service: payments
    policies:
      - type: auth
        methods: [api_key]
  - name: refunds
    match: {path: /refunds}
    service: payments
    policies:
      - type: auth
        methods: [api_key]
      - type: idempotency
"""
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "portico.yaml")
    message = str(caught.value)
    assert (
        "portico.yaml:5:15: services.payments.policies[0].type: route 'charges' runs auth after "
        "this idempotency policy" in message
    )
    assert "'refunds'" not in message


def test_a_lock_shorter_than_the_upstream_may_take_is_refused() -> None:
    text = """\
services:
  slow:
    targets: [http://127.0.0.1:9]
    timeouts: {read: 5m}
routes:
  - name: reports
    match: {path: /reports}
    service: slow
    policies:
      - type: idempotency
"""
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "portico.yaml")
    assert (
        "portico.yaml:10:9: routes[0].policies[0]: lock_timeout (120s) must be longer than "
        "timeouts.read of service 'slow' (300s)" in str(caught.value)
    )
    load_config_text(text + "        lock_timeout: 6m\n", "portico.yaml")
