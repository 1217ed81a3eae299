"""Taking targets out of rotation and back: circuit breaker, active and passive health checks."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from tests.gateway.conftest import MakeUpstream, StartGateway
from tests.support.gateway import RawConnection, check_problem, proxy_config, wait_for
from tests.support.upstreams import Upstream

NO_HEALTHY = "https://portico.dev/problems/no-healthy-upstream"
UNAVAILABLE = "https://portico.dev/problems/upstream-unavailable"


def served_by(http: httpx.Client, n: int) -> list[str]:
    out = []
    for _ in range(n):
        response = http.get("/who")
        assert response.status_code == 200, response.text
        out.append(response.json()["upstream"])
    return out


def until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    wait_for(condition, timeout=timeout, interval=0.05, what=what)


def test_circuit_opens_fails_fast_half_opens_and_closes(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    upstream.mode = "drop"
    gateway = start_gateway(
        proxy_config(
            upstream.url,
            retries=0,
            circuit_breaker={"failure_threshold": 3, "reset_timeout": "3s"},
        )
    )
    with gateway.client() as http:
        for _ in range(3):
            check_problem(http.get("/who"), 502, UNAVAILABLE)
        assert upstream.count == 3

        # Open: answered at once, without contacting the target.
        response = http.get("/who")
        check_problem(response, 503, NO_HEALTHY)
        assert response.headers["retry-after"] == "1"
        assert upstream.count == 3

        # After reset_timeout one trial goes through; it fails, so the circuit opens again.
        until(lambda: http.get("/who").status_code != 503, "the half-open trial")
        assert upstream.count == 4
        check_problem(http.get("/who"), 503, NO_HEALTHY)
        assert upstream.count == 4

        # The next trial succeeds and closes the circuit.
        upstream.mode = "normal"
        until(lambda: http.get("/who").status_code == 200, "a successful trial")
        assert served_by(http, 5) == ["main"] * 5


def test_open_circuit_sends_traffic_to_the_other_targets(
    make_upstream: MakeUpstream, start_gateway: StartGateway
) -> None:
    bad, good = make_upstream("bad"), make_upstream("good")
    bad.mode = "drop"
    gateway = start_gateway(
        proxy_config(
            bad.url,
            good.url,
            retries=1,
            circuit_breaker={"failure_threshold": 2, "reset_timeout": "60s"},
        )
    )
    with gateway.client() as http:
        assert set(served_by(http, 10)) == {"good"}
    assert bad.count == 2, "the bad target got requests only until its circuit opened"


def test_active_health_check_takes_a_target_out_and_brings_it_back(
    make_upstream: MakeUpstream, start_gateway: StartGateway
) -> None:
    a, b = make_upstream("a"), make_upstream("b")
    gateway = start_gateway(
        proxy_config(
            a.url,
            b.url,
            health_check={
                "active": {
                    "path": "/health",
                    "interval": "0.1s",
                    "timeout": "1s",
                    "healthy_threshold": 2,
                    "unhealthy_threshold": 2,
                }
            },
        )
    )
    until(lambda: a.health_probes >= 1 and b.health_probes >= 1, "the first probes")
    with gateway.client() as http:
        assert sorted(served_by(http, 4)) == ["a", "a", "b", "b"]

        a.healthy = False
        probes = a.health_probes
        until(lambda: a.health_probes >= probes + 3, "enough failed probes")
        before = a.count
        assert served_by(http, 6) == ["b"] * 6
        assert a.count == before

        a.healthy = True
        until(lambda: "a" in served_by(http, 2), "a back in rotation")


def test_no_healthy_target_is_503(upstream: Upstream, start_gateway: StartGateway) -> None:
    upstream.healthy = False
    gateway = start_gateway(
        proxy_config(
            upstream.url,
            health_check={"active": {"interval": "0.1s", "unhealthy_threshold": 1}},
        )
    )
    with gateway.client() as http:
        until(lambda: http.get("/who").status_code == 503, "the target to be taken out")
        response = http.get("/who")
    check_problem(response, 503, NO_HEALTHY, secrets=(str(upstream.port),))
    assert response.headers["retry-after"] == "1"


def test_active_health_check_uses_the_expected_statuses(
    make_upstream: MakeUpstream, start_gateway: StartGateway
) -> None:
    a, b = make_upstream("a"), make_upstream("b")
    # /status/204 is the probe path: 204 is healthy only because it is listed.
    gateway = start_gateway(
        proxy_config(
            a.url,
            b.url,
            health_check={
                "active": {
                    "path": "/status/204",
                    "interval": "0.1s",
                    "unhealthy_threshold": 1,
                    "expected_statuses": [200],
                }
            },
        )
    )
    with gateway.client() as http:
        until(lambda: http.get("/who").status_code == 503, "both targets out")


def test_passive_check_takes_a_failing_target_out_until_recovery(
    make_upstream: MakeUpstream, start_gateway: StartGateway
) -> None:
    failing, good = make_upstream("failing"), make_upstream("good")
    failing.mode = "status"
    failing.forced_status = 503
    gateway = start_gateway(
        proxy_config(
            failing.url,
            good.url,
            retries=0,
            circuit_breaker=None,
            health_check={
                "passive": {
                    "unhealthy_threshold": 2,
                    "failure_statuses": [503],
                    "recovery_after": "2s",
                }
            },
        )
    )
    with gateway.client() as http:
        # Upstream errors pass through unchanged while they count against the target.
        statuses = [http.get("/who").status_code for _ in range(4)]
        assert sorted(statuses) == [200, 200, 503, 503]
        assert failing.count == 2

        assert served_by(http, 6) == ["good"] * 6
        assert failing.count == 2

        failing.mode = "normal"
        until(lambda: "failing" in served_by(http, 2), "the target back after recovery_after")


def test_passive_check_counts_connection_failures(
    make_upstream: MakeUpstream, start_gateway: StartGateway
) -> None:
    dropping, good = make_upstream("dropping"), make_upstream("good")
    dropping.mode = "drop"
    gateway = start_gateway(
        proxy_config(
            dropping.url,
            good.url,
            retries=1,
            circuit_breaker=None,
            health_check={"passive": {"unhealthy_threshold": 2, "recovery_after": "60s"}},
        )
    )
    with gateway.client() as http:
        assert set(served_by(http, 10)) == {"good"}
    assert dropping.count == 2


def test_half_open_trial_abandoned_by_its_client_does_not_stall_the_circuit(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    upstream.mode = "drop"
    gateway = start_gateway(
        proxy_config(
            upstream.url,
            retries=0,
            circuit_breaker={"failure_threshold": 1, "reset_timeout": "1s"},
        )
    )
    with gateway.client() as http:
        check_problem(http.get("/who"), 502, UNAVAILABLE)
        check_problem(http.get("/who"), 503, NO_HEALTHY)
    upstream.mode = "normal"

    # The trial request after reset_timeout is one whose client goes away before the answer.
    def trial_reached_upstream() -> bool:
        conn = RawConnection(gateway.port, timeout=10)
        conn.send(b"GET /hold HTTP/1.1\r\nHost: a\r\n\r\n")
        try:
            wait_for(lambda: "/hold" in upstream.paths(), timeout=0.5, what="the trial")
        except AssertionError:
            return False
        finally:
            conn.close()
        return True

    until(trial_reached_upstream, "the half-open trial")
    # The gateway dropped the upstream exchange (the upstream saw its connection close) before
    # the upstream would have answered.
    wait_for(lambda: upstream.in_flight == 0, what="the upstream exchange to be dropped")
    upstream.release_held()
    with gateway.client() as http:
        until(
            lambda: http.get("/who").status_code == 200,
            "the circuit to let requests through",
            timeout=5,
        )
