"""The live identity state: built from the config and the store, refreshed when the store moves."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from portico.assembly import load_config_text
from portico.config.model import PorticoConfig
from portico.identity.apikeys import generate_key
from portico.identity.state import Directory, IdentityState
from portico.identity.store import ApiKeys
from portico.store.database import Database

DECLARED = generate_key()


def config(extra_consumer: bool = False) -> PorticoConfig:
    consumers = f"""
      billing:
        scopes: [orders:read, orders:write]
        metadata: {{team: finance}}
        ip_rules: {{allow: [10.0.0.0/8]}}
        api_keys:
          - {{id: {DECLARED.id}, sha256: {DECLARED.sha256}, expires_at: "2020-01-01T00:00:00Z"}}
"""
    if extra_consumer:
        consumers += "      shop: {scopes: [orders:read]}\n"
    return load_config_text(f"tenants:\n  acme:\n    consumers:{consumers}", "portico.yaml")


def test_the_directory_holds_consumers_with_scopes_metadata_and_ip_rules() -> None:
    directory = Directory.build(config())

    billing = directory.consumers["acme/billing"]
    assert billing.tenant == "acme" and billing.name == "billing"
    assert billing.scopes == frozenset({"orders:read", "orders:write"})
    assert billing.metadata == {"team": "finance"}
    assert billing.ip_rules is not None
    assert billing.ip_rules.permits("10.1.2.3") and not billing.ip_rules.permits("192.0.2.1")
    declared = directory.api_keys[DECLARED.id]
    assert declared.consumer == "acme/billing" and declared.source == "config"
    assert declared.not_after == datetime(2020, 1, 1, tzinfo=UTC).timestamp()


def test_refresh_loads_keys_written_after_the_state_was_opened(database: Database) -> None:
    state = IdentityState(config(), database)
    assert state.refresh() is True
    assert state.refresh() is False  # nothing moved
    new = generate_key()
    ApiKeys(database).add(new.id, "acme/billing", new.sha256)

    assert state.refresh() is True

    entry = state.directory.api_keys[new.id]
    assert entry.sha256 == new.sha256 and entry.source == "database"
    assert DECLARED.id in state.directory.api_keys


def test_a_revoked_key_leaves_the_directory_on_refresh(database: Database) -> None:
    new = generate_key()
    ApiKeys(database).add(new.id, "acme/billing", new.sha256)
    state = IdentityState(config(), database)
    state.refresh()
    assert new.id in state.directory.api_keys

    ApiKeys(database).revoke(new.id)
    state.refresh()

    assert new.id not in state.directory.api_keys


def test_a_rotated_key_carries_the_end_of_its_overlap(database: Database) -> None:
    old, new = generate_key(), generate_key()
    overlap_until = datetime.now(UTC) + timedelta(hours=1)
    ApiKeys(database).add(old.id, "acme/billing", old.sha256)
    ApiKeys(database).rotate(old.id, new.id, new.sha256, overlap_until=overlap_until)
    state = IdentityState(config(), database)

    state.refresh()

    assert state.directory.api_keys[old.id].not_after == overlap_until.timestamp()
    assert state.directory.api_keys[new.id].not_after is None


def test_a_reloaded_config_rebuilds_the_directory_and_keeps_database_keys(
    database: Database,
) -> None:
    new = generate_key()
    ApiKeys(database).add(new.id, "acme/billing", new.sha256)
    state = IdentityState(config(), database)
    state.refresh()
    seen: list[Directory] = []
    state.on_change(seen.append)

    state.use_config(config(extra_consumer=True))

    assert "acme/shop" in state.directory.consumers
    assert new.id in state.directory.api_keys
    assert seen == [state.directory]


def test_watch_applies_a_revocation_made_by_another_connection(database: Database) -> None:
    new = generate_key()
    ApiKeys(database).add(new.id, "acme/billing", new.sha256)
    state = IdentityState(config(), database)
    state.refresh()

    async def scenario() -> bool:
        watch = asyncio.create_task(state.watch(interval=0.05))
        try:
            other = Database(str(database.url.render_as_string(hide_password=False)))
            try:
                await asyncio.to_thread(ApiKeys(other).revoke, new.id)
            finally:
                other.dispose()
            for _ in range(200):
                if new.id not in state.directory.api_keys:
                    return True
                await asyncio.sleep(0.05)
            return False
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)

    try:
        assert asyncio.run(scenario()) is True
    finally:
        state.close()


def test_watch_keeps_the_last_directory_while_the_store_fails(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    new = generate_key()
    ApiKeys(database).add(new.id, "acme/billing", new.sha256)
    state = IdentityState(config(), database)
    state.refresh()
    before = state.directory
    with database.engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE identity_changes"))

    async def scenario() -> None:
        watch = asyncio.create_task(state.watch(interval=0.01))
        for _ in range(200):
            if any("identity refresh failed" in r.message for r in caplog.records):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # several more failing polls
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)

    with caplog.at_level(logging.ERROR, logger="portico.identity"):
        try:
            asyncio.run(scenario())
        finally:
            state.close()

    assert state.directory is before
    failures = [r for r in caplog.records if "identity refresh failed" in r.message]
    assert len(failures) == 1  # logged once per outage, not once per poll
