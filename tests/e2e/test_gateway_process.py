"""``portico serve`` as a real process: config reloads (file edit, SIGHUP, refused edits) and a
graceful SIGTERM that lets in-flight requests finish."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from tests.support.gateway import Config, PorticoProcess, route, service, wait_for
from tests.support.upstreams import Upstream

RELOAD_TIMEOUT = 15.0


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream("main")
    yield server
    server.release_held()
    server.close()


def config_with(upstream: Upstream, *paths: str) -> Config:
    """A route ``/<name>/...`` to ``upstream`` for each name, with the prefix stripped."""
    return {
        "services": {"main": service(upstream.url)},
        "routes": [
            route(name, f"/{name}/{{rest:path}}", strip_prefix=f"/{name}") for name in paths
        ],
    }


StartPortico = Callable[[Config], PorticoProcess]


@pytest.fixture
def start_portico(tmp_path: Path) -> Iterator[StartPortico]:
    started: list[PorticoProcess] = []

    def start(config: Config) -> PorticoProcess:
        process = PorticoProcess(tmp_path, config)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def status(portico: PorticoProcess, path: str) -> int:
    with portico.client(timeout=10) as http:
        return http.get(path).status_code


class InFlight:
    """A request held open by the upstream (``/hold``) in a background thread."""

    def __init__(self, portico: PorticoProcess, upstream: Upstream, path: str) -> None:
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None
        held = upstream.paths().count("/hold")
        self._thread = threading.Thread(target=self._run, args=(portico, path), daemon=True)
        self._thread.start()
        wait_for(
            lambda: upstream.paths().count("/hold") > held,
            what="the request to reach the upstream",
        )

    def _run(self, portico: PorticoProcess, path: str) -> None:
        try:
            with portico.client(timeout=60) as http:
                self.response = http.get(path)
        except BaseException as exc:
            self.error = exc

    def result(self) -> httpx.Response:
        self._thread.join(timeout=60)
        assert self.error is None, f"the in-flight request failed: {self.error!r}"
        assert self.response is not None
        return self.response


def test_edited_config_applies_without_dropping_in_flight_request(
    upstream: Upstream, start_portico: StartPortico
) -> None:
    portico = start_portico(config_with(upstream, "old", "gone"))
    assert status(portico, "/old/x") == 200
    assert status(portico, "/gone/x") == 200
    assert status(portico, "/new/x") == 404

    in_flight = InFlight(portico, upstream, "/old/hold")
    portico.write(config_with(upstream, "old", "new"))
    wait_for(
        lambda: status(portico, "/new/x") == 200,
        timeout=RELOAD_TIMEOUT,
        interval=0.1,
        what="the new route to serve",
    )
    assert status(portico, "/gone/x") == 404
    upstream.release_held()
    response = in_flight.result()
    assert response.status_code == 200
    assert response.json() == {"upstream": "main", "held": True}
    assert status(portico, "/old/x") == 200
    assert "config reloaded" in portico.log()


def test_edited_service_moves_traffic_and_lets_the_old_target_finish(
    upstream: Upstream, start_portico: StartPortico
) -> None:
    replacement = Upstream("replacement")
    try:
        checked: Config = {"active": {"interval": "0.1s"}}
        before = config_with(upstream, "api")
        before["services"]["main"]["health_check"] = checked
        portico = start_portico(before)
        wait_for(lambda: upstream.health_probes > 0, what="the old target to be probed")
        in_flight = InFlight(portico, upstream, "/api/hold")

        after = config_with(replacement, "api")
        after["services"]["main"]["health_check"] = checked
        portico.write(after)
        with portico.client() as http:
            wait_for(
                lambda: http.get("/api/x").json()["upstream"] == "replacement",
                timeout=RELOAD_TIMEOUT,
                interval=0.1,
                what="requests to go to the new target",
            )
        wait_for(lambda: replacement.health_probes > 0, what="the new target to be probed")
        upstream.release_held()
        response = in_flight.result()
        assert response.json() == {"upstream": "main", "held": True}

        # The old target is no longer probed once its service left the runtime.
        probes = upstream.health_probes
        threading.Event().wait(1.0)
        assert upstream.health_probes <= probes + 1
    finally:
        replacement.close()


def test_sighup_reloads_the_config(upstream: Upstream, start_portico: StartPortico) -> None:
    portico = start_portico(config_with(upstream, "aaa"))
    path = portico.config_path
    before = path.stat()
    # Same size, same inode, same modification time: the file watcher cannot see this edit,
    # so only the signal can apply it.
    text = path.read_text(encoding="utf-8")
    edited = text.replace("aaa", "bbb")
    assert len(edited) == len(text)
    with path.open("r+", encoding="utf-8") as handle:
        handle.write(edited)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    # Two polls of the watcher go by without a reload.
    threading.Event().wait(2.5)
    assert status(portico, "/aaa/x") == 200
    assert status(portico, "/bbb/x") == 404

    portico.signal(signal.SIGHUP)
    wait_for(
        lambda: status(portico, "/bbb/x") == 200,
        timeout=RELOAD_TIMEOUT,
        interval=0.1,
        what="SIGHUP to apply the edit",
    )
    assert status(portico, "/aaa/x") == 404


def test_invalid_edit_is_refused_and_the_old_config_keeps_serving(
    upstream: Upstream, start_portico: StartPortico
) -> None:
    portico = start_portico(config_with(upstream, "old"))
    original = portico.config_path.read_text(encoding="utf-8")

    # Not YAML at all: one error where the parser stopped.
    portico.write_text(original + "routes: [unclosed\n")
    wait_for(
        lambda: "reload refused" in portico.log(),
        timeout=RELOAD_TIMEOUT,
        interval=0.1,
        what="the refused reload in the log",
    )
    assert f"{portico.config_path}:" in portico.log()
    assert status(portico, "/old/x") == 200

    # Valid YAML, invalid config: the error names the file, line and field.
    refusals = portico.log().count("reload refused")
    valid = yaml.safe_load(original)
    broken = config_with(upstream, "old", "new")
    broken["routes"][1]["max_body_size"] = "10mb"
    broken["database"] = valid["database"]
    broken["gateway"] = valid["gateway"]
    text = yaml.safe_dump(broken, sort_keys=False)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "10mb" in s)
    portico.write_text(text)

    location = f"{portico.config_path}:{line}:"
    wait_for(
        lambda: portico.log().count("reload refused") > refusals and location in portico.log(),
        timeout=RELOAD_TIMEOUT,
        interval=0.1,
        what="the refused reload in the log",
    )
    log = portico.log()
    assert "routes[1].max_body_size" in log
    assert status(portico, "/old/x") == 200
    assert status(portico, "/new/x") == 404

    # SIGHUP on the same broken file is refused the same way.
    refusals = log.count("reload refused")
    portico.signal(signal.SIGHUP)
    wait_for(
        lambda: portico.log().count("reload refused") > refusals,
        timeout=RELOAD_TIMEOUT,
        interval=0.1,
        what="the second refusal",
    )
    assert status(portico, "/old/x") == 200

    # Fixing the file applies it.
    portico.write(config_with(upstream, "old", "new"))
    wait_for(
        lambda: status(portico, "/new/x") == 200,
        timeout=RELOAD_TIMEOUT,
        interval=0.1,
        what="the fixed config to apply",
    )
    assert portico.process.poll() is None


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


def test_sigterm_lets_the_in_flight_request_finish(
    upstream: Upstream, start_portico: StartPortico
) -> None:
    portico = start_portico(config_with(upstream, "api"))
    idle = socket.create_connection(("127.0.0.1", portico.port), timeout=10)
    idle.sendall(b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert idle.recv(65536).startswith(b"HTTP/1.1 200")
    in_flight = InFlight(portico, upstream, "/api/hold")

    portico.signal(signal.SIGTERM)
    # An idle keep-alive connection is closed at once rather than waited for.
    assert idle.recv(65536) == b""
    idle.close()
    # Draining: no new connections, while the request in flight goes on.
    wait_for(
        lambda: refuses_connections(portico.port),
        timeout=RELOAD_TIMEOUT,
        interval=0.1,
        what="the listener to close",
    )
    assert portico.process.poll() is None

    upstream.release_held()
    response = in_flight.result()
    assert response.status_code == 200
    assert response.json() == {"upstream": "main", "held": True}
    assert portico.wait(timeout=30) == 0
