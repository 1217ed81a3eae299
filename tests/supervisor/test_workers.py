"""``portico serve --workers N`` as real processes: N gateway processes share the port, the
supervisor replaces one that dies, reloads and drains them all, and answers for all of them on
the operations listener (counters summed, readiness of every process).

Which process answered a request is read from the access log: every log record of a gateway
process carries its ``pid`` and ``worker`` (slot).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.identity.helpers import created_key, key_id, keys_command
from tests.store.conftest import postgres_cluster
from tests.support.gateway import (
    Config,
    PorticoProcess,
    client,
    route,
    run_portico,
    service,
    wait_for,
    with_defaults,
    write_config,
)
from tests.support.pki import CertificateAuthority, client_context
from tests.support.postgres import PostgresCluster
from tests.support.redis import redis_for_session
from tests.support.upstreams import Upstream

from portico.store.database import create_engine_for
from portico.store.migrate import upgrade
from portico.store.repositories import ConfigRevisions

__all__ = ["postgres_cluster"]

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
RELOAD_TIMEOUT = 20.0


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream("main")
    yield server
    server.release_held()
    server.close()


def config_with(upstream: Upstream, *paths: str, **gateway: Any) -> Config:
    """A route ``/<name>/...`` to ``upstream`` for each name; the access log on."""
    return {
        "gateway": {"access_log": True, **gateway},
        "services": {"main": service(upstream.url, retries=0)},
        "routes": [
            route(name, f"/{name}/{{rest:path}}", strip_prefix=f"/{name}") for name in paths
        ],
    }


StartPortico = Callable[..., PorticoProcess]


@pytest.fixture
def start_portico(tmp_path: Path) -> Iterator[StartPortico]:
    started: list[PorticoProcess] = []

    def start(config: Config, *args: str) -> PorticoProcess:
        process = PorticoProcess(tmp_path, config, args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def records(portico: PorticoProcess) -> list[dict[str, Any]]:
    out = []
    for line in portico.log().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def worker_pids(portico: PorticoProcess) -> dict[int, int]:
    """Slot -> pid of the gateway processes serving now, from the supervisor's log."""
    serving: dict[int, int] = {}
    for record in records(portico):
        message = record["message"]
        if record["logger"] == "portico.supervisor" and " serves (pid " in message:
            slot = int(message.split()[2])
            serving[slot] = int(message.rsplit("pid ", 1)[1].rstrip(")"))
    return serving


def answered_by(portico: PorticoProcess, path: str) -> set[int]:
    """The pids of the gateway processes whose access log has a request for ``path``."""
    return {
        r["pid"]
        for r in records(portico)
        if r["logger"] == "portico.access" and r.get("path") == path
    }


def get_on_new_connections(portico: PorticoProcess, path: str, count: int) -> list[int]:
    """``count`` requests, each on a connection of its own (a connection stays with the process
    that accepted it)."""
    statuses = []
    for _ in range(count):
        with portico.client(timeout=10, headers={"Connection": "close"}) as http:
            statuses.append(http.get(path).status_code)
    return statuses


def until_every_worker_answers(portico: PorticoProcess, path: str, pids: set[int]) -> None:
    def every_one_answered() -> bool:
        assert get_on_new_connections(portico, path, 10) == [200] * 10
        return answered_by(portico, path) >= pids

    wait_for(every_one_answered, timeout=60, interval=0, what=f"every process to answer {path}")


def scrape(portico: PorticoProcess) -> str:
    with client(portico.operations_url) as http:
        response = http.get("/metrics")
    assert response.status_code == 200
    return response.text


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def test_two_workers_share_the_port_and_both_answer(
    upstream: Upstream, start_portico: StartPortico
) -> None:
    portico = start_portico(config_with(upstream, "api"), "--workers", "2")

    pids = worker_pids(portico)
    assert sorted(pids) == [1, 2]
    assert len(set(pids.values())) == 2
    assert portico.pid not in pids.values()
    until_every_worker_answers(portico, "/api/x", set(pids.values()))


