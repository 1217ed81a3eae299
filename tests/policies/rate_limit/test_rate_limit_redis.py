"""The ``rate-limit`` policy with its counters in a real Redis: one limit for every gateway that
shares the server, and what each ``on_redis_failure`` does when Redis is stopped or silent (an
answer within the timeout, never a hang), logged once and counted."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.gateway import (
    PorticoProcess,
    check_problem,
    route,
    run_portico,
    running_gateway,
)
from tests.support.oauth import free_port
from tests.support.redis import RedisServer, redis_for_session
from tests.support.upstreams import Upstream

from portico.identity.apikeys import generate_key
from portico.shared.redis import RedisState

SHARED_STATE_UNAVAILABLE = "https://portico.dev/problems/shared-state-unavailable"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with redis_for_session() as server:
        yield server


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream("limited")
    yield server
    server.close()


def config(upstream: Upstream, on_failure: str = "open") -> dict[str, Any]:
    limits = [{"name": "shared", "limit": 3, "window": "1h", "by": ["ip"]}]
    entry = {"type": "rate-limit", "limits": limits, "on_redis_failure": on_failure}
    return {
        "services": {"main": {"targets": [upstream.url], "retries": 0}},
        "routes": [route("limited", "/{rest:path}", policies=[entry])],
    }


def test_gateways_sharing_redis_share_one_limit(
    redis_server: RedisServer, upstream: Upstream, tmp_path: Path
) -> None:
    redis_server.flush()
    first_state = RedisState(redis_server.url, timeout=1.0)
    second_state = RedisState(redis_server.url, timeout=1.0)
    with (
        running_gateway(tmp_path / "a", config(upstream), shared=first_state) as first,
        running_gateway(tmp_path / "b", config(upstream), shared=second_state) as second,
        first.client() as one,
        second.client() as two,
    ):
        statuses = [c.get("/x").status_code for c in (one, two, one, two, one, two)]
        assert statuses == [200, 200, 200, 429, 429, 429]


def test_a_stopped_redis_fails_closed_with_503_and_recovers(
    redis_server: RedisServer,
    upstream: Upstream,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis_server.flush()
    state = RedisState(redis_server.url, timeout=0.3)
    caplog.set_level(logging.WARNING, logger="portico.rate_limit")
    with (
        running_gateway(tmp_path, config(upstream, "closed"), shared=state) as running,
        running.client() as http,
    ):
        assert http.get("/x").status_code == 200
        redis_server.stop()
        try:
            answers = [http.get("/x") for _ in range(5)]
        finally:
            redis_server.start()
        for answer in answers:
            check_problem(answer, 503, SHARED_STATE_UNAVAILABLE)
            assert answer.headers["retry-after"] == "1"
            assert answer.headers["ratelimit-policy"] == '"shared";q=3;w=3600'
        failures = running.gateway.stats.counters["portico_rate_limit_redis_failures"]
        assert failures.values[("limited", "closed")] == 5
        # Logged, but once for the whole outage, not once per request.
        lines = [r for r in caplog.records if r.name == "portico.rate_limit"]
        assert len(lines) == 1 and "refused" in lines[0].getMessage()
        assert redis_server.url.split("//")[1] in lines[0].getMessage()
        # Back: counting resumes where it was (the restarted server kept nothing: a new count).
        assert http.get("/x").status_code == 200


def test_a_stopped_redis_fails_open_without_the_ratelimit_field(
    redis_server: RedisServer, upstream: Upstream, tmp_path: Path
) -> None:
    state = RedisState(redis_server.url, timeout=0.3)
    with (
        running_gateway(tmp_path, config(upstream, "open"), shared=state) as running,
        running.client() as http,
    ):
        redis_server.stop()
        try:
            answers = [http.get("/x") for _ in range(6)]
        finally:
            redis_server.start()
        assert {a.status_code for a in answers} == {200}
        assert all("ratelimit" not in a.headers for a in answers)
        assert all("ratelimit-policy" in a.headers for a in answers)
        failures = running.gateway.stats.counters["portico_rate_limit_redis_failures"]
        assert failures.values[("limited", "open")] == 6


class SilentServer:
    """Accepts connections and never answers: a Redis that hangs."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.listener.close()
        for conn in self.held:
            conn.close()


@pytest.mark.parametrize(("on_failure", "status"), [("open", 200), ("closed", 503)])
def test_a_silent_redis_is_given_up_after_the_timeout(
    upstream: Upstream, tmp_path: Path, on_failure: str, status: int
) -> None:
    silent = SilentServer()
    state = RedisState(f"redis://127.0.0.1:{silent.port}/0", timeout=0.3)
    try:
        with (
            running_gateway(tmp_path, config(upstream, on_failure), shared=state) as running,
            running.client(timeout=5.0) as http,
        ):
            # Within the client's 5 s, though Redis never answers: the policy gave up at 0.3 s.
            assert [http.get("/x").status_code for _ in range(3)] == [status] * 3
    finally:
        silent.close()


