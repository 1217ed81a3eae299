"""What ``portico serve`` and the supervisor record of each config they apply: the file in
``config_revisions`` (secrets redacted), and the lifecycle changes it brings in the audit log."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from portico.config.lifecycle import LIFECYCLE_ACTION, LifecycleChange, lifecycle_changes
from portico.config.model import PorticoConfig
from portico.config.secrets import redact_text
from portico.operations.listener import ReadinessCheck
from portico.store.database import create_engine_for, write_engine
from portico.store.repositories import AuditLog, Author, ConfigRevisions

__all__ = ["RevisionRecorder"]

log = logging.getLogger("portico")


class RevisionRecorder:
    """Writes each applied config to ``config_revisions``, off the event loop; and, with it in
    one transaction, each change of a service's lifecycle since the config it applied before
    (``service.lifecycle`` in the audit log, by ``serve``: docs/catalog.md)."""

    ACTOR = "serve"

    def __init__(self, url: str) -> None:
        self._engine = create_engine_for(url)
        self._repo = ConfigRevisions(self._engine)
        self._applied: PorticoConfig | None = None

    def close(self) -> None:
        self._engine.dispose()

    def readiness(self) -> ReadinessCheck:
        """``/readyz``'s store check: the database answers a query (off the event loop)."""

        async def check() -> None:
            await asyncio.get_running_loop().run_in_executor(None, self._ping)

        return ReadinessCheck("store", check)

    def _ping(self) -> None:
        with self._engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))

    def record(self, path: Path, sha256: str, config: PorticoConfig | None = None) -> None:
        """Record the file at ``path`` as applied; ``config``, what was loaded from it, is
        compared with the config recorded before (the first one of a run is compared with
        nothing: a change made while Portico was stopped is in the revisions, not here)."""
        # As written (``${VAR}`` references, never their values), and without a secret written
        # as its value: the database is no place for one (docs/sync.md#secrets).
        body = redact_text(path.read_text(encoding="utf-8"))
        changes: list[LifecycleChange] = []
        if config is not None:
            if self._applied is not None:
                changes = lifecycle_changes(self._applied, config)
            self._applied = config
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, self._write, sha256, str(path), body, changes)
        future.add_done_callback(_log_failure)

    def _write(self, sha256: str, source: str, body: str, changes: list[LifecycleChange]) -> int:
        if not changes:
            return self._repo.record(sha256, source, body, self.ACTOR)
        bind = write_engine(self._engine)
        with Session(bind=bind, expire_on_commit=False) as session, session.begin():
            revision = ConfigRevisions(session).record(sha256, source, body, self.ACTOR)
            audit = AuditLog(session)
            for change in changes:
                audit.record(
                    Author(self.ACTOR),
                    LIFECYCLE_ACTION,
                    change.service,
                    before=change.before,
                    after=change.after,
                    detail={**change.detail, "revision": revision, "source": source},
                )
        for change in changes:
            log.info(
                "service %s: lifecycle %s -> %s (audit log: %s)",
                change.service,
                change.detail["from"],
                change.detail["to"],
                LIFECYCLE_ACTION,
            )
        return revision


def _log_failure(future: asyncio.Future[int]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("could not record the config revision: %s", future.exception())