def test_metrics_sum_the_requests_of_every_worker(
    upstream: Upstream, start_portico: StartPortico
) -> None:
    portico = start_portico(config_with(upstream, "api", "other"), "--workers", "2")
    pids = set(worker_pids(portico).values())

    sent = get_on_new_connections(portico, "/api/x", 40)
    until_every_worker_answers(portico, "/other/x", pids)
    assert answered_by(portico, "/api/x") | answered_by(portico, "/other/x") == pids
    other = len([r for r in records(portico) if r.get("path") == "/other/x"])
    text = scrape(portico)

    requests = {
        labels["route"]: value
        for labels, value in samples(text, "portico_requests_total")
        if labels["status_class"] == "2xx"
    }
    assert requests == {"api": len(sent), "other": other}
    counts = {
        labels["route"]: value
        for labels, value in samples(text, "portico_request_duration_seconds_count")
    }
    assert counts == {"api": len(sent), "other": other}
    infinite = {
        labels["route"]: value
        for labels, value in samples(text, "portico_request_duration_seconds_bucket")
        if labels["le"] == "+Inf"
    }
    assert infinite == counts
    # What each process sees of a target is its own: one gauge per process.
    healthy = samples(text, "portico_upstream_target_healthy")
    assert sorted(labels["worker"] for labels, _ in healthy) == ["1", "2"]
    assert samples(text, "portico_workers") == [({}, 2.0)]
    assert samples(text, "portico_workers_serving") == [({}, 2.0)]
    cpu = {labels["worker"] for labels, _ in samples(text, "process_cpu_seconds_total")}
    assert cpu == {"supervisor", "1", "2"}
    if os.path.exists(PROMTOOL):
        checked = subprocess.run(
            [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, check=False
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_policies_counters_are_summed_over_every_worker(
    upstream: Upstream, start_portico: StartPortico
) -> None:
    config = config_with(upstream)
    policies = [{"type": "deprecation", "since": "2026-01-01"}, {"type": "mask", "remove": ["x"]}]
    config["routes"] = [route("old", "/old/{rest:path}", strip_prefix="/old", policies=policies)]
    portico = start_portico(config, "--workers", "2")
    until_every_worker_answers(portico, "/old/x", set(worker_pids(portico).values()))
    calls = float(len([r for r in records(portico) if r.get("path") == "/old/x"]))

    def summed() -> bool:
        text = scrape(portico)
        return samples(text, "portico_deprecated_requests_total") == [
            ({"route": "old", "consumer": ""}, calls)
        ] and samples(text, "portico_masked_responses_total") == [({"route": "old"}, calls)]

    wait_for(summed, what="each process's policy counters to be summed")


def test_readiness_and_health_name_every_worker(
    upstream: Upstream, start_portico: StartPortico
) -> None:
    portico = start_portico(config_with(upstream, "api"), "--workers", "2")

    with client(portico.operations_url) as http:
        ready = http.get("/readyz")
        live = http.get("/healthz")

    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "ready",
        "checks": {"store": "ok", "worker 1": "ok", "worker 2": "ok"},
    }
    assert live.status_code == 200, live.text


def test_a_killed_worker_is_replaced_and_requests_keep_succeeding(
    upstream: Upstream, start_portico: StartPortico
) -> None:
    portico = start_portico(config_with(upstream, "api"), "--workers", "2")
    before = worker_pids(portico)
    until_every_worker_answers(portico, "/api/x", set(before.values()))
    scrape(portico)  # what the process to be killed counted is now the supervisor's

    os.kill(before[1], signal.SIGKILL)
    # The other process keeps accepting from the shared queue meanwhile.
    assert get_on_new_connections(portico, "/api/x", 20) == [200] * 20

    replaced = wait_for(
        lambda: (now := worker_pids(portico))[1] != before[1] and now,
        timeout=60,
        what="a new process in slot 1",
    )
    assert replaced[2] == before[2]
    assert f"gateway process 1 (pid {before[1]}) was killed by SIGKILL" in portico.log()
    until_every_worker_answers(portico, "/api/y", set(replaced.values()))
    text = scrape(portico)
    assert samples(text, "portico_worker_restarts_total") == [({}, 1.0)]
    # The killed process's requests still count: the sum never goes backwards.
    sent = len([r for r in records(portico) if r.get("route") == "api"])
    counted = sum(value for _, value in samples(text, "portico_requests_total"))
    assert counted == sent
    with client(portico.operations_url) as http:
        wait_for(lambda: http.get("/readyz").status_code == 200, what="readiness")


def test_sighup_reloads_every_worker(upstream: Upstream, start_portico: StartPortico) -> None:
    portico = start_portico(config_with(upstream, "aaa"), "--workers", "2")
    pids = set(worker_pids(portico).values())

    portico.write(config_with(upstream, "bbb"))
    portico.signal(signal.SIGHUP)
    wait_for(
        lambda: "config reloaded" in portico.log(),
        timeout=RELOAD_TIMEOUT,
        what="the reload",
    )

    until_every_worker_answers(portico, "/bbb/x", pids)
    assert get_on_new_connections(portico, "/aaa/x", 10) == [404] * 10
    assert "config reloaded (1 routes) in 2 of 2 gateway processes" in portico.log()


def test_a_bad_config_on_sighup_is_refused_once_and_every_worker_keeps_the_old_one(
    upstream: Upstream, start_portico: StartPortico
) -> None:
    portico = start_portico(config_with(upstream, "old"), "--workers", "2")
    pids = set(worker_pids(portico).values())
    broken = config_with(upstream, "old", "new")
    broken["routes"][1]["max_body_size"] = "10mb"
    portico.write(broken)
    portico.signal(signal.SIGHUP)

    wait_for(lambda: "reload refused" in portico.log(), timeout=RELOAD_TIMEOUT, what="refusal")
    assert f"{portico.config_path}:" in portico.log()
    until_every_worker_answers(portico, "/old/x", pids)
    assert get_on_new_connections(portico, "/new/x", 4) == [404] * 4
    # Checked once by the supervisor, not once per process.
    assert portico.log().count("reload refused") == 1
    failures = samples(scrape(portico), "portico_config_reloads_total")
    assert ({"result": "failure"}, 1.0) in failures


def test_sigint_drains_a_slow_in_flight_request_and_exits_0(
    upstream: Upstream, start_portico: StartPortico
) -> None:
    portico = start_portico(config_with(upstream, "api"), "--workers", "2")
    pids = worker_pids(portico).values()
    held = upstream.paths().count("/hold")
    result: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: result.append(portico.client(timeout=60).get("/api/hold")), daemon=True
    )
    thread.start()
    wait_for(lambda: upstream.paths().count("/hold") > held, what="the request upstream")

    portico.signal(signal.SIGINT)
    wait_for(lambda: "draining" in portico.log(), what="the drain to begin")
    upstream.release_held()
    thread.join(timeout=30)

    assert result and result[0].status_code == 200
    assert result[0].json() == {"upstream": "main", "held": True}
    assert portico.wait(timeout=30) == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_auto_runs_one_worker_per_core(upstream: Upstream, start_portico: StartPortico) -> None:
    cores = len(os.sched_getaffinity(0))
    portico = start_portico(config_with(upstream, "api"), "--workers", "auto")

    if cores == 1:
        assert worker_pids(portico) == {}  # one process: `portico serve` as always
        return
    assert sorted(worker_pids(portico)) == list(range(1, cores + 1))
    assert samples(scrape(portico), "portico_workers") == [({}, float(cores))]


