"""Building the events capability of one process over a test's store, with a config of the test's
choosing, and running its dispatcher on an event loop for the length of a block."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.support.gateway import proxy_config

from portico.config.model import PorticoConfig
from portico.events.service import Events
from portico.store.database import Database
from portico.store.secrets import Secrets

TENANTS = {
    "acme": {"consumers": {"billing": {}, "crm": {}}},
    "globex": {"consumers": {"erp": {}}},
}

TYPES = {
    "order.created": {
        "description": "An order was placed.",
        "schema": {
            "type": "object",
            "required": ["order_id", "total"],
            "properties": {"order_id": {"type": "string"}, "total": {"type": "number"}},
        },
    },
    "order.shipped": {"description": "An order left the warehouse."},
    "invoice.paid": {"description": "An invoice was paid."},
}


FAST_LOCAL_DELIVERY: dict[str, Any] = {
    "allow_http": True,
    "allow_networks": ["127.0.0.0/8"],
    "schedule": [0, 0.05, 0.05, 0.05],
    "jitter": 0,
    "timeout": 2,
    "claim_timeout": 5,
    "poll_interval": 0.05,
}
"""Deliveries to 127.0.0.1 over http, retried fast."""


def config_with(**delivery: Any) -> PorticoConfig:
    """A config whose events deliver to 127.0.0.1 over http, fast, with ``delivery`` on top."""
    settings = {**FAST_LOCAL_DELIVERY, **delivery}
    return PorticoConfig.model_validate(
        {"tenants": TENANTS, "events": {"types": TYPES, "delivery": settings}}
    )


def served_config(
    tmp_path: Path, tenants: dict[str, Any], events: dict[str, Any], **delivery: Any
) -> dict[str, Any]:
    """A ``portico serve`` config over a SQLite file in ``tmp_path`` with an ``events`` section:
    ``events`` (types, endpoints, inbound...) with the fast local delivery, ``delivery`` on
    top."""
    config = proxy_config("http://127.0.0.1:9")
    config["database"] = {"url": f"sqlite:///{tmp_path / 'portico.db'}"}
    config["tenants"] = tenants
    config["events"] = {**events, "delivery": {**FAST_LOCAL_DELIVERY, **delivery}}
    return config


def events_over(database: Database, secrets: Secrets, config: PorticoConfig) -> Events:
    current = [config]
    return Events(database, secrets, lambda: current[0])


@asynccontextmanager
async def delivering(events: Events) -> AsyncIterator[Events]:
    events.start_delivering()
    try:
        yield events
    finally:
        await events.stop()


async def publish(events: Events, event_type: str, data: Any, **kwargs: Any) -> str:
    kwargs.setdefault("publisher", "admin:test")
    published = await asyncio.to_thread(events.publisher.publish, event_type, data, **kwargs)
    return published.id


async def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not hold in time")
        await asyncio.sleep(0.02)
