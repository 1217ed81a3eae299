"""Waking every delivering process when deliveries become due: a publish, a redelivery.

On PostgreSQL a redelivery's transaction ``NOTIFY``s a channel (PostgreSQL sends it when the
transaction commits, and not at all when it rolls back), and a publish, once committed, has the
process's :class:`Notifier` send one; every delivering process ``LISTEN``s on a connection of its
own and wakes its dispatcher: a publish in a gateway process, or on another machine, starts
delivery at once instead of at the workers' next poll.
Polling (``events.delivery.poll_interval``) stays as the fallback: while the listening
connection is down (it reconnects), and on SQLite, where there is no such channel and the process
that publishes wakes its own dispatcher.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from portico.store.database import Database

__all__ = ["APPLICATION_NAME", "CHANNEL", "Notifier", "WakeListener", "notify_workers"]

log = logging.getLogger("portico.events")

CHANNEL = "portico_deliveries"
APPLICATION_NAME = "portico-wakeup"
"""How the listening connections show in ``pg_stat_activity``."""
_NOTIFY = sa.text(f"NOTIFY {CHANNEL}")
CHECK_SECONDS = 30.0
"""How long the listening connection may stay silent before it is asked whether it still
answers (a connection cut without a word, a firewall's idle timeout)."""
RECONNECT_SECONDS = (0.1, 0.5, 1.0, 2.0, 5.0)
"""The pauses between attempts to listen again, the last repeated."""
NOTIFY_GAP_SECONDS = 0.02
"""A publishing process notifies at most once in this time; the publishes of the gap share the
next notification. Each notification wakes every delivering process: at 5 ms, four publishing
processes at 500 events/s woke each worker 500 times a second (docs/benchmarks.md, issue 12)."""


def notify_workers(executor: Session | Connection) -> None:
    """Wake every delivering process when ``executor``'s transaction commits (PostgreSQL;
    nothing on SQLite). PostgreSQL folds the notifications of one transaction into one."""
    dialect = executor.dialect if isinstance(executor, Connection) else executor.get_bind().dialect
    if dialect.name == "postgresql":
        executor.execute(_NOTIFY)


class Notifier:
    """Sends the notification of a process's publishes after they commit, at most one every
    ``gap`` seconds: a publish made during the gap is covered by one sent when the gap ends.

    Not in the publish's transaction: PostgreSQL serialises the commits of notifying
    transactions (a notifying transaction holds the notification queue's lock from its
    pre-commit to its end), which at hundreds of publishes a second would queue them one behind
    the other, and each notification would wake every worker for one delivery. A thread of its
    own sends them, so a publish never waits for one."""

    def __init__(self, database: Database, gap: float = NOTIFY_GAP_SECONDS) -> None:
        # Autocommit: one round trip per notification, not three (BEGIN, NOTIFY, COMMIT).
        self._engine = database.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._gap = gap
        self._due = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def published(self) -> None:
        """A publish with deliveries committed (from any thread)."""
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="portico-notify", daemon=True
                    )
                    self._thread.start()
        self._due.set()

    def _run(self) -> None:
        while True:
            self._due.wait()
            self._due.clear()
            try:
                with self._engine.connect() as connection:
                    connection.execute(_NOTIFY)
            except Exception as exc:  # the workers' polling finds the deliveries meanwhile
                log.warning("cannot notify the delivering processes: %s", exc)
            time.sleep(self._gap)


class WakeListener:
    """Listens on ``database`` (PostgreSQL) and calls ``wake`` for each notification, and once
    each time it starts listening (what was published while it was not)."""

    def __init__(self, database: Database, wake: Callable[[], None]) -> None:
        engine = database.engine
        # The arguments SQLAlchemy gives psycopg for this URL: the same server, user, options.
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        self._conninfo: str = args[0] if args else ""
        self._options: dict[str, Any] = dict(kwargs)
        self._options.setdefault("application_name", APPLICATION_NAME)
        self._wake = wake
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        """Set while a connection listens (the tests wait for it)."""
        self.connections = 0
        """Connections that listened, since the start."""

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="portico-wakeup")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        failures = 0
        while True:
            before = self.connections
            try:
                await self._listen()
            except Exception as exc:
                self.listening.clear()
                if self.connections > before:
                    failures = 0  # it listened, then lost the connection
                if failures == 0:
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    log.warning(
                        "not woken by publishes in other processes until the store answers "
                        "again (polling meanwhile): %s",
                        reason or type(exc).__name__,
                    )
                await asyncio.sleep(RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)])
                failures += 1

    async def _listen(self) -> None:
        connection = await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, **self._options
        )
        async with connection:
            await connection.execute(f"LISTEN {CHANNEL}")
            self.connections += 1
            self.listening.set()
            if self.connections > 1:
                log.info("woken by publishes in other processes again")
            self._wake()
            while True:
                async for _ in connection.notifies(timeout=CHECK_SECONDS):
                    self._wake()
                # Silent for a while: does the connection still answer?
                await asyncio.wait_for(connection.execute("SELECT 1"), CHECK_SECONDS)
