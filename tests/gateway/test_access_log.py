"""The access log: one JSON line per request, without query strings or header values."""

from __future__ import annotations

import json
import logging

from tests.gateway.conftest import StartGateway
from tests.support.gateway import wait_for
from tests.support.upstreams import Upstream, refused_url

from portico.identity.apikeys import generate_key

FIELDS = (
    "request_id",
    "client",
    "method",
    "path",
    "status",
    "route",
    "service",
    "target",
    "consumer",
    "tenant",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "upstream_ms",
    "failure",
)


class Capture(logging.Handler):
    """Each record as the JSON log format writes it: the message and the record's fields."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = {k: getattr(record, k) for k in FIELDS if hasattr(record, k)}
        self.lines.append(json.dumps({"message": record.getMessage(), **fields}))


def test_each_request_is_one_json_line_without_query_or_headers(
    start_gateway: StartGateway,
) -> None:
    refused = refused_url()  # nothing listens there: the route answers 502
    gateway = start_gateway(
        {
            "gateway": {"access_log": True},
            "services": {"gone": {"targets": [refused], "retries": 0}},
            "routes": [{"name": "gone", "match": {"path": "/gone/{rest:path}"}, "service": "gone"}],
        }
    )
    capture = Capture()
    logger = logging.getLogger("portico.access")
    logger.addHandler(capture)
    logger.setLevel(logging.INFO)
    try:
        with gateway.client() as client:
            missing = client.get("/nowhere?api_key=s3cret", headers={"X-Secret": "hidden"})
            failed = client.post("/gone/x?token=qwerty", content=b"{}")
    finally:
        logger.removeHandler(capture)

    assert (missing.status_code, failed.status_code) == (404, 502)
    records = [json.loads(line) for line in capture.lines]
    assert [(r["method"], r["path"], r["status"]) for r in records] == [
        ("GET", "/nowhere", 404),
        ("POST", "/gone/x", 502),
    ]
    assert records[0]["request_id"] == missing.headers["x-request-id"]
    assert all(r["duration_ms"] >= 0 for r in records)
    text = "\n".join(capture.lines)
    # (Secrets with letters past f: a random hex request id could contain "abc".)
    assert "s3cret" not in text and "hidden" not in text and "qwerty" not in text


def test_the_line_names_route_service_target_consumer_bytes_and_durations(
    start_gateway: StartGateway,
) -> None:
    key = generate_key()
    upstream = Upstream("main")
    try:
        gateway = start_gateway(
            {
                "gateway": {"access_log": True},
                "services": {"main": {"targets": [upstream.url]}},
                "tenants": {
                    "acme": {
                        "consumers": {
                            "billing": {"api_keys": [{"id": key.id, "sha256": key.sha256}]}
                        }
                    }
                },
                "routes": [
                    {
                        "name": "orders",
                        "match": {"path": "/orders/{rest:path}"},
                        "service": "main",
                        "policies": [{"type": "auth", "methods": ["api_key"]}],
                    }
                ],
            }
        )
        capture = Capture()
        logger = logging.getLogger("portico.access")
        logger.addHandler(capture)
        logger.setLevel(logging.INFO)
        try:
            with gateway.client() as client:
                ok = client.post(
                    "/orders/bytes/2000", content=b"x" * 300, headers={"X-API-Key": key.key}
                )
                refused = client.get("/orders/x", headers={"X-API-Key": "pk_wrong.key"})
            wait_for(lambda: len(capture.lines) >= 2, what="two access lines")
        finally:
            logger.removeHandler(capture)
    finally:
        upstream.close()

    assert (ok.status_code, refused.status_code) == (200, 401)
    served, denied = (json.loads(line) for line in capture.lines)
    assert served["route"] == "orders" and served["service"] == "main"
    assert served["target"] == upstream.url
    assert served["consumer"] == "acme/billing" and served["tenant"] == "acme"
    assert served["bytes_in"] > 300
    assert served["bytes_out"] > len(ok.content)  # the body and the head
    assert served["upstream_ms"] is not None and served["upstream_ms"] <= served["duration_ms"]
    assert "failure" not in served
    assert denied["route"] == "orders" and denied["consumer"] is None
    assert denied["target"] is None and denied["upstream_ms"] is None
    # Sub-millisecond precision: a whole-millisecond clock would give integral values only.
    assert any(r["duration_ms"] != int(r["duration_ms"]) for r in (served, denied))
    text = "\n".join(capture.lines)
    assert key.key not in text and "pk_wrong.key" not in text


def test_with_metrics_off_the_line_still_has_its_durations(start_gateway: StartGateway) -> None:
    """The access log times the exchange itself: it does not depend on /metrics counting."""
    upstream = Upstream("main")
    try:
        gateway = start_gateway(
            {
                "gateway": {"access_log": True},
                "operations": {"metrics": False},
                "services": {"main": {"targets": [upstream.url]}},
                "routes": [{"name": "all", "match": {"path": "/{rest:path}"}, "service": "main"}],
            }
        )
        capture = Capture()
        logger = logging.getLogger("portico.access")
        logger.addHandler(capture)
        logger.setLevel(logging.INFO)
        try:
            with gateway.client() as client:
                assert client.get("/x").status_code == 200
            wait_for(lambda: capture.lines, what="an access line")
        finally:
            logger.removeHandler(capture)
    finally:
        upstream.close()
    (line,) = (json.loads(text) for text in capture.lines)
    assert line["duration_ms"] > 0
    assert line["upstream_ms"] is not None and 0 < line["upstream_ms"] <= line["duration_ms"]
