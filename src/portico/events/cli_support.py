"""What the ``portico events`` and ``portico webhooks`` commands share: the config and the
store they work on, the audit log's author, argument parsing, and how they print. The commands
call them through the module (``support.config(args)``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from portico.identity.cli import CommandError

# The store, the catalog and the SSRF guard are imported by the commands: registering them runs
# on every `portico`, and `portico --help` must not pay for them.
if TYPE_CHECKING:
    from portico.config.model import PorticoConfig
    from portico.events.endpoints import Endpoint
    from portico.events.service import Events
    from portico.store.repositories import AuditLog, Author


_ID_HELP = "the id `portico webhooks endpoints list` shows"
STATUSES = ("pending", "succeeded", "dead", "cancelled")
DISABLED_BY_OPERATOR = "disabled by an operator"
DISABLED_IN_CONFIG = "disabled in the config"


def config(args: argparse.Namespace) -> PorticoConfig:
    config: PorticoConfig = args.load_config(args.config)
    return config


@contextmanager
def events(config: PorticoConfig) -> Iterator[Events]:
    from portico.events.service import Events
    from portico.store.database import Database
    from portico.store.secrets import current_store_secrets

    # As `portico keys`: SQLite migrated in place, PostgreSQL must be current.
    secrets = current_store_secrets(config.database.url, config.database.secrets_key_file)
    database = Database(config.database.url)
    try:
        yield Events(database, secrets, lambda: config)
    finally:
        database.dispose()


def audit(events: Events) -> AuditLog:
    from portico.store.repositories import AuditLog

    return AuditLog(events.database)


def endpoint(events: Events, endpoint_id: str) -> Endpoint:
    from portico.events.endpoints import UnknownEndpoint

    try:
        return events.endpoints.get(endpoint_id)
    except UnknownEndpoint:
        raise CommandError(
            f"no webhook endpoint {endpoint_id} (portico webhooks endpoints list)"
        ) from None


def refuse_from_file(endpoint: Endpoint, what: str) -> None:
    from portico.events.endpoints import CONFIG_PREFIX

    if endpoint.source == "config" or endpoint.id.startswith(CONFIG_PREFIX):
        name = endpoint.id.removeprefix(CONFIG_PREFIX)
        raise CommandError(
            f"webhook endpoint {endpoint.id} is declared in the config "
            f"(events.endpoints.{name}): {what} it there"
        )


def check(
    events: Events, url: str | None, types: Sequence[str] | None, filter: dict[str, Any] | None
) -> None:
    from portico.events.registration import EndpointRefused, check_endpoint

    try:
        check_endpoint(events.destinations(), events.catalog(), url=url, types=types, filter=filter)
    except EndpointRefused as exc:
        flags = {"/url": "--url", "/types": "--type", "/filter": "--filter"}
        parts = []
        for refusal in exc.refusals:
            flag = next((f for p, f in flags.items() if refusal.pointer.startswith(p)), "")
            parts.append(f"{flag} {refusal.message}".strip())
        raise CommandError("the endpoint is refused: " + "; ".join(parts)) from None


def consumer(config: PorticoConfig, name: str) -> str:
    tenant_name, sep, consumer = name.partition("/")
    tenant = config.tenants.get(tenant_name)
    if sep and tenant is not None and consumer in tenant.consumers:
        return name
    known = [f"{t}/{c}" for t, spec in config.tenants.items() for c in spec.consumers]
    raise CommandError(
        f"no consumer {name!r} under tenants: in the config (known: {', '.join(known) or 'none'})"
    )


def ordering(key: str | None) -> str | None:
    import re

    if key is None:
        return None
    if not re.fullmatch(r"endpoint|data(\.[A-Za-z0-9_-]+)+", key):
        raise CommandError(f"--ordering {key!r}: endpoint, or a field of the data (data.order_id)")
    return key


def positive(flag: str, value: float | None) -> Any:
    if value is not None and value <= 0:
        raise CommandError(f"{flag} must be more than 0")
    return value


def json_argument(where: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CommandError(f"{where} is not JSON: {exc}") from None


def json_object(flag: str, text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    value = json_argument(flag, text)
    if not isinstance(value, dict):
        raise CommandError(f"{flag} is a JSON object of field paths to conditions")
    return value


def time_range(since_text: str | None, until_text: str | None) -> tuple[float | None, float | None]:
    from portico.events.moments import InvalidMoment, parse_moment

    try:
        since = None if since_text is None else parse_moment(since_text)
        until = None if until_text is None else parse_moment(until_text)
    except InvalidMoment as exc:
        raise CommandError(str(exc)) from None
    if since is not None and until is not None and since >= until:
        raise CommandError("--until must be later than --since")
    return since, until


def describe(endpoint: Endpoint) -> dict[str, Any]:
    return {**endpoint.describe(), "tenant": endpoint.tenant}


def print_endpoint(endpoint: Endpoint, as_json: bool) -> None:
    shown = describe(endpoint)
    if as_json:
        print(json.dumps(shown, indent=2))
        return
    for key, value in shown.items():
        if isinstance(value, dict | list):
            value = json.dumps(value)
        print(f"{key + ':':<16} {'' if value is None else value}")


def table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        cells = zip(row, widths, strict=True)
        print("  ".join(str(cell).ljust(width) for cell, width in cells).rstrip())


def short(value: str | None) -> str:
    if value is None:
        return ""
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def actor() -> str:
    from portico.store.repositories import command_line_actor

    return command_line_actor()


def author() -> Author:
    from portico.store.repositories import Author

    return Author(actor())


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