def test_portico_usage_shows_a_consumers_usage_and_remaining_quota(
    redis_server: RedisServer, upstream: Upstream, tmp_path: Path
) -> None:
    redis_server.flush()
    key = generate_key()
    limits = [
        {"name": "hourly", "limit": 10, "window": "1h"},
        {"name": "daily", "limit": 100, "period": "day"},
        {"name": "per-route", "limit": 5, "window": "1m", "by": ["consumer", "route"]},
        {"name": "by-address", "limit": 50, "window": "1m", "by": ["ip"]},
    ]
    entry = {"type": "rate-limit", "limits": limits, "time_zone": "Asia/Tokyo"}
    cfg = {
        "redis": {"url": redis_server.url},
        "services": {"main": {"targets": [upstream.url], "retries": 0}},
        "tenants": {
            "acme": {"consumers": {"billing": {"api_keys": [{"id": key.id, "sha256": key.sha256}]}}}
        },
        "routes": [
            route(
                "orders", "/{rest:path}", policies=[{"type": "auth", "methods": ["api_key"]}, entry]
            )
        ],
    }
    state = RedisState(redis_server.url, timeout=1.0)
    with running_gateway(tmp_path, cfg, shared=state) as running, running.client() as http:
        for _ in range(3):
            assert http.get("/x", headers={"X-API-Key": key.key}).status_code == 200
    done = run_portico(
        "usage", "--consumer", "acme/billing", "-c", str(tmp_path / "portico.yaml"), "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {row["limit"]: row for row in json.loads(done.stdout)}
    assert set(rows) == {"hourly", "daily", "per-route"}  # by-address counts addresses
    assert (rows["hourly"]["used"], rows["hourly"]["remaining"]) == (3, 7)
    assert (rows["daily"]["used"], rows["daily"]["remaining"]) == (3, 97)
    assert rows["daily"]["span"] == "day (Asia/Tokyo)"
    assert rows["per-route"]["scope"] == "route orders"
    table = run_portico(
        "usage", "--consumer", "acme/billing", "-c", str(tmp_path / "portico.yaml"), cwd=tmp_path
    )
    assert table.returncode == 0 and "remaining" in table.stdout and "97" in table.stdout


def test_portico_usage_without_redis_asks_the_running_gateway(
    upstream: Upstream, tmp_path: Path
) -> None:
    """One process keeps its counters in its memory: ``portico usage`` asks it on its operations
    listener, and prints what ``--json`` prints with Redis."""
    key = generate_key()
    cfg = {
        "operations": {"listen": {"host": "127.0.0.1", "port": free_port()}},
        "services": {"main": {"targets": [upstream.url], "retries": 0}},
        "tenants": {
            "acme": {"consumers": {"billing": {"api_keys": [{"id": key.id, "sha256": key.sha256}]}}}
        },
        "routes": [
            route(
                "orders",
                "/{rest:path}",
                policies=[
                    {"type": "auth", "methods": ["api_key"]},
                    {
                        "type": "rate-limit",
                        "limits": [{"name": "hourly", "limit": 10, "window": "1h"}],
                    },
                ],
            )
        ],
    }
    process = PorticoProcess(tmp_path, cfg)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{process.port}") as http:
            for _ in range(4):
                assert http.get("/x", headers={"X-API-Key": key.key}).status_code == 200
        done = run_portico(
            "usage", "--consumer", "acme/billing", "-c", str(process.config_path), "--json",
            cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        (row,) = json.loads(done.stdout)
        assert (row["limit"], row["used"], row["remaining"]) == ("hourly", 4, 6)
        # The same report, as the listener serves it; a consumer that sent nothing used nothing.
        ops = f"http://127.0.0.1:{cfg['operations']['listen']['port']}"  # type: ignore[index]
        # resets_in counts down in seconds, and a second may pass between the two reports.
        (served,) = httpx.get(f"{ops}/usage/acme/billing").json()
        assert 0 <= row["resets_in"] - served["resets_in"] <= 5
        assert {**served, "resets_in": 0} == {**row, "resets_in": 0}
        (idle,) = httpx.get(f"{ops}/usage/acme/nobody").json()
        assert (idle["used"], idle["remaining"]) == (0, 10)
    finally:
        process.stop()


def test_portico_usage_without_redis_or_gateway_says_why_in_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    (tmp_path / "portico.yaml").write_text(
        "services: {main: {targets: ['http://127.0.0.1:1']}}\nroutes: []\n"
        f"operations: {{listen: '127.0.0.1:{port}'}}\n",
        encoding="utf-8",
    )
    done = run_portico("usage", "--consumer", "acme/billing", cwd=tmp_path)
    assert done.returncode != 0
    assert f"nothing answered on its operations listener at 127.0.0.1:{port}" in done.stderr
    assert "is portico serve running with this config?" in done.stderr
    assert "Traceback" not in done.stderr

    (tmp_path / "portico.yaml").write_text(
        "services: {main: {targets: ['http://127.0.0.1:1']}}\nroutes: []\n"
        "operations: {enabled: false}\n",
        encoding="utf-8",
    )
    disabled = run_portico("usage", "--consumer", "acme/billing", cwd=tmp_path)
    assert disabled.returncode != 0 and "operations.enabled: false" in disabled.stderr


def _script_calls(redis_server: RedisServer) -> int:
    client = redis_server.client()
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )


@pytest.mark.parametrize("lease", ["auto", "off"])
def test_a_busy_process_takes_permits_by_lease_and_never_more_than_the_limit(
    redis_server: RedisServer, upstream: Upstream, tmp_path: Path, lease: str
) -> None:
    redis_server.flush()
    client = redis_server.client()
    client.config_resetstat()
    client.close()
    limit = 1000
    limits = [{"name": "busy", "limit": limit, "window": "1h", "by": ["route"]}]
    entry = {"type": "rate-limit", "limits": limits, "lease": lease}
    cfg = {
        "services": {"main": {"targets": [upstream.url], "retries": 0}},
        "routes": [route("busy", "/{rest:path}", policies=[entry])],
    }
    state = RedisState(redis_server.url, timeout=2.0)
    with running_gateway(tmp_path, cfg, shared=state) as gateway, gateway.client() as http:
        answers = [http.get("/x") for _ in range(1100)]
    statuses = [a.status_code for a in answers]
    calls = _script_calls(redis_server)
    stored = redis_server.client()
    try:
        raw = stored.get("portico:rl:busy:3600s:r=busy")
    finally:
        stored.close()
    assert raw is not None
    counted = int(raw.split()[1])
    # Never more than the limit admitted, and every admitted request counted in Redis.
    assert statuses.count(200) <= limit <= counted
    assert set(statuses) == {200, 429}
    if lease == "off":
        assert calls == len(answers) and statuses.count(200) == limit
    else:
        # Permits came a lease at a time; near the end, a sixteenth of what was left at most,
        # so the limit is spent to within a few permits.
        assert calls < len(answers) / 4, calls
        assert statuses.count(200) >= limit - 16
    # What each answer says is left only falls, and reaches 0 with the 429s.
    remaining = [int(a.headers["ratelimit"].split("r=")[1].split(";")[0]) for a in answers]
    assert remaining == sorted(remaining, reverse=True)
    assert remaining[-1] == 0


def test_concurrent_requests_on_a_busy_key_are_served_from_leases_asked_for_ahead(
    redis_server: RedisServer, upstream: Upstream, tmp_path: Path
) -> None:
    """Many clients at once on a key with room: when a quarter of a lease is left, the next is
    asked for in the background, so few requests wait for Redis and few round trips are made,
    while every admitted request is counted in Redis."""
    redis_server.flush()
    client = redis_server.client()
    client.config_resetstat()
    client.close()
    limits = [{"name": "roomy", "limit": 1_000_000, "window": "1h", "by": ["route"]}]
    cfg = {
        "services": {"main": {"targets": [upstream.url], "retries": 0}},
        "routes": [
            route("roomy", "/{rest:path}", policies=[{"type": "rate-limit", "limits": limits}])
        ],
    }
    clients, each = 16, 150
    state = RedisState(redis_server.url, timeout=2.0)
    with running_gateway(tmp_path, cfg, shared=state) as gateway:

        def send() -> list[int]:
            with gateway.client() as http:
                return [http.get("/x").status_code for _ in range(each)]

        results: list[list[int]] = []
        threads = [threading.Thread(target=lambda: results.append(send())) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    statuses = [status for result in results for status in result]
    calls = _script_calls(redis_server)
    stored = redis_server.client()
    try:
        raw = stored.get("portico:rl:roomy:3600s:r=roomy")
    finally:
        stored.close()

    assert statuses == [200] * clients * each
    assert raw is not None and int(raw.split()[1]) >= len(statuses)  # each one counted
    # Leases double while they last less than 50 ms: a few dozen round trips, not 2,400.
    assert calls < len(statuses) / 10, calls
