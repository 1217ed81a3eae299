"""``portico serve`` with ``entities.source: store``: seeded from the file once, then the store
is served; the file's entity sections wait for ``portico apply``; a revision a process cannot
serve is refused there, in one log line, and the previous one keeps serving."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.gateway import PorticoProcess, route, run_portico, service, wait_for
from tests.support.upstreams import Upstream

from portico.store.database import Database
from portico.store.repositories import AuditLog, StateRevisions


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream("main")
    yield server
    server.close()


def config_with(upstream: Upstream, *paths: str) -> dict[str, Any]:
    return {
        "entities": {"source": "store"},
        "services": {"main": service(upstream.url, retries=0)},
        "routes": [route(p.strip("/") or "root", p) for p in paths],
    }


def status(portico: PorticoProcess, path: str) -> int:
    with portico.client() as http:
        return http.get(path).status_code


def test_the_store_is_seeded_once_and_a_file_edit_waits_for_apply(
    tmp_path: Path, upstream: Upstream
) -> None:
    portico = PorticoProcess(tmp_path, config_with(upstream, "/one"))
    try:
        assert status(portico, "/one") == 200
        portico.write(config_with(upstream, "/one", "/two"))
        wait_for(lambda: "differ from the store's revision 1" in portico.log(), what="the line")
        assert status(portico, "/two") == 404
        line = next(x for x in portico.log().splitlines() if "differ from the store's" in x)
        assert "portico diff" in line and "portico apply" in line

        applied = run_portico("apply", "-c", str(portico.config_path), cwd=tmp_path)
        assert applied.returncode == 0, applied.stderr
        wait_for(lambda: status(portico, "/two") == 200, timeout=1.0, what="the applied route")
    finally:
        portico.stop()
    with Database(f"sqlite:///{tmp_path / 'portico.db'}") as database:
        history = [StateRevisions(database).get(n) for n in (1, 2)]
        actions = [e.action for e in AuditLog(database).list() if e.action.startswith("entities")]
    assert [r.source for r in history if r is not None] == ["seed", "apply"]
    assert actions == ["entities.apply", "entities.seed"]


def test_a_revision_a_process_cannot_serve_is_refused_once_and_the_previous_serves_on(
    tmp_path: Path, upstream: Upstream
) -> None:
    portico = PorticoProcess(tmp_path, config_with(upstream, "/one"))
    try:
        broken = config_with(upstream, "/one", "/two")
        # The variable is in apply's environment, not in the gateway's.
        broken["routes"][1]["policies"] = [
            {"type": "headers", "request": {"set": {"Authorization": "Bearer ${ONLY_HERE}"}}}
        ]
        portico.write(broken)
        applied = run_portico(
            "apply", "-c", str(portico.config_path), cwd=tmp_path, env={"ONLY_HERE": "t" * 16}
        )
        assert applied.returncode == 0, applied.stderr
        wait_for(
            lambda: "store revision 2 cannot be served; revision 1 keeps serving" in portico.log(),
            what="the refusal",
        )
        assert status(portico, "/one") == 200
        assert status(portico, "/two") == 404
        # Logged once, not at every poll (four more of them, a quarter of a second apart).
        time.sleep(1.0)
        assert portico.log().count("store revision 2 cannot be served") == 1
        assert "ONLY_HERE is not set" in portico.log()
    finally:
        portico.stop()
