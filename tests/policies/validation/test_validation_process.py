"""The validation policy in a real ``portico serve``: refusals and reported responses reach
/metrics as ``portico_validation_failures_total``, and an edited document is applied by the next
reload (SIGHUP), an invalid one refused while the previous keeps serving."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from tests.policies.validation.orders_upstream import OrdersUpstream
from tests.support.gateway import PorticoProcess, route, wait_for

HERE = Path(__file__).parent


def failures(process: PorticoProcess) -> dict[tuple[str, str], float]:
    text = httpx.get(process.operations_url + "/metrics", trust_env=False, timeout=10).text
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "portico_validation_failures_total":
                out[(sample.labels["route"], sample.labels["direction"])] = sample.value
    return out


def test_refusals_are_counted_and_an_edited_document_applies_on_reload(tmp_path: Path) -> None:
    shutil.copy(HERE / "orders.yaml", tmp_path / "orders.yaml")
    upstream = OrdersUpstream()
    config = {
        "services": {"orders": {"targets": [upstream.url], "openapi": "orders.yaml"}},
        "routes": [
            route(
                "api",
                "/api/{rest:path}",
                service="orders",
                policies=[{"type": "validation", "responses": "report"}],
            )
        ],
    }
    process = PorticoProcess(tmp_path, config)
    try:
        with process.client() as http:
            assert http.get("/api/orders", params={"limit": "500"}).status_code == 400
            assert http.get("/api/orders/13").status_code == 200  # reported, not blocked
            assert failures(process) == {("api", "request"): 1, ("api", "response"): 1}

            document = tmp_path / "orders.yaml"
            document.write_text(
                document.read_text().replace("maximum: 100}", "maximum: 1000}"), encoding="utf-8"
            )
            process.signal(signal.SIGHUP)
            wait_for(
                lambda: http.get("/api/orders", params={"limit": "500"}).status_code == 200,
                what="the edited document to apply",
            )

            document.write_text("openapi: 3.1.0\npaths: {}\n", encoding="utf-8")
            process.signal(signal.SIGHUP)
            wait_for(
                lambda: "config reload refused" in process.log(),
                what="the refused reload in the log",
            )
            assert "orders.yaml:1:1:" in process.log()
            assert "is a required property" in process.log()
            assert http.get("/api/orders", params={"limit": "500"}).status_code == 200
            assert http.get("/api/orders", params={"limit": "5000"}).status_code == 400
    finally:
        process.stop()
        upstream.close()
