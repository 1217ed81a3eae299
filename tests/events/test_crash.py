"""Zero loss across crashes (issue 12, "Proof"): 10,000 events published to five endpoints of a
real receiver, delivered by ``portico serve --role worker`` processes that are killed with
SIGKILL at random moments during delivery and started again; afterwards every event has reached
every endpoint subscribed to it, every duplicate is the same message (same ``webhook-id``, same
signed bytes), the FIFO endpoint received each key's events in order, and the store says every
delivery succeeded. On SQLite (the workers share its single writer) and on PostgreSQL (they
claim with ``FOR UPDATE SKIP LOCKED``).

The events are published from this process with the :class:`~portico.events.publishing.Publisher`
while the workers deliver (publishing over HTTP is tested with the consumer API). A short
``claim_timeout`` brings a killed worker's claims back quickly, and a fast retry schedule keeps
the endpoint that fails its first two attempts moving.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError
from standardwebhooks.webhooks import Webhook
from tests.events.harness import TENANTS, TYPES
from tests.store.conftest import secrets_with
from tests.support.gateway import _portico_command, write_config
from tests.support.receivers import Received, Receiver

from portico.config.model import PorticoConfig
from portico.events.publishing import Published as PublishedEvent
from portico.events.service import Events
from portico.store.database import Database
from portico.store.migrate import upgrade
from portico.store.secrets import ENVIRONMENT_VARIABLE
from portico.store.secrets.keys import generate_key_text
from portico.store.tables import DeliveryRow, EventRow

EVENTS = 10_000
KEYS = 200
"""Order ids: the FIFO endpoint's ordering keys, 50 events each (about 33 of them ``order.*``)."""
PUBLISHERS = 2
"""Threads publishing side by side; each owns its share of the keys (``KEYS`` is a multiple), so
each key's publishing order is the order its thread published in."""
WORKERS = 3
KILLS = 5
"""Kills during delivery; one of them takes every worker down at once."""
EVENT_TYPES = ("order.created", "order.shipped", "invoice.paid")

DELIVERY = {
    "allow_http": True,
    "allow_networks": ["127.0.0.0/8"],
    "schedule": ["0s", "50ms", "50ms", "100ms", "200ms", "500ms", "1s", "1s"],
    "jitter": 0.2,
    "timeout": "2s",
    "claim_timeout": "4s",
    "poll_interval": "50ms",
}


@dataclass(frozen=True, slots=True)
class Subscriber:
    path: str
    types: tuple[str, ...] = ("*",)
    ordering_key: str | None = None
    fail_first: int = 0
    delay: float = 0.0


SUBSCRIBERS = (
    Subscriber("/plain"),
    Subscriber("/failing", fail_first=2),
    Subscriber("/slow", delay=0.05),
    Subscriber("/fifo", types=("order.*",), ordering_key="data.order_id", fail_first=1),
    Subscriber("/shipped", types=("order.shipped",)),
)


def subscribed(subscriber: Subscriber, event_type: str) -> bool:
    return any(
        pattern in ("*", event_type)
        or (pattern.endswith(".*") and event_type.startswith(pattern[:-1]))
        for pattern in subscriber.types
    )


