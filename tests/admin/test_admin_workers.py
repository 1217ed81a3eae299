"""With ``portico serve --workers 2`` the admin API runs in the supervisor, and a change made
through it reaches every gateway process: when the answer to a revocation comes, no gateway
process accepts the key any more."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.admin.conftest import admin_config, make_token
from tests.supervisor.test_workers import answered_by
from tests.support.gateway import PorticoProcess, client
from tests.support.upstreams import Upstream


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream("main")
    yield server
    server.close()


def statuses(portico: PorticoProcess, key: str, path: str, count: int) -> list[int]:
    """``count`` requests, each on a new connection, so that both processes take some."""
    found = []
    for _ in range(count):
        with httpx.Client(base_url=portico.url, trust_env=False) as http:
            found.append(http.get(path, headers={"X-API-Key": key}).status_code)
    return found


def test_a_key_revoked_through_the_admin_api_stops_working_in_every_gateway_process(
    tmp_path: Path, upstream: Upstream
) -> None:
    config = admin_config(upstream.url)
    config["gateway"] = {"access_log": True}
    portico = PorticoProcess(tmp_path, config, ("--workers", "2"))
    try:
        assert portico.admin_port is not None
        token = make_token(portico.config_path, "operator")
        admin = client(
            portico.admin_url + "/admin/v1", headers={"Authorization": f"Bearer {token}"}
        )
        with admin:
            created = admin.post("/api-keys", json={"consumer": "acme/billing"}).json()
            assert statuses(portico, created["key"], "/keyed/before", 20) == [200] * 20
            revoked = admin.post(f"/api-keys/{created['id']}/revoke")
            assert revoked.status_code == 200
            assert statuses(portico, created["key"], "/keyed/after", 20) == [401] * 20
        # Both processes took requests before and after the revocation.
        from tests.support.gateway import wait_for

        wait_for(
            lambda: len(answered_by(portico, "/keyed/before")) == 2, what="both processes before"
        )
        wait_for(
            lambda: len(answered_by(portico, "/keyed/after")) == 2, what="both processes after"
        )
    finally:
        portico.stop()


def test_an_edit_in_store_mode_reaches_both_gateway_processes_and_drops_no_request_in_flight(
    tmp_path: Path, upstream: Upstream
) -> None:
    import threading

    from tests.support.gateway import route, service, wait_for

    config = {
        "admin": {"listen": "127.0.0.1:0"},
        "gateway": {"access_log": True},
        "entities": {"source": "store"},
        "services": {"main": service(upstream.url, retries=0)},
        "routes": [route("all", "/{rest:path}")],
    }
    portico = PorticoProcess(tmp_path, config, ("--workers", "2"))
    held: list[httpx.Response] = []
    try:
        token = make_token(portico.config_path, "operator")
        admin = client(
            portico.admin_url + "/admin/v1", headers={"Authorization": f"Bearer {token}"}
        )

        def hold() -> None:
            with portico.client(timeout=30) as http:
                held.append(http.get("/hold"))

        holding = threading.Thread(target=hold)
        holding.start()
        wait_for(lambda: upstream.in_flight >= 1, what="the held request upstream")

        with admin:
            edited = admin.put(
                "/routes/edited",
                json={
                    "match": {"path": "/edited/{rest:path}"},
                    "service": "main",
                    "policies": [{"type": "headers", "request": {"set": {"X-Edited": "yes"}}}],
                },
            )
            assert edited.status_code == 201, edited.text

        def edited_everywhere() -> bool:
            # Each request on a connection of its own, so that both processes take some.
            seen = []
            for _ in range(10):
                with portico.client(headers={"Connection": "close"}) as http:
                    echoed = http.get("/edited/x").json()
                    seen.append({k.lower(): v for k, v in echoed["headers"]}.get("x-edited"))
            return seen == ["yes"] * 10

        # The answer came once both processes serve it: a deadline, not a measured time.
        wait_for(edited_everywhere, timeout=1.0, what="the edit in every process")
        wait_for(
            lambda: len(answered_by(portico, "/edited/x")) == 2, what="both processes answered"
        )

        upstream.release_held()
        holding.join(timeout=30)
        assert [r.status_code for r in held] == [200]
        assert held[0].json()["held"] is True
    finally:
        upstream.release_held()
        portico.stop()
    log = portico.log()
    assert "serving store revision 2 (admin, 2 routes)" in log
    assert log.count("serving store revision 2") == 2