def test_gateway_workers_in_the_config_and_the_flag_overrides_it(
    upstream: Upstream, start_portico: StartPortico, tmp_path: Path
) -> None:
    config = config_with(upstream, "api", workers=2)
    portico = start_portico(config)
    assert sorted(worker_pids(portico)) == [1, 2]
    portico.stop()

    (tmp_path / "single").mkdir()
    single = PorticoProcess(tmp_path / "single", config, ("--workers", "1"))
    try:
        assert worker_pids(single) == {}
        assert get_on_new_connections(single, "/api/x", 2) == [200, 200]
    finally:
        single.stop()


def test_a_revoked_key_stops_working_in_every_worker(
    upstream: Upstream, start_portico: StartPortico
) -> None:
    config = config_with(upstream)
    config["tenants"] = {"acme": {"consumers": {"billing": {"scopes": ["orders:read"]}}}}
    config["routes"] = [
        route(
            "orders",
            "/orders",
            policies=[{"type": "auth", "methods": ["api_key"]}],
        )
    ]
    portico = start_portico(config, "--workers", "2")
    pids = set(worker_pids(portico).values())
    key = created_key(keys_command(portico.config_path, "create", "--consumer", "acme/billing"))
    headers = {"X-API-Key": key, "Connection": "close"}

    def status_on_a_new_connection() -> int:
        with portico.client(timeout=10, headers=headers) as http:
            return http.get("/orders").status_code

    wait_for(lambda: status_on_a_new_connection() == 200, what="the new key to work")
    wait_for(
        lambda: status_on_a_new_connection() == 200 and answered_by(portico, "/orders") >= pids,
        timeout=60,
        interval=0,
        what="every process to accept the key",
    )
    assert keys_command(portico.config_path, "revoke", key_id(key)).returncode == 0
    wait_for(lambda: status_on_a_new_connection() == 401, what="the revocation")
    # Once one process refuses it, every process does within about a second (each polls).
    threading.Event().wait(1.5)
    assert [status_on_a_new_connection() for _ in range(20)] == [401] * 20
    refused = {
        r["pid"] for r in records(portico) if r.get("path") == "/orders" and r["status"] == 401
    }
    assert refused == pids


