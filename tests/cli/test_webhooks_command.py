"""``portico events`` and ``portico webhooks`` through the real command, on the store of a config:
the secret printed once and never again, the SSRF rules and the file's endpoints refused in one
line, publishing checked against the schema, dead deliveries (made by a real dispatcher against
a real receiver) listed and redelivered one by one and by time range, every change audited
without a secret."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook
from tests.cli.test_cli_failures import the_error_line
from tests.events.harness import delivering, eventually
from tests.support.gateway import route, run_portico, service, with_defaults, write_config
from tests.support.receivers import Receiver, running_receiver

from portico.checking import load_config
from portico.events.service import Events
from portico.store.database import Database
from portico.store.repositories import AuditFilter, AuditLog
from portico.store.secrets import current_store_secrets

CONFIG_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest.fixture
def config_path(tmp_path: Path, receiver: Receiver) -> Path:
    config: dict[str, Any] = {
        "services": {"main": service("http://127.0.0.1:9")},
        "routes": [route("open", "/open")],
        "database": {"url": f"sqlite:///{tmp_path / 'portico.db'}"},
        "tenants": {
            "acme": {"consumers": {"billing": {}, "shop": {}}},
            "globex": {"consumers": {"app": {}}},
        },
        "events": {
            "types": {
                "order.created": {
                    "description": "An order was placed.",
                    "owner": "team-orders",
                    "schema": {
                        "type": "object",
                        "required": ["order_id"],
                        "properties": {"order_id": {"type": "string"}},
                    },
                },
                "order.shipped": {"description": "An order left the warehouse."},
            },
            "delivery": {
                "allow_http": True,
                "allow_networks": ["127.0.0.0/8"],
                "schedule": [0, 0.05],
                "jitter": 0,
                "timeout": 2,
                "claim_timeout": 5,
                "poll_interval": 0.05,
            },
            "endpoints": {
                "audit": {
                    "consumer": "acme/shop",
                    "url": receiver.url("/config"),
                    "secret": CONFIG_SECRET,
                }
            },
        },
    }
    return write_config(tmp_path / "portico.yaml", with_defaults(config))


def portico(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_portico(*args, "-c", str(config_path), cwd=config_path.parent)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def events_of(config_path: Path) -> tuple[Events, Database]:
    config = load_config(config_path)
    database = Database(config.database.url)
    # Migrated as `portico serve` migrates a SQLite file at start.
    secrets = current_store_secrets(config.database.url)
    return Events(database, secrets, lambda: config), database


def deliver_until(config_path: Path, done: Any) -> None:
    """A real dispatcher over the config's store, as `portico serve` runs one, until ``done``."""
    events, database = events_of(config_path)

    async def run() -> None:
        async with delivering(events):
            await eventually(done)

    try:
        asyncio.run(run())
    finally:
        database.dispose()


def audit_entries(config_path: Path) -> list[Any]:
    config = load_config(config_path)
    database = Database(config.database.url)
    try:
        return AuditLog(database).page(AuditFilter(), limit=500, after_id=None, newest_first=False)
    finally:
        database.dispose()


def create(config_path: Path, path: str, receiver: Receiver, *extra: str) -> tuple[str, str]:
    """An endpoint of acme/billing: its id and its secret."""
    done = ok(
        portico(
            config_path,
            "webhooks",
            "endpoints",
            "create",
            "--consumer",
            "acme/billing",
            "--url",
            receiver.url(path),
            *extra,
        )
    )
    secret = done.stdout.strip()
    endpoint_id = done.stderr.split("Created webhook endpoint ", 1)[1].split()[0]
    return endpoint_id, secret


def dead(config_path: Path, endpoint_id: str) -> list[dict[str, Any]]:
    shown = ok(
        portico(
            config_path,
            "webhooks",
            "deliveries",
            "list",
            "--dead",
            "--endpoint",
            endpoint_id,
            "--json",
        )
    )
    found: list[dict[str, Any]] = json.loads(shown.stdout)
    return found


def test_the_types_are_listed_with_the_operational_one(config_path: Path) -> None:
    table = ok(portico(config_path, "events", "types")).stdout
    assert table.splitlines()[0].split() == ["TYPE", "VERSION", "OWNER", "BY", "DESCRIPTION"]
    assert "order.created" in table and "team-orders" in table
    assert "endpoint.disabled" in table and "portico" in table
    listed = json.loads(ok(portico(config_path, "events", "types", "--json")).stdout)
    by_name = {item["name"]: item for item in listed}
    assert by_name["order.created"]["schema"]["required"] == ["order_id"]
    catalog = json.loads(ok(portico(config_path, "catalog", "event-types", "--json")).stdout)
    assert [item["name"] for item in catalog] == sorted(by_name)


