"""An endpoint's rate limit and concurrency hold across every delivering process, and a publish or
a redelivery in one process wakes the workers of every other (PostgreSQL).

Real ``portico serve --role worker`` processes deliver from one store (SQLite: they share its
single writer; PostgreSQL) to a real receiver, which counts the requests in flight at each
endpoint and records when each arrived; this process publishes, as a gateway process does.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.events.harness import TENANTS, TYPES
from tests.store.conftest import secrets_with
from tests.support.gateway import _portico_command, write_config
from tests.support.receivers import Receiver

from portico.config.model import PorticoConfig
from portico.events.limits import BUSY_SECONDS, admit, burst_of
from portico.events.service import Events
from portico.events.wakeup import APPLICATION_NAME
from portico.store.database import Database
from portico.store.migrate import upgrade
from portico.store.secrets import ENVIRONMENT_VARIABLE
from portico.store.secrets.keys import generate_key_text
from portico.store.tables import DeliveryRow

DELIVERY: dict[str, Any] = {
    "allow_http": True,
    "allow_networks": ["127.0.0.0/8"],
    "schedule": ["0s", "50ms", "50ms", "50ms"],
    "jitter": 0,
    "timeout": "2s",
    "claim_timeout": "5s",
    "poll_interval": "50ms",
}
WORKERS = 3


@dataclass
class Store:
    """The test's view of the store the workers deliver from."""

    url: str
    database: Database
    events: Events
    key: str
    """The secrets key the workers open the endpoints' signing secrets with."""

    def statuses(self) -> dict[str, int]:
        table: sa.Table = DeliveryRow.__table__  # type: ignore[assignment]
        with self.database.read() as session:
            rows = session.execute(
                sa.select(table.c.status, sa.func.count()).group_by(table.c.status)
            ).all()
        return {status: int(count) for status, count in rows}

    def wait_until_delivered(self, timeout: float = 120.0) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while (counts := self.statuses()).get("pending", 0):
            assert time.monotonic() < deadline, counts
            time.sleep(0.05)
        return counts


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    upgrade(database_url)
    key = generate_key_text()
    config = PorticoConfig.model_validate(
        {"tenants": TENANTS, "events": {"types": TYPES, "delivery": DELIVERY}}
    )
    database = Database(database_url)
    try:
        yield Store(
            database_url, database, Events(database, secrets_with(key), lambda: config), key
        )
    finally:
        database.dispose()


@dataclass
class Workers:
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def log_tails(self) -> str:
        return "\n".join(
            f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:])
            for path in self.logs
        )


