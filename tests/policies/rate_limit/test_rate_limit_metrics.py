"""The rate-limit and concurrency counters on the operations listener of a real ``portico serve``,
as Prometheus reads them: the names and labels of docs/metrics.md, and a scrape ``promtool check
metrics`` accepts without a warning."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.support.gateway import PorticoProcess, route
from tests.support.upstreams import Upstream

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def test_refusals_are_exposed_per_route_and_limit_and_promtool_accepts_them(
    tmp_path: Path,
) -> None:
    upstream = Upstream("metrics")
    limits = [{"name": "per-hour", "limit": 2, "window": "1h", "by": ["ip"]}]
    config = {
        "services": {
            "main": {
                "targets": [upstream.url],
                "retries": 0,
                "policies": [{"type": "concurrency", "max": 4}],
            }
        },
        "routes": [
            route("limited", "/{rest:path}", policies=[{"type": "rate-limit", "limits": limits}])
        ],
    }
    process = PorticoProcess(tmp_path, config)
    try:
        with process.client() as http:
            assert [http.get("/x").status_code for _ in range(5)] == [200, 200, 429, 429, 429]
        text = httpx.get(process.operations_url + "/metrics", trust_env=False, timeout=10).text
    finally:
        process.stop()
        upstream.close()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    limited = (("limit", "per-hour"), ("route", "limited"))
    assert samples[("portico_rate_limited_requests_total", limited)] == 3
    in_flight = (("route", ""), ("service", "main"))
    assert samples[("portico_concurrency_in_flight", in_flight)] == 0
    if not os.path.exists(PROMTOOL):
        pytest.fail("promtool missing: make test installs Debian's prometheus package")
    checked = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0 and checked.stdout.strip() == "", checked.stdout