@dataclass
class Workers:
    """The delivery workers: ``portico serve --role worker`` processes on one config."""

    config_path: Path
    key: str
    """The secrets key the workers open the endpoints' signing secrets with."""
    env: dict[str, str]
    logs: Path
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    started: int = 0
    killed: int = 0

    def start(self, slot: int) -> None:
        self.started += 1
        log = (self.logs / f"worker-{slot}-{self.started}.log").open("wb")
        self.processes[slot] = subprocess.Popen(
            [_portico_command(), "serve", "--role", "worker", "-c", str(self.config_path)],
            cwd=self.config_path.parent,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        log.close()

    def kill(self, slot: int) -> None:
        process = self.processes[slot]
        if process.poll() is not None:
            raise AssertionError(f"worker {slot} had exited by itself:\n{self.log_tails()}")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        self.killed += 1

    def stop(self) -> list[int | None]:
        """SIGTERM to every worker; their exit codes (``None``: it had to be killed)."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for process in self.processes.values():
            try:
                codes.append(process.wait(20))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
                codes.append(None)
        return codes

    def log_tails(self) -> str:
        return "\n".join(
            f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:])
            for path in sorted(self.logs.glob("worker-*.log"))
        )


@pytest.fixture
def workers(database_url: str, tmp_path: Path) -> Iterator[Workers]:
    key = generate_key_text()
    config = {
        "database": {"url": database_url},
        "tenants": TENANTS,
        "events": {"types": TYPES, "delivery": DELIVERY},
    }
    config_path = write_config(tmp_path / "portico.yaml", config)
    env = {**os.environ, ENVIRONMENT_VARIABLE: key}
    env.pop("PORTICO_DATABASE_URL", None)
    running = Workers(config_path, key, env, tmp_path)
    try:
        yield running
    finally:
        running.stop()


@dataclass
class Published:
    """What the publishing threads committed: each event's id, type and key, by key in order."""

    types: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    by_key: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    errors: list[BaseException] = field(default_factory=list)
    retried: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def publish_one(
    events: Events, published: Published, event_type: str, data: dict[str, Any], key: str
) -> PublishedEvent:
    """Publish as a careful client does: when the store is too busy to take the event (SQLite's
    write lock not had within its busy timeout), again with the same idempotency key, which
    returns the event if the first try did commit."""
    for _ in range(20):
        try:
            return events.publisher.publish(
                event_type, data, publisher="admin:crash-test", idempotency_key=key
            )
        except OperationalError:
            with published.lock:
                published.retried += 1
    raise AssertionError(f"the store refused event {key} 20 times")


def publish_all(events: Events, published: Published, part: int) -> None:
    try:
        for n in range(part, EVENTS, PUBLISHERS):
            key = f"ord-{n % KEYS:04d}"
            event_type = EVENT_TYPES[n % len(EVENT_TYPES)]
            data: dict[str, Any] = {"order_id": key, "n": n}
            if event_type == "order.created":
                data["total"] = n / 100
            event = publish_one(events, published, event_type, data, f"event-{n}")
            with published.lock:
                published.types[event.id] = event_type
                published.keys[event.id] = key
                published.by_key[key].append(event.id)
    except BaseException as exc:
        published.errors.append(exc)


def successes(received: list[Received], fail_first: int) -> list[tuple[int, Received]]:
    """The receipts the receiver answered 2xx, with their place in the arrival order: the
    receiver fails the first ``fail_first`` receipts of each message id, whoever sent them."""
    seen: dict[str, int] = defaultdict(int)
    answered = []
    for place, item in enumerate(received):
        seen[item.id] += 1
        if seen[item.id] > fail_first:
            answered.append((place, item))
    return answered


def store_counts(database: Database) -> dict[str, int]:
    table: sa.Table = DeliveryRow.__table__  # type: ignore[assignment]
    with database.read() as session:
        rows = session.execute(
            sa.select(table.c.status, sa.func.count()).group_by(table.c.status)
        ).all()
    return {status: int(count) for status, count in rows}


@pytest.mark.slow
def test_no_event_is_lost_when_workers_are_killed_during_delivery(
    database_url: str, workers: Workers, receiver: Receiver, tmp_path: Path
) -> None:
    upgrade(database_url)
    database = Database(database_url)
    secrets = secrets_with(workers.key)
    config = PorticoConfig.model_validate(
        {"tenants": TENANTS, "events": {"types": TYPES, "delivery": DELIVERY}}
    )
    events = Events(database, secrets, lambda: config)
    endpoint_ids: dict[str, str] = {}
    signing: dict[str, Webhook] = {}
    for subscriber in SUBSCRIBERS:
        endpoint, secret = events.endpoints.create(
            "acme/billing",
            receiver.url(subscriber.path),
            types=list(subscriber.types),
            ordering_key=subscriber.ordering_key,
        )
        endpoint_ids[subscriber.path] = endpoint.id
        signing[subscriber.path] = Webhook(secret)
        behaviour = receiver.behaviours[subscriber.path]
        behaviour.fail_first = subscriber.fail_first
        behaviour.delay = subscriber.delay

    published = Published()
    publishers = [
        threading.Thread(target=publish_all, args=(events, published, part), daemon=True)
        for part in range(PUBLISHERS)
    ]
    expected_receipts = sum(
        (1 + subscriber.fail_first)
        * sum(subscribed(subscriber, EVENT_TYPES[n % 3]) for n in range(EVENTS))
        for subscriber in SUBSCRIBERS
    )
    chance = random.Random()
    # Kills at random points of the delivery's progress, so they fall during delivery however
    # fast this machine is today; one of them takes every worker down at once.
    kill_at = sorted(chance.uniform(0.05, 0.9) for _ in range(KILLS))
    everyone = chance.randrange(KILLS)
    started = time.monotonic()
    try:
        for slot in range(WORKERS):
            workers.start(slot)
        for thread in publishers:
            thread.start()
        for number, fraction in enumerate(kill_at):
            deadline = time.monotonic() + 180
            while len(receiver.received) < fraction * expected_receipts:
                assert time.monotonic() < deadline, (
                    f"delivery stalled at {len(receiver.received)} receipts\n{workers.log_tails()}"
                )
                assert not published.errors, published.errors
                time.sleep(0.02)
            time.sleep(chance.uniform(0, 0.3))
            victims = list(range(WORKERS)) if number == everyone else [chance.randrange(WORKERS)]
            for slot in victims:
                workers.kill(slot)
            time.sleep(chance.uniform(0, 0.5))
            for slot in victims:
                workers.start(slot)
        for thread in publishers:
            thread.join(120)
        assert not published.errors, published.errors
        assert len(published.types) == EVENTS
        deadline = time.monotonic() + 180
        while (counts := store_counts(database)).get("pending", 0):
            assert time.monotonic() < deadline, f"{counts}\n{workers.log_tails()}"
            time.sleep(0.1)
        elapsed = time.monotonic() - started
    finally:
        codes = workers.stop()
    # Every restarted worker stops cleanly when asked to.
    assert codes == [0] * WORKERS, workers.log_tails()
    assert workers.killed == KILLS - 1 + WORKERS

    # The store: one delivery per event and subscribed endpoint, every one succeeded.
    expected = {
        (event_id, endpoint_ids[subscriber.path])
        for event_id, event_type in published.types.items()
        for subscriber in SUBSCRIBERS
        if subscribed(subscriber, event_type)
    }
    deliveries: sa.Table = DeliveryRow.__table__  # type: ignore[assignment]
    stored_events: sa.Table = EventRow.__table__  # type: ignore[assignment]
    with database.read() as session:
        rows = session.execute(
            sa.select(deliveries.c.event_id, deliveries.c.endpoint_id, deliveries.c.status)
        ).all()
        payloads = {
            row.id: row.payload.encode()
            for row in session.execute(sa.select(stored_events.c.id, stored_events.c.payload))
        }
    database.dispose()
    assert {(row.event_id, row.endpoint_id) for row in rows} == expected
    assert len(rows) == len(expected)
    assert {row.status for row in rows} == {"succeeded"}

    by_path: dict[str, list[Received]] = defaultdict(list)
    for item in receiver.received:
        by_path[item.path].append(item)
    duplicates = 0
    for subscriber in SUBSCRIBERS:
        received = by_path[subscriber.path]
        wanted = {event_id for event_id, t in published.types.items() if subscribed(subscriber, t)}
        # Nothing reached an endpoint that was not subscribed to it; every subscribed event
        # reached it, answered 2xx at least once.
        assert {item.id for item in received} == wanted, subscriber.path
        succeeded = successes(received, subscriber.fail_first)
        assert {item.id for _, item in succeeded} == wanted, subscriber.path
        duplicates += len(succeeded) - len(wanted)
        # Every copy of a message is that message: the same id, the event's stored bytes, and
        # a signature the standardwebhooks library accepts.
        for item in received:
            assert item.body == payloads[item.id], (subscriber.path, item.id)
            signing[subscriber.path].verify(item.body, item.headers)

    # FIFO: for each key, the first successful receipts come in publishing order, and no
    # message of a key arrived before the previous one's first successful receipt.
    fifo = next(s for s in SUBSCRIBERS if s.ordering_key is not None)
    received = by_path[fifo.path]
    first_success: dict[str, int] = {}
    for place, item in successes(received, fifo.fail_first):
        first_success.setdefault(item.id, place)
    first_arrival: dict[str, int] = {}
    for place, item in enumerate(received):
        first_arrival.setdefault(item.id, place)
    for key, ids in published.by_key.items():
        ordered = [event_id for event_id in ids if subscribed(fifo, published.types[event_id])]
        assert sorted(ordered, key=first_success.__getitem__) == ordered, key
        for previous, following in itertools.pairwise(ordered):
            assert first_arrival[following] > first_success[previous], (key, following)

    print(
        f"\n{EVENTS} events, {len(expected)} deliveries, {len(receiver.received)} receipts "
        f"({duplicates} duplicates of a success) in {elapsed:.1f} s; "
        f"{workers.killed} workers killed, {workers.started} started; "
        f"{published.retried} publishes retried"
    )
