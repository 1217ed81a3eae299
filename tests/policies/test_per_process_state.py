"""A policy that keeps shared state (rate-limit, cache, idempotency) with several gateway
processes and no ``redis`` section is refused: by ``portico check`` (``gateway.workers``) at the
entry's line, and by ``serve --workers N`` in one line before anything starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.support.gateway import route, run_portico, write_config

LIMIT = {"type": "rate-limit", "limits": [{"name": "burst", "limit": 5, "window": "1s"}]}


def config(workers: int | str, redis: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "gateway": {"workers": workers},
        "services": {"main": {"targets": ["http://127.0.0.1:9"], "policies": [LIMIT]}},
        "routes": [route("r", "/r/{rest:path}", policies=[{"type": "cache"}])],
    }
    if redis:
        out["redis"] = {"url": "redis://127.0.0.1:1/0"}
    return out


def test_check_refuses_each_shared_state_policy_with_two_workers_and_no_redis(
    tmp_path: Path,
) -> None:
    path = write_config(tmp_path / "portico.yaml", config(2))
    result = run_portico("check", str(path), cwd=tmp_path)
    assert result.returncode != 0
    assert "services.main.policies[0].type: the rate-limit policy keeps state" in result.stderr
    assert "routes[0].policies[0].type: the cache policy keeps state" in result.stderr
    assert "add a redis section" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("workers", "redis"), [(1, False), (2, True)])
def test_one_worker_or_redis_is_accepted(tmp_path: Path, workers: int, redis: bool) -> None:
    path = write_config(tmp_path / "portico.yaml", config(workers, redis))
    result = run_portico("check", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_serve_with_the_workers_flag_refuses_in_one_line(tmp_path: Path) -> None:
    path = write_config(tmp_path / "portico.yaml", config(1))
    result = run_portico("serve", "-c", str(path), "--workers", "2", cwd=tmp_path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "rate-limit policy keeps state" in lines[0] and "--workers 2" in lines[0]