@contextmanager
def running_workers(
    store: Store, tmp_path: Path, count: int = WORKERS, **delivery: Any
) -> Iterator[Workers]:
    """``count`` delivery workers on ``store``, started and ready; stopped with SIGTERM after."""
    config = {
        "database": {"url": store.url},
        "tenants": TENANTS,
        "events": {"types": TYPES, "delivery": {**DELIVERY, **delivery}},
    }
    config_path = write_config(tmp_path / "portico.yaml", config)
    env = {**os.environ, ENVIRONMENT_VARIABLE: store.key}
    env.pop("PORTICO_DATABASE_URL", None)
    workers = Workers()
    try:
        for number in range(count):
            path = tmp_path / f"worker-{number}.log"
            with path.open("wb") as log:
                workers.processes.append(
                    subprocess.Popen(
                        [_portico_command(), "serve", "--role", "worker", "-c", str(config_path)],
                        cwd=tmp_path,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
                )
            workers.logs.append(path)
        deadline = time.monotonic() + 60
        while not all(b"delivery worker on" in path.read_bytes() for path in workers.logs):
            assert time.monotonic() < deadline, workers.log_tails()
            assert all(p.poll() is None for p in workers.processes), workers.log_tails()
            time.sleep(0.05)
        yield workers
    finally:
        for process in workers.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in workers.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def most_in_any_second(arrivals: list[float]) -> int:
    """The most arrivals within one second of each other (``[t, t + 1)``, ``t`` an arrival)."""
    ordered = sorted(arrivals)
    return max(sum(1 for t in ordered if start <= t < start + 1) for start in ordered)


def test_rate_limits_and_concurrency_hold_across_worker_processes(
    store: Store, receiver: Receiver, tmp_path: Path
) -> None:
    endpoints = store.events.endpoints
    endpoints.create("acme/billing", receiver.url("/one"), concurrency=1)
    endpoints.create("acme/billing", receiver.url("/three"), concurrency=3)
    endpoints.create("acme/billing", receiver.url("/rated"), rate_limit=10)
    endpoints.create("acme/billing", receiver.url("/free"))
    receiver.behaviours["/one"].delay = 0.03
    receiver.behaviours["/three"].delay = 0.1
    receiver.behaviours["/free"].delay = 0.3
    count = 30

    with running_workers(store, tmp_path) as workers:
        ids = [
            store.events.publisher.publish("order.shipped", {"n": n}, publisher="admin:test").id
            for n in range(count)
        ]
        counts = store.wait_until_delivered()
        assert counts == {"succeeded": 4 * count}, workers.log_tails()

    for path in ("/one", "/three", "/rated", "/free"):
        # Every event reached every endpoint, once (no claim expired: nothing was sent twice).
        assert sorted(item.id for item in receiver.at(path)) == sorted(ids), path
    # Three processes delivered side by side, and still: never more in flight than allowed...
    assert receiver.most_in_flight["/one"] == 1
    assert receiver.most_in_flight["/three"] <= 3
    # ... never more in any second than 10 a second with the bucket's burst allows ...
    assert most_in_any_second([item.at for item in receiver.at("/rated")]) <= 10 + burst_of(10)
    # ... while the endpoint without limits had many at once.
    assert receiver.most_in_flight["/free"] > 3


def test_fifo_with_concurrency_delivers_each_key_in_order_across_worker_processes(
    store: Store, receiver: Receiver, tmp_path: Path
) -> None:
    store.events.endpoints.create(
        "acme/billing", receiver.url("/fifo"), ordering_key="data.order_id", concurrency=2
    )
    receiver.behaviours["/fifo"].fail_first = 1  # every message fails once, then succeeds
    receiver.behaviours["/fifo"].delay = 0.02
    keys = "ABCD"
    count = 24

    with running_workers(store, tmp_path) as workers:
        for n in range(count):
            store.events.publisher.publish(
                "order.shipped", {"order_id": keys[n % len(keys)], "n": n}, publisher="admin:test"
            )
        counts = store.wait_until_delivered()
        assert counts == {"succeeded": count}, workers.log_tails()

    received = receiver.at("/fifo")
    for key in keys:
        sequence = [
            item.json["data"]["n"] for item in received if item.json["data"]["order_id"] == key
        ]
        expected = [n for n in range(count) if keys[n % len(keys)] == key]
        # Each message twice (a failure, then its success), and the next only after that.
        assert sequence == [n for n in expected for _ in range(2)], key
    assert receiver.most_in_flight["/fifo"] <= 2


def listening_backends(database: Database) -> set[int]:
    with database.read() as session:
        return set(
            session.scalars(
                sa.text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
                {"name": APPLICATION_NAME},
            )
        )


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_worker_polling_rarely_is_woken_by_publishes_and_redeliveries_of_another_process(
    store: Store, receiver: Receiver, tmp_path: Path
) -> None:
    endpoints = store.events.endpoints
    endpoints.create("acme/billing", receiver.url("/a"), types=["order.shipped"])
    dying, _ = endpoints.create("acme/billing", receiver.url("/b"), types=["invoice.paid"])
    receiver.behaviours["/b"].status = 500
    # Polling alone would find what this process publishes only after a minute; every wait
    # below gives up long before.
    prompt = 10.0

    def publish(event_type: str, n: int) -> None:
        store.events.publisher.publish(event_type, {"n": n}, publisher="admin:test")

    with running_workers(store, tmp_path, count=1, poll_interval="60s", schedule=["0s"]) as workers:
        first = _wait_for_listener(store.database, set(), workers)
        publish("order.shipped", 1)
        receiver.wait_for(1, "/a", timeout=prompt)

        # The listening connection is cut: the worker listens again, and is woken again.
        with store.database.read() as session:
            session.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        _wait_for_listener(store.database, {first}, workers)
        publish("order.shipped", 2)
        receiver.wait_for(2, "/a", timeout=prompt)

        # A burst, within one notification gap: the last publishes of it are woken for too.
        for n in range(10, 15):
            publish("order.shipped", n)
        receiver.wait_for(7, "/a", timeout=prompt)

        # A redelivery from this process wakes it too.
        publish("invoice.paid", 3)
        receiver.wait_for(1, "/b", timeout=prompt)
        deadline = time.monotonic() + prompt
        while store.statuses().get("pending", 0):
            assert time.monotonic() < deadline, store.statuses()
            time.sleep(0.05)
        receiver.behaviours["/b"].status = 200
        assert store.events.queue.redeliver(endpoint_id=dying.id, now=time.time()) == 1
        receiver.wait_for(2, "/b", timeout=prompt)

    arrived = [item.json["data"]["n"] for item in receiver.at("/a")]
    assert arrived[:2] == [1, 2] and sorted(arrived[2:]) == [10, 11, 12, 13, 14]
    assert "not woken by publishes in other processes" in workers.log_tails()


def _wait_for_listener(database: Database, gone: set[int], workers: Workers) -> int:
    """The worker's listening connection, once there is one that is not one of ``gone``."""
    deadline = time.monotonic() + 20
    while not (fresh := listening_backends(database) - gone):
        assert time.monotonic() < deadline, workers.log_tails()
        time.sleep(0.05)
    (pid,) = fresh
    return pid


# -- the admission rule itself -------------------------------------------------------------------


def test_an_idle_endpoint_takes_its_burst_at_once_then_one_delivery_per_interval() -> None:
    # 100 a second: a burst of 10, then one every 10 ms; the rest spread over the next slots.
    first = admit(list(range(15)), 1000.0, rate_limit=100, concurrency=None, rate_tat=None)
    assert first.admitted == list(range(10))
    assert [due for _, due in first.deferred] == pytest.approx(
        [1000.01, 1000.02, 1000.03, 1000.04, 1000.05]
    )
    later = admit([10, 11], 1000.015, rate_limit=100, concurrency=None, rate_tat=first.rate_tat)
    assert later.admitted == [10]
    assert later.deferred == [(11, pytest.approx(1000.02))]


def test_admissions_never_exceed_the_rate_and_burst_in_any_window() -> None:
    chance = random.Random(12)
    rate, state, now = 10.0, None, 0.0
    admitted: list[float] = []
    for _ in range(2000):  # claims at random moments, each with a few deliveries
        now += chance.expovariate(40)
        admission = admit(
            list(range(chance.randint(1, 4))),
            now,
            rate_limit=rate,
            concurrency=None,
            rate_tat=state,
        )
        state = admission.rate_tat
        admitted += [now] * len(admission.admitted)
    assert most_in_any_second(admitted) <= rate + burst_of(rate)


def test_a_backlog_claimed_when_it_is_due_again_goes_at_the_rate() -> None:
    chance = random.Random(7)
    rate, state, now = 20.0, None, 0.0
    backlog = list(range(500))
    while backlog:
        admission = admit(backlog[:50], now, rate_limit=rate, concurrency=None, rate_tat=state)
        state = admission.rate_tat
        backlog = [item for item in backlog if item not in admission.admitted]
        if admission.deferred:  # the dispatcher looks again when the first is due, a bit late
            now = min(due for _, due in admission.deferred) + chance.uniform(0, 0.005)
    assert 500 / now >= 0.9 * rate


def test_concurrency_counts_the_deliveries_still_held() -> None:
    admission = admit(
        [7, 8, 9], 50.0, rate_limit=None, concurrency=3, rate_tat=None, still_held=[2]
    )
    assert admission.admitted == [7, 8]
    assert admission.held == [2, 7, 8]
    assert admission.deferred == [(9, 50.0 + BUSY_SECONDS)]
    full = admit([9], 50.0, rate_limit=None, concurrency=3, rate_tat=None, still_held=[2, 7, 8])
    assert full.admitted == []
    assert full.held == [2, 7, 8]
