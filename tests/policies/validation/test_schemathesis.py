"""A real client of the document: schemathesis generates requests from
tests/policies/validation/orders.yaml, valid and invalid, and sends them through Portico's
validated route to a real upstream implementing it. Portico must produce no 5xx, accept what
the document allows (``positive_data_acceptance``) and let through nothing it forbids
(``negative_data_rejection``: a 2xx for such a request fails the run)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.policies.validation.orders_upstream import OrdersUpstream
from tests.support.gateway import route, running_gateway

HERE = Path(__file__).parent
SETTINGS = """\
[checks.negative_data_rejection]
expected-statuses = ["400", "404", "405", "413", "415"]
"""


def test_schemathesis_finds_no_server_error_no_refused_valid_and_no_accepted_invalid_request(
    tmp_path: Path,
) -> None:
    shutil.copy(HERE / "orders.yaml", tmp_path / "orders.yaml")
    (tmp_path / "schemathesis.toml").write_text(SETTINGS, encoding="utf-8")
    upstream = OrdersUpstream()
    config = {
        "services": {
            "orders": {
                "targets": [upstream.url],
                "retries": 0,
                "openapi": "orders.yaml",
                "policies": [{"type": "validation"}],
            }
        },
        "routes": [route("api", "/api/{rest:path}", service="orders")],
    }
    try:
        with running_gateway(tmp_path, config) as gateway:
            result = subprocess.run(
                [
                    str(Path(sys.executable).with_name("schemathesis")),
                    "--config-file",
                    str(tmp_path / "schemathesis.toml"),
                    "run",
                    str(tmp_path / "orders.yaml"),
                    "--url",
                    f"{gateway.url}/api",
                    "--checks",
                    "not_a_server_error,positive_data_acceptance,negative_data_rejection",
                    "--mode",
                    "all",
                    "--max-examples",
                    "50",
                    "--seed",
                    "20261202",
                    "--generation-database",
                    "none",
                    "--workers",
                    "1",
                    "--no-color",
                ],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=240,
                check=False,
            )
    finally:
        upstream.close()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout or "passed" in result.stdout, result.stdout[-3000:]
