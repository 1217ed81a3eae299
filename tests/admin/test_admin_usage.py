"""A consumer's rate-limit usage through the admin API, from the gateway process that counts it
(no Redis): what it used, what is left, when it resets, for each limit; tenant-scoped tokens see
their tenant's consumers only."""

from __future__ import annotations

from pathlib import Path

import httpx
from tests.admin.conftest import ADMIN, Admin, make_token
from tests.support.gateway import PorticoProcess, route
from tests.support.upstreams import Upstream

from portico.identity.apikeys import generate_key


def test_the_usage_of_a_consumer_counts_its_requests_against_each_limit(
    upstream: Upstream, tmp_path: Path
) -> None:
    key = generate_key()
    config = {
        "admin": ADMIN,
        "services": {"main": {"targets": [upstream.url], "retries": 0}},
        "tenants": {
            "acme": {
                "consumers": {"billing": {"api_keys": [{"id": key.id, "sha256": key.sha256}]}}
            },
            "globex": {"consumers": {"app": {}}},
        },
        "routes": [
            route(
                "orders",
                "/{rest:path}",
                policies=[
                    {"type": "auth", "methods": ["api_key"]},
                    {
                        "type": "rate-limit",
                        "limits": [
                            {"name": "hourly", "limit": 10, "window": "1h"},
                            {"name": "daily", "limit": 100, "window": "24h"},
                        ],
                    },
                ],
            )
        ],
    }
    process = PorticoProcess(tmp_path, config)
    try:
        path = process.config_path
        admin = Admin(
            process,
            {
                "viewer": make_token(path, "viewer"),
                "globex-viewer": make_token(path, "viewer", "--tenant", "globex"),
            },
        )
        with httpx.Client(base_url=process.url) as gateway:
            for _ in range(3):
                assert gateway.get("/x", headers={"X-API-Key": key.key}).status_code == 200
        with admin.client("viewer") as http:
            response = http.get("/tenants/acme/consumers/billing/usage")
            idle = http.get("/tenants/globex/consumers/app/usage").json()
            missing = http.get("/tenants/acme/consumers/nobody/usage")
        assert response.status_code == 200, response.text
        usage = response.json()
        assert usage["consumer"] == "acme/billing"
        rows = {row["limit"]: row for row in usage["limits"]}
        assert set(rows) == {"hourly", "daily"}
        assert (rows["hourly"]["used"], rows["hourly"]["quota"], rows["hourly"]["remaining"]) == (
            3,
            10,
            7,
        )
        assert (rows["daily"]["used"], rows["daily"]["remaining"]) == (3, 97)
        assert 0 < rows["hourly"]["resets_in"] <= 3600
        assert {row["used"] for row in idle["limits"]} == {0}
        assert missing.status_code == 404
        # A token of another tenant does not learn that acme/billing exists.
        with admin.client("globex-viewer") as http:
            assert http.get("/tenants/acme/consumers/billing/usage").status_code == 404
    finally:
        process.stop()
