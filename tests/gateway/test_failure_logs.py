"""Failure logs that explain: each names the service and the target and says why, in the message
and in the record's fields, while real upstreams refuse, time out, break or fail their probes."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from tests.gateway.conftest import MakeUpstream, StartGateway
from tests.support.gateway import check_problem, proxy_config, wait_for, write_config
from tests.support.upstreams import Upstream, refused_url

from portico.assembly import load_config
from portico.config.errors import ConfigError

BASE = "https://portico.dev/problems/"
LOGGER = "portico.gateway"


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The records of the data plane's loggers, INFO and above, as they arrive."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    return caplog


def gateway_records(records: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    # caplog.records is looked up each time: pytest gives each test phase a new list.
    return [r for r in records.records if r.name == LOGGER or r.name.startswith(LOGGER + ".")]


def one_record(records: pytest.LogCaptureFixture, words: str) -> logging.LogRecord:
    """The one data-plane record whose message holds ``words``, waiting for it to be written
    (health probes log from the gateway's thread on their own schedule)."""

    def found() -> list[logging.LogRecord]:
        return [r for r in gateway_records(records) if words in r.getMessage()]

    wait_for(lambda: len(found()) > 0, what=f"a log record with {words!r}")
    matches = found()
    assert len(matches) == 1, [r.getMessage() for r in matches]
    return matches[0]


def assert_names(record: logging.LogRecord, service: str, target: str) -> None:
    """The service and the target are in the sentence and in the record's fields."""
    message = record.getMessage()
    assert f"service {service!r} target {target}:" in message, message
    assert record.__dict__["service"] == service
    assert record.__dict__["target"] == target


def test_refused_connection_502_is_logged_with_service_target_request_id_and_reason(
    records: pytest.LogCaptureFixture, start_gateway: StartGateway
) -> None:
    target = refused_url()
    gateway = start_gateway(proxy_config(target, retries=0, circuit_breaker=None))
    with gateway.client() as http:
        response = http.get("/orders?api_key=query-secret", headers={"x-api-key": "header-secret"})
    check_problem(response, 502, BASE + "upstream-unavailable")
    record = one_record(records, "answered 502 after 1 attempt:")
    assert record.levelno == logging.WARNING
    assert_names(record, "main", target)
    assert "connection refused" in record.getMessage()
    assert record.__dict__["request_id"] == response.headers["x-request-id"]
    assert record.__dict__["request_id"] in record.getMessage()
    assert record.__dict__["error"] == "connect"
    assert record.__dict__["status"] == 502
    for logged in gateway_records(records):
        text = logged.getMessage() + repr(vars(logged))
        assert "query-secret" not in text and "header-secret" not in text, text


def test_read_timeout_504_is_logged_with_the_timeout(
    upstream: Upstream, records: pytest.LogCaptureFixture, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url, retries=0, timeouts={"read": "0.3s"}))
    with gateway.client() as http:
        response = http.get("/slow?head=3")
    check_problem(response, 504, BASE + "upstream-timeout")
    record = one_record(records, "answered 504")
    assert_names(record, "main", upstream.url)
    assert "read timeout: nothing received for 0.3s" in record.getMessage()
    assert record.__dict__["error"] == "timeout"
    assert record.__dict__["request_id"] == response.headers["x-request-id"]


def test_circuit_opening_names_the_target_the_count_and_the_last_failure(
    upstream: Upstream, records: pytest.LogCaptureFixture, start_gateway: StartGateway
) -> None:
    upstream.mode = "drop"
    gateway = start_gateway(
        proxy_config(
            upstream.url,
            retries=0,
            circuit_breaker={"failure_threshold": 2, "reset_timeout": "60s"},
        )
    )
    with gateway.client() as http:
        for _ in range(2):
            check_problem(http.get("/who"), 502, BASE + "upstream-unavailable")
        refused = http.get("/who")
    check_problem(refused, 503, BASE + "no-healthy-upstream")

    opened = one_record(records, "circuit opened")
    assert opened.levelno == logging.WARNING
    assert_names(opened, "main", upstream.url)
    closed = "the upstream closed the connection before the response was complete"
    assert f"circuit opened after 2 consecutive failures (last: {closed})" in opened.getMessage()

    # The 503 that follows says why no target could take the request.
    no_target = one_record(records, "answered 503")
    assert f"service 'main': request {refused.headers['x-request-id']}" in no_target.getMessage()
    assert f"{upstream.url} circuit open" in no_target.getMessage()
    assert no_target.__dict__["service"] == "main"
    assert no_target.__dict__["request_id"] == refused.headers["x-request-id"]


