"""What the admin API reads and writes, handed to it by whoever serves it: ``portico serve``
(one process: the gateway's own config and shared state) or the supervisor of
``--workers N`` (its own view of the config, which it hands to every gateway process).

The admin API never reaches into a gateway: it reads the config the processes serve, and writes
the store, whose change counter every gateway process polls (a change reaches all of them
within a second, the way ``portico keys`` does).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from portico.config.model import PorticoConfig
from portico.events.service import Events
from portico.shared.state import SharedState
from portico.store.database import Database
from portico.store.repositories import StateRevision
from portico.store.secrets import Secrets

__all__ = ["AdminContext", "CheckedState"]


@dataclass(slots=True)
class CheckedState:
    """The store's latest state revision as the admin API last checked it, and its config
    (``entities.source: store``): checked once per revision, not per request."""

    revision: StateRevision | None = None
    config: PorticoConfig | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True, slots=True)
class AdminContext:
    database: Database
    config: Callable[[], PorticoConfig]
    """The config the gateway processes serve now (it changes on a reload)."""
    shared: SharedState
    """Where the rate-limit counters are: Redis, or this process's memory (one process)."""
    secrets: Secrets
    """What opens and seals the secrets stored (the OAuth server's signing keys)."""
    settle: float = 0.5
    """Seconds a write waits after its commit before answering: two polls of the gateways'
    change counter, so that a client that creates a key and uses it at once, or revokes one and
    expects it refused, finds every gateway agreeing."""
    config_path: Path | None = None
    """The config file: its other sections are what an edit of the store's entities is checked
    with (``entities.source: store``)."""
    entities_source: Literal["file", "store"] = "file"
    """Where the served entities come from: ``file`` refuses the admin API's edits of them."""
    state: CheckedState = field(default_factory=CheckedState)
    events: Events = field(init=False)
    """Event types, publishing, webhook endpoints and the delivery log, over this database and
    these secrets, reading the running config's ``events`` section. It never delivers: the
    gateway's process (or ``--role worker``) does, and finds what the admin API queued at its
    next poll."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "events", Events(self.database, self.secrets, self.config))