def test_a_created_endpoints_secret_is_printed_once_and_signs_its_deliveries(
    config_path: Path, receiver: Receiver
) -> None:
    endpoint_id, secret = create(config_path, "/signed", receiver, "--type", "order.*")
    assert secret.startswith("whsec_") and endpoint_id.startswith("ep_")
    shown = ok(portico(config_path, "webhooks", "endpoints", "show", endpoint_id, "--json"))
    listed = ok(portico(config_path, "webhooks", "endpoints", "list"))
    listed_json = ok(portico(config_path, "webhooks", "endpoints", "list", "--json"))
    assert json.loads(shown.stdout)["types"] == ["order.*"]
    assert endpoint_id in listed.stdout
    published = ok(
        portico(config_path, "events", "publish", "order.created", "--data", '{"order_id": "o-1"}')
    )
    event_id = published.stdout.strip()
    assert event_id.startswith("msg_")
    deliver_until(config_path, lambda: len(receiver.at("/signed")) == 1)
    got = receiver.at("/signed")[0]
    assert got.id == event_id
    Webhook(secret).verify(got.body, got.headers)
    audit = json.dumps([[e.before, e.after, e.detail] for e in audit_entries(config_path)])
    for text in (shown.stdout, listed.stdout, listed_json.stdout, audit):
        assert secret not in text and secret.removeprefix("whsec_") not in text


def test_rotation_prints_the_new_secret_and_both_sign_during_the_overlap(
    config_path: Path, receiver: Receiver
) -> None:
    endpoint_id, old = create(config_path, "/rotated", receiver)
    rotated = ok(
        portico(
            config_path, "webhooks", "endpoints", "rotate-secret", endpoint_id, "--overlap", "1h"
        )
    )
    new = rotated.stdout.strip()
    assert new.startswith("whsec_") and new != old
    ok(portico(config_path, "events", "publish", "order.shipped"))
    deliver_until(config_path, lambda: len(receiver.at("/rotated")) == 1)
    got = receiver.at("/rotated")[0]
    for secret in (old, new):
        Webhook(secret).verify(got.body, got.headers)
    actions = [e.action for e in audit_entries(config_path)]
    assert "webhook_endpoint.rotate_secret" in actions
    assert new not in json.dumps([e.detail for e in audit_entries(config_path)])


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://169.254.169.254/latest", "cloud metadata"),
        ("https://10.1.2.3/hook", "private address"),
        ("gopher://example.com/", "must use"),
    ],
)
def test_an_endpoint_the_ssrf_rules_refuse_is_one_line_and_not_stored(
    config_path: Path, url: str, said: str
) -> None:
    refused = portico(
        config_path, "webhooks", "endpoints", "create", "--consumer", "acme/billing", "--url", url
    )
    line = the_error_line(refused)
    assert line.startswith(
        "portico webhooks endpoints create: error: the endpoint is refused: --url"
    )
    assert said in line
    assert url not in ok(portico(config_path, "webhooks", "endpoints", "list", "--json")).stdout


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ("--consumer", "nobody/here", "--url", "https://example.com"),
            "no consumer 'nobody/here'",
        ),
        (
            ("--consumer", "acme/billing", "--url", "https://e.com", "--type", "order.lost"),
            "--type",
        ),
        (("--consumer", "acme/billing", "--url", "https://e.com", "--filter", "{nope"), "not JSON"),
        (
            ("--consumer", "acme/billing", "--url", "https://e.com", "--filter", '{"a": {"x": 1}}'),
            "unknown operator",
        ),
        (("--consumer", "acme/billing", "--url", "https://e.com", "--ordering", "x"), "--ordering"),
    ],
)
def test_a_bad_creation_is_refused_in_one_line(
    config_path: Path, args: tuple[str, ...], said: str
) -> None:
    line = the_error_line(portico(config_path, "webhooks", "endpoints", "create", *args))
    assert said in line


def test_the_files_endpoint_changes_only_in_the_file(config_path: Path, receiver: Receiver) -> None:
    # The file's endpoints reach the store when a serving process syncs them.
    events, database = events_of(config_path)  # before any command made the file
    try:
        events.sync_config()
    finally:
        database.dispose()
    for args in (
        ("endpoints", "update", "ep_cfg_audit", "--description", "x"),
        ("endpoints", "delete", "ep_cfg_audit"),
        ("endpoints", "rotate-secret", "ep_cfg_audit"),
    ):
        line = the_error_line(portico(config_path, "webhooks", *args))
        assert "declared in the config (events.endpoints.audit)" in line
    ok(portico(config_path, "webhooks", "endpoints", "disable", "ep_cfg_audit"))
    shown = json.loads(
        ok(portico(config_path, "webhooks", "endpoints", "show", "ep_cfg_audit", "--json")).stdout
    )
    assert shown["disabled"] is True and shown["disabled_reason"] == "disabled by an operator"