def test_active_health_check_logs_the_failed_probes_and_the_return(
    upstream: Upstream, records: pytest.LogCaptureFixture, start_gateway: StartGateway
) -> None:
    upstream.healthy = False
    start_gateway(
        proxy_config(
            upstream.url,
            health_check={
                "active": {
                    "path": "/health",
                    "interval": "0.1s",
                    "healthy_threshold": 1,
                    "unhealthy_threshold": 2,
                }
            },
        )
    )
    down = one_record(records, "failed health probe")
    assert down.levelno == logging.WARNING
    assert_names(down, "main", upstream.url)
    assert "out of rotation after 2 failed health probes of /health (last: status 503)" in (
        down.getMessage()
    )
    upstream.healthy = True
    back = one_record(records, "healthy again")
    assert_names(back, "main", upstream.url)


def test_probe_of_a_refusing_target_says_connection_refused(
    records: pytest.LogCaptureFixture, start_gateway: StartGateway
) -> None:
    target = refused_url()
    start_gateway(
        proxy_config(
            target, health_check={"active": {"interval": "0.1s", "unhealthy_threshold": 1}}
        )
    )
    record = one_record(records, "failed health probe")
    assert_names(record, "main", target)
    assert "out of rotation after 1 failed health probe of /health (last: connection refused)" in (
        record.getMessage()
    )


def test_passive_check_logs_the_failing_status(
    make_upstream: MakeUpstream, records: pytest.LogCaptureFixture, start_gateway: StartGateway
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
                    "recovery_after": "60s",
                }
            },
        )
    )
    with gateway.client() as http:
        for _ in range(4):
            http.get("/who")
    record = one_record(records, "out of rotation")
    assert_names(record, "main", failing.url)
    assert "out of rotation for 60s after 2 consecutive failures (last: status 503)" in (
        record.getMessage()
    )


def test_retry_is_logged_with_the_failed_target_and_the_next_one(
    upstream: Upstream, records: pytest.LogCaptureFixture, start_gateway: StartGateway
) -> None:
    dead = refused_url()
    gateway = start_gateway(proxy_config(dead, upstream.url, retries=1, circuit_breaker=None))
    with gateway.client() as http:
        # Round robin: one of the first two requests goes to the refusing target first.
        responses = [http.get("/who") for _ in range(2)]
    assert [r.status_code for r in responses] == [200, 200]
    record = one_record(records, "retrying")
    assert record.levelno == logging.INFO
    assert_names(record, "main", dead)
    assert f"failed (connect: connection refused); retrying on {upstream.url}" in (
        record.getMessage()
    )
    assert not [r for r in gateway_records(records) if r.levelno >= logging.WARNING]


def test_response_cut_short_after_its_head_is_logged(
    upstream: Upstream, records: pytest.LogCaptureFixture, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url, retries=0))
    with gateway.client() as http, pytest.raises(httpx.HTTPError):
        http.get("/drop?after=5000")
    record = one_record(records, "cut short")
    assert record.levelno == logging.WARNING
    assert_names(record, "main", upstream.url)
    assert "the upstream closed the connection before the response was complete" in (
        record.getMessage()
    )


def test_a_target_password_never_reaches_the_log(tmp_path: Path) -> None:
    """A target URL with credentials is refused before anything runs (they would have reached
    the upstream in its Host field); the refusal does not repeat them."""
    with_userinfo = refused_url().replace("http://", "http://ops:target-password@")
    path = write_config(tmp_path / "portico.yaml", proxy_config(with_userinfo, retries=0))
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert "cannot carry credentials" in str(refused.value)
    assert "target-password" not in str(refused.value)


def test_start_log_brackets_an_ipv6_address(
    upstream: Upstream, records: pytest.LogCaptureFixture, start_gateway: StartGateway
) -> None:
    config = proxy_config(upstream.url)
    config["gateway"] = {"listen": "[::1]:0"}
    gateway = start_gateway(config)
    record = one_record(records, "gateway listening on")
    assert record.getMessage() == f"gateway listening on http://[::1]:{gateway.port}"
