"""The access log: one JSON line per request, without query strings or header values."""

from __future__ import annotations

import json
import logging

from tests.gateway.conftest import StartGateway
from tests.support.upstreams import refused_url


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


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