def test_publishing_checks_the_schema_and_an_idempotency_key(config_path: Path) -> None:
    unknown = the_error_line(portico(config_path, "events", "publish", "order.lost"))
    assert "no event type 'order.lost'" in unknown
    invalid = the_error_line(
        portico(config_path, "events", "publish", "order.created", "--data", '{"order_id": 1}')
    )
    assert "/data/order_id" in invalid
    tenant = the_error_line(
        portico(config_path, "events", "publish", "order.shipped", "--tenant", "nobody")
    )
    assert "no tenant 'nobody'" in tenant
    first = ok(
        portico(config_path, "events", "publish", "order.shipped", "--idempotency-key", "k1")
    )
    again = ok(
        portico(config_path, "events", "publish", "order.shipped", "--idempotency-key", "k1")
    )
    assert first.stdout == again.stdout
    assert "used before" in again.stderr


def test_dead_deliveries_are_listed_and_redelivered_by_id_and_by_range(
    config_path: Path, receiver: Receiver
) -> None:
    receiver.behaviours["/dead"].status = 500
    endpoint_id, _ = create(config_path, "/dead", receiver, "--type", "order.created")
    started = time.time()
    for n in range(3):
        ok(
            portico(
                config_path,
                "events",
                "publish",
                "order.created",
                "--data",
                f'{{"order_id": "o{n}"}}',
            )
        )
    deliver_until(config_path, lambda: len(dead(config_path, endpoint_id)) == 3)
    table = ok(portico(config_path, "webhooks", "deliveries", "list", "--dead")).stdout
    assert table.count(" dead ") == 3 and " 500 " in table
    first = dead(config_path, endpoint_id)[-1]
    detail = ok(portico(config_path, "webhooks", "deliveries", "show", str(first["id"])))
    assert "attempt 2:" in detail.stdout and "500" in detail.stdout

    receiver.behaviours["/dead"].status = 200
    ok(portico(config_path, "webhooks", "redeliver", str(first["id"])))
    deliver_until(config_path, lambda: len(dead(config_path, endpoint_id)) == 2)
    again = the_error_line(portico(config_path, "webhooks", "redeliver", str(first["id"])))
    assert f"delivery {first['id']} is succeeded" in again

    backwards = the_error_line(
        portico(
            config_path,
            "webhooks",
            "redeliver",
            "--endpoint",
            endpoint_id,
            "--since",
            "2030-01-01T00:00:00Z",
            "--until",
            "2029-01-01T00:00:00Z",
        )
    )
    assert "--until must be later than --since" in backwards
    partial = the_error_line(
        portico(config_path, "webhooks", "redeliver", "--endpoint", endpoint_id)
    )
    assert "needs --endpoint, --since and --until" in partial
    both = the_error_line(
        portico(config_path, "webhooks", "redeliver", "1", "--endpoint", endpoint_id)
    )
    assert "not both" in both
    bulk = ok(
        portico(
            config_path,
            "webhooks",
            "redeliver",
            "--endpoint",
            endpoint_id,
            "--since",
            str(int(started) - 1),
            "--until",
            "2100-01-01T00:00:00Z",
        )
    )
    assert "Redelivering 2 deliveries" in bulk.stderr
    deliver_until(config_path, lambda: dead(config_path, endpoint_id) == [])
    assert len({r.id for r in receiver.at("/dead")}) == 3
    actions = [e.action for e in audit_entries(config_path)]
    assert actions.count("webhook_delivery.redeliver") == 1
    assert actions.count("webhook_endpoint.redeliver") == 1


def test_a_disabled_endpoint_and_a_deleted_one(config_path: Path, receiver: Receiver) -> None:
    endpoint_id, _ = create(config_path, "/gone", receiver)
    ok(portico(config_path, "webhooks", "endpoints", "disable", endpoint_id))
    again = ok(portico(config_path, "webhooks", "endpoints", "disable", endpoint_id))
    assert "already disabled" in again.stderr
    ok(portico(config_path, "webhooks", "endpoints", "enable", endpoint_id))
    changed = ok(
        portico(
            config_path,
            "webhooks",
            "endpoints",
            "update",
            endpoint_id,
            "--ordering",
            "data.order_id",
            "--rate-limit",
            "5",
            "--json",
        )
    )
    assert json.loads(changed.stdout)["ordering"] == {"key": "data.order_id"}
    ok(portico(config_path, "webhooks", "endpoints", "delete", endpoint_id))
    missing = the_error_line(portico(config_path, "webhooks", "endpoints", "show", endpoint_id))
    assert f"no webhook endpoint {endpoint_id}" in missing
    actions = [e.action for e in audit_entries(config_path) if e.target == endpoint_id]
    assert actions == [
        "webhook_endpoint.create",
        "webhook_endpoint.disable",
        "webhook_endpoint.enable",
        "webhook_endpoint.update",
        "webhook_endpoint.delete",
    ]