def test_a_port_in_use_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = with_defaults(
            {
                "gateway": {"listen": f"127.0.0.1:{port}"},
                "services": {"main": service("http://127.0.0.1:9")},
                "routes": [route("open", "/open")],
                "database": {"url": f"sqlite:///{tmp_path / 'portico.db'}"},
            }
        )
        path = write_config(tmp_path / "portico.yaml", config)
        result = run_portico(
            "serve", "-c", str(path), "--workers", "2", "--log-format", "json", cwd=tmp_path
        )

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    printed = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(printed) == 1, result.stderr
    assert printed[0].startswith("portico serve: error: ")
    assert f"cannot listen on 127.0.0.1:{port} (gateway.listen)" in printed[0]
    assert "portico.cli.worker" not in result.stderr  # refused before any process started


def test_workers_must_be_a_number_or_auto(tmp_path: Path) -> None:
    result = run_portico("serve", "--workers", "many", cwd=tmp_path)

    assert result.returncode == 2
    assert "is not a number of workers: give 1 to 256, or auto" in result.stderr


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLite is migrated by the supervisor; PostgreSQL first by an operator (`db upgrade`)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    with cluster.database() as url:
        upgrade(url)
        yield url


def test_the_config_revision_is_recorded_once_at_start_and_once_per_reload(
    upstream: Upstream, start_portico: StartPortico, database_url: str
) -> None:
    config = config_with(upstream, "aaa")
    config["database"] = {"url": database_url}
    portico = start_portico(config, "--workers", "2")
    revisions = ConfigRevisions(create_engine_for(database_url))

    assert len(revisions.list()) == 1
    changed = config_with(upstream, "bbb")
    changed["database"] = config["database"]
    portico.write(changed)
    portico.signal(signal.SIGHUP)
    wait_for(lambda: "config reloaded" in portico.log(), timeout=RELOAD_TIMEOUT, what="reload")
    wait_for(lambda: len(revisions.list()) >= 2, what="the revision of the reload")
    threading.Event().wait(1.0)
    assert len(revisions.list()) == 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_mtls_listener_is_shared_by_every_worker(
    upstream: Upstream, start_portico: StartPortico, tmp_path: Path
) -> None:
    authority = CertificateAuthority(tmp_path / "pki")
    server = authority.issue_server()
    port = free_port()
    config = config_with(upstream, "api")
    config["gateway"]["tls"] = {
        "listen": f"127.0.0.1:{port}",
        "certificate": str(server.cert_path),
        "private_key": str(server.key_path),
        "client_ca": str(authority.cert_path),
        "client_certificate": "required",
    }
    portico = start_portico(config, "--workers", "2")
    pids = set(worker_pids(portico).values())
    context = client_context(authority, authority.issue_client("billing"))

    def every_one_answered() -> bool:
        for _ in range(10):
            with httpx.Client(
                base_url=f"https://127.0.0.1:{port}",
                verify=context,
                trust_env=False,
                headers={"Connection": "close"},
            ) as http:
                assert http.get("/api/tls").status_code == 200
        return answered_by(portico, "/api/tls") >= pids

    wait_for(every_one_answered, timeout=60, interval=0, what="every process to answer HTTPS")
    # Without a client certificate the handshake is refused, by whichever process accepts.
    with (
        pytest.raises(httpx.HTTPError),
        httpx.Client(
            base_url=f"https://127.0.0.1:{port}",
            verify=client_context(authority),
            trust_env=False,
        ) as http,
    ):
        http.get("/api/tls")


def test_a_tls_port_in_use_names_gateway_tls_listen(tmp_path: Path) -> None:
    authority = CertificateAuthority(tmp_path / "pki")
    server = authority.issue_server()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = with_defaults(
            {
                "gateway": {
                    "tls": {
                        "listen": f"127.0.0.1:{port}",
                        "certificate": str(server.cert_path),
                        "private_key": str(server.key_path),
                    }
                },
                "services": {"main": service("http://127.0.0.1:9")},
                "routes": [route("open", "/open")],
                "database": {"url": f"sqlite:///{tmp_path / 'portico.db'}"},
            }
        )
        path = write_config(tmp_path / "portico.yaml", config)
        result = run_portico(
            "serve", "-c", str(path), "--workers", "2", "--log-format", "json", cwd=tmp_path
        )

    assert result.returncode == 1
    printed = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(printed) == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port} (gateway.tls.listen)" in printed[0]


