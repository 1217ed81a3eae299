"""The circuit breaker and target health state machines, driven by an injected clock."""

from __future__ import annotations

from portico.config import model
from portico.gateway.health import CircuitBreaker, CircuitState, TargetHealth


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_circuit_opens_after_threshold_and_half_opens_after_reset_timeout() -> None:
    clock = Clock()
    breaker = CircuitBreaker(model.CircuitBreaker(failure_threshold=3, reset_timeout=10), clock)
    for _ in range(2):
        assert not breaker.failure(), "not opened yet"
    assert breaker.state is CircuitState.CLOSED and breaker.allows()
    assert breaker.failure(), "this failure opened the circuit"
    assert breaker.state is CircuitState.OPEN and not breaker.allows()
    clock.now += 10
    assert breaker.allows()
    breaker.begin()
    assert breaker.state is CircuitState.HALF_OPEN
    assert not breaker.allows(), "only one trial request while half-open"
    breaker.success()
    assert breaker.state is CircuitState.CLOSED and breaker.allows()


def test_failed_trial_reopens_the_circuit() -> None:
    clock = Clock()
    breaker = CircuitBreaker(model.CircuitBreaker(failure_threshold=1, reset_timeout=5), clock)
    breaker.failure()
    clock.now += 5
    breaker.begin()
    breaker.failure()
    assert breaker.state is CircuitState.OPEN and not breaker.allows()


def test_success_resets_the_consecutive_failure_count() -> None:
    breaker = CircuitBreaker(model.CircuitBreaker(failure_threshold=2), Clock())
    breaker.failure()
    breaker.success()
    breaker.failure()
    assert breaker.state is CircuitState.CLOSED


def test_passive_check_takes_target_out_until_recovery_time() -> None:
    clock = Clock()
    checks = model.HealthCheck(
        passive=model.PassiveHealthCheck(unhealthy_threshold=2, recovery_after=30)
    )
    health = TargetHealth("orders", "http://10.0.0.5:8080", checks, None, clock)
    health.failure("connection refused")
    assert health.available()
    health.failure("connection refused")
    assert not health.available()
    clock.now += 30
    assert health.available()
    assert health.fails_on_status(503) and not health.fails_on_status(500)


def test_active_probes_need_consecutive_results_to_flip() -> None:
    checks = model.HealthCheck(
        active=model.ActiveHealthCheck(healthy_threshold=2, unhealthy_threshold=2)
    )
    health = TargetHealth("orders", "http://10.0.0.5:8080", checks, None, Clock())
    health.probe_result(False, "status 503")
    assert health.available()
    health.probe_result(False, "status 503")
    assert not health.available()
    health.probe_result(True)
    assert not health.available()
    health.probe_result(True)
    assert health.available()
