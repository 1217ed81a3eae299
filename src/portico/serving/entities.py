"""The store's state revision a serving process serves (``entities.source: store``): seeded
once before serving, then kept current by a poll of the latest revision id."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from portico.checking import check_config_to_serve
from portico.config.errors import ConfigError
from portico.config.loader import CheckedConfig, StoredEntities
from portico.config.model import PorticoConfig
from portico.core.errors import PorticoError
from portico.store.database import Database
from portico.store.repositories import StateRevision, StateRevisions

__all__ = ["STATE_POLL_INTERVAL", "ServedEntities", "latest_state", "seed_state"]

log = logging.getLogger("portico")

STATE_POLL_INTERVAL = 0.25
"""Seconds between two reads of the store's latest state revision id (``entities.source:
store``): an admin API write or an apply is served by every process within about half a second."""


def seed_state(config_path: Path) -> ServedEntities:
    """``entities.source: store``, once before serving: the store's latest state revision,
    seeded from the file when the store holds none (and one line when the file's entity
    sections differ from it)."""
    from portico.admin.sync import seed

    checked = check_config_to_serve(config_path)
    database = Database(checked.config.database.url)
    entities = ServedEntities(database, seed(database, checked, config_path), config_path)
    entities.file_differs(checked)
    return entities


def latest_state(config: PorticoConfig, config_path: Path) -> ServedEntities:
    """The store's latest state revision (seeded already, by the supervisor)."""
    database = Database(config.database.url)
    revision = StateRevisions(database).latest()
    if revision is None:
        database.dispose()
        raise PorticoError("the store holds no state revision: the supervisor seeds one first")
    return ServedEntities(database, revision, config_path)


class ServedEntities:
    """The store's state revision one process serves (``entities.source: store``), kept current
    by a poll of the latest revision id: in a thread, off the event loop and the request path,
    every :data:`STATE_POLL_INTERVAL`. A new revision is checked through the same loader as a
    file reload and swapped in; one that cannot be served is logged once and the previous keeps
    serving."""

    def __init__(self, database: Database, revision: StateRevision, config_path: Path) -> None:
        self.database = database
        self.revision = revision
        self._config_path = config_path
        self._refused: int | None = None
        self._failing = False

    def stored(self, revision: StateRevision | None = None) -> StoredEntities:
        from portico.admin.sync import stored_entities

        return stored_entities(revision or self.revision)

    def file_differs(self, checked: CheckedConfig) -> None:
        from portico.admin.sync import file_differs

        file_differs(checked, self.revision, self._config_path)

    async def watch(
        self,
        check: Callable[[StateRevision], CheckedConfig],
        serve: Callable[[StateRevision, CheckedConfig], None],
        interval: float = STATE_POLL_INTERVAL,
    ) -> None:
        """Until cancelled: on a new latest revision, ``check`` it (in the poll's thread), then
        ``serve`` it (on the event loop)."""
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="portico-state")
        try:
            while True:
                started = loop.time()
                try:
                    found = await loop.run_in_executor(executor, self._newer, check)
                except Exception as exc:
                    if not self._failing:
                        log.error(
                            "reading the store's state failed; store revision %d keeps serving: %s",
                            self.revision.id,
                            exc,
                        )
                    self._failing = True
                else:
                    if self._failing:
                        log.info("reading the store's state works again")
                    self._failing = False
                    if found is not None:
                        self._serve(serve, *found)
                await asyncio.sleep(max(0.0, interval - (loop.time() - started)))
        finally:
            executor.shutdown(wait=False, cancel_futures=True)

    def _newer(
        self, check: Callable[[StateRevision], CheckedConfig]
    ) -> tuple[StateRevision, CheckedConfig] | None:
        revisions = StateRevisions(self.database)
        latest_id = revisions.latest_id()
        if latest_id is None or latest_id in (self.revision.id, self._refused):
            return None
        revision = revisions.get(latest_id)
        if revision is None:
            return None
        try:
            return revision, check(revision)
        except ConfigError as exc:
            self._refused = revision.id
            log.error(
                "store revision %d cannot be served; revision %d keeps serving:\n%s",
                revision.id,
                self.revision.id,
                exc,
            )
            return None

    def _serve(
        self,
        serve: Callable[[StateRevision, CheckedConfig], None],
        revision: StateRevision,
        checked: CheckedConfig,
    ) -> None:
        try:
            serve(revision, checked)
        except Exception:
            self._refused = revision.id
            log.exception(
                "store revision %d cannot be served; revision %d keeps serving",
                revision.id,
                self.revision.id,
            )
            return
        self.revision = revision