def test_an_unreachable_database_is_one_line_before_any_worker_starts(tmp_path: Path) -> None:
    config = with_defaults(
        {
            "services": {"main": service("http://127.0.0.1:9")},
            "routes": [route("open", "/open")],
            "database": {"url": "postgresql://portico:secret@127.0.0.1:1/portico"},
        }
    )
    path = write_config(tmp_path / "portico.yaml", config)

    result = run_portico(
        "serve", "-c", str(path), "--workers", "2", "--log-format", "json", cwd=tmp_path
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    printed = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(printed) == 1, result.stderr
    assert printed[0].startswith("portico serve: error: ")
    assert "secret" not in result.stderr
    assert "gateway process" not in result.stderr


def test_workers_never_outlive_their_supervisor(
    upstream: Upstream, start_portico: StartPortico
) -> None:
    portico = start_portico(config_with(upstream, "api"), "--workers", "2")
    pids = worker_pids(portico).values()

    portico.process.kill()
    portico.wait()

    def gone() -> bool:
        return all(not Path(f"/proc/{pid}").exists() or _is_zombie(pid) for pid in pids)

    wait_for(gone, timeout=30, what="the gateway processes to exit")


def test_a_stuck_worker_fails_health_and_readiness_by_name(
    upstream: Upstream, start_portico: StartPortico
) -> None:
    portico = start_portico(config_with(upstream, "api"), "--workers", "2")
    stuck = worker_pids(portico)[2]

    os.kill(stuck, signal.SIGSTOP)  # as an event loop blocked for good would look
    try:
        with client(portico.operations_url) as http:
            live = http.get("/healthz")
            ready = http.get("/readyz")
        # The other process still takes connections from the shared queue.
        assert get_on_new_connections(portico, "/api/x", 5) == [200] * 5
    finally:
        os.kill(stuck, signal.SIGCONT)

    assert live.status_code == 503
    assert live.json()["checks"] == {"worker 1": "ok", "worker 2": "no answer within 1.5s"}
    assert ready.status_code == 503
    assert ready.json()["checks"]["worker 2"] == "no answer within 1.5s"
    with client(portico.operations_url) as http:
        wait_for(lambda: http.get("/healthz").status_code == 200, what="health again")


def test_a_worker_silent_past_worker_timeout_is_killed_and_replaced(
    upstream: Upstream, start_portico: StartPortico
) -> None:
    """A process that stops answering (stopped here, as an event loop stuck in a blocking call
    would look) is killed after ``gateway.worker_timeout`` and its slot filled again; the other
    keeps serving meanwhile."""
    portico = start_portico(config_with(upstream, "api", worker_timeout="3s"), "--workers", "2")
    before = worker_pids(portico)
    until_every_worker_answers(portico, "/api/x", set(before.values()))

    os.kill(before[2], signal.SIGSTOP)
    assert get_on_new_connections(portico, "/api/x", 5) == [200] * 5
    replaced = wait_for(
        lambda: (now := worker_pids(portico))[2] != before[2] and now,
        timeout=60,
        what="a new process in slot 2",
    )

    assert replaced[1] == before[1]
    log = portico.log()
    assert f"gateway process 2 (pid {before[2]}) has not answered for" in log
    assert "(gateway.worker_timeout): its event loop is stuck; killed" in log
    assert f"gateway process 2 (pid {before[2]}) was killed by SIGKILL" in log
    until_every_worker_answers(portico, "/api/y", set(replaced.values()))
    with client(portico.operations_url) as http:
        wait_for(lambda: http.get("/healthz").status_code == 200, what="health again")


def test_the_supervisors_readiness_lists_redis_and_is_degraded_while_it_is_away(
    upstream: Upstream, start_portico: StartPortico
) -> None:
    """Every gateway process shares the one Redis: while it is away the supervisor's /readyz
    says so by name, with 200 and ``degraded`` (each policy fails open or closed by itself)."""
    with redis_for_session() as redis_server:
        config = config_with(upstream, "api")
        config["redis"] = {"url": redis_server.url, "timeout": "200ms"}
        portico = start_portico(config, "--workers", "2")
        with client(portico.operations_url) as http:
            ready = http.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["status"] == "ready"
            assert ready.json()["checks"]["redis"] == "ok"
            redis_server.stop()
            try:
                away = http.get("/readyz")
            finally:
                redis_server.start()
            assert away.status_code == 200
            assert away.json()["status"] == "degraded"
            assert away.json()["checks"]["redis"] != "ok"
            assert away.json()["checks"]["worker 1"] == "ok"
            wait_for(lambda: http.get("/readyz").json()["status"] == "ready", what="ready again")
