"""``portico keys``: create, list, rotate and revoke API keys in the store.

The key itself is printed once, alone on standard output (so ``KEY=$(portico keys create ...)``
works); everything else goes to standard error. Every change bumps the identity change counter
and is appended to the audit log in the same transaction, so running gateways pick it up at
their next poll of the store (every 0.25 s), and the audit log names the key id (never the key).
A command that changes keys returns two polls after its commit: a script that creates a key and
uses it at once, or revokes one and expects it refused, finds the gateways already agreeing.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portico.core.commands import subcommand
from portico.core.errors import PorticoError

# The store and the config loader are imported by the commands, not here: `portico --help` and
# every other command should not pay for SQLAlchemy and Pydantic.
if TYPE_CHECKING:
    from portico.config.model import PorticoConfig
    from portico.store.database import Database
    from portico.store.repositories import Author

__all__ = ["parse_duration", "register"]

_READS = "its tenants and database.url"

# A number and its unit, nothing else: `--expires 3` once meant three seconds to the code and
# three days to the person who typed it. Written out rather than taken from a time-parsing library:
# those accept a bare number as seconds, or no days, and this is the whole grammar.
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class CommandError(PorticoError):
    """A problem the user can fix; printed in one line without a traceback."""


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``24h``, ``30d``, ``2w``: the unit is required."""
    match = _DURATION.match(text.strip())
    if match is None:
        why = "has no unit" if re.fullmatch(r"\d+(?:\.\d+)?", text.strip()) else "is not a duration"
        raise argparse.ArgumentTypeError(
            f"{text!r} {why}: write a number and a unit, such as 90s, 15m, 24h, 30d or 2w"
        )
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def register(subparsers: Any, load_config: Callable[[Path], PorticoConfig]) -> None:
    """Add ``keys`` and its subcommands to the ``portico`` command; ``load_config`` reads the
    config with every capability's checks (the composition root's)."""
    keys = subparsers.add_parser(
        "keys",
        help="create, list, rotate and revoke API keys",
        description="Create, list, rotate and revoke API keys kept in the database.",
    )
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> Any:
        return subcommand(sub, name, help_text, func, reads=_READS, load_config=load_config)

    create = command("create", "create an API key for a consumer and print it once", cmd_create)
    create.add_argument(
        "--consumer",
        required=True,
        metavar="TENANT/CONSUMER",
        help="whose key it is, as declared under tenants: in the config",
    )
    create.add_argument(
        "--expires",
        type=parse_duration,
        metavar="DURATION",
        help="lifetime with its unit, for example 30d, 12h or 90s (default: no expiry)",
    )

    listing = command("list", "list the API keys (never the keys themselves)", cmd_list)
    listing.add_argument("--consumer", metavar="TENANT/CONSUMER", help="only this consumer's keys")

    rotate = command(
        "rotate", "replace a key with a new one; both work during the overlap", cmd_rotate
    )
    rotate.add_argument("key_id", metavar="KEY_ID", help="the id `portico keys list` shows")
    rotate.add_argument(
        "--overlap",
        type=parse_duration,
        default=timedelta(hours=24),
        metavar="DURATION",
        help="how long the old key keeps working, with its unit (default: 24h)",
    )
    rotate.add_argument(
        "--expires",
        type=parse_duration,
        metavar="DURATION",
        help="lifetime of the new key, with its unit (default: the old key's lifetime)",
    )

    revoke = command("revoke", "make a key stop working in every gateway now", cmd_revoke)
    revoke.add_argument("key_id", metavar="KEY_ID", help="the id `portico keys list` shows")

    generate = sub.add_parser(
        "generate",
        help="print a new key and the api_keys entry that declares it in portico.yaml",
        description="Print a new key and its api_keys entry for portico.yaml; nothing is stored.",
    )
    generate.add_argument(
        "--expires",
        type=parse_duration,
        metavar="DURATION",
        help="lifetime with its unit, for example 30d, 12h or 90s (default: no expiry)",
    )
    generate.set_defaults(func=cmd_generate)


def cmd_create(args: argparse.Namespace) -> int:
    from portico.identity.key_changes import create_key

    config = _config(args)
    consumer = _consumer(config, args.consumer)
    now = datetime.now(UTC)
    expires_at = now + args.expires if args.expires is not None else None
    with _database(config) as database, database.write() as session:
        issued = create_key(session, consumer, _author(), expires_at=expires_at, now=now)
    _settle()
    _say(f"Created API key {issued.stored.id} for {consumer}{_until(expires_at)}.")
    _say("This is the only time the key is shown; store it now:")
    print(issued.key, flush=True)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from portico.identity.store import ApiKeys

    config = _config(args)
    consumer = _consumer(config, args.consumer) if args.consumer else None
    now = datetime.now(UTC)
    with _database(config) as database:
        stored = ApiKeys(database).list(consumer)
    rows = [
        [
            key.id,
            key.consumer,
            "database",
            key.status(now),
            _when(key.created_at),
            _when(key.valid_until),
            key.rotated_to or "",
        ]
        for key in stored
    ]
    for tenant_name, tenant in config.tenants.items():
        for name, declared in tenant.consumers.items():
            owner = f"{tenant_name}/{name}"
            if consumer is not None and owner != consumer:
                continue
            for ref in declared.api_keys:
                expired = ref.expires_at is not None and ref.expires_at <= now
                status = "expired" if expired else "active"
                rows.append([ref.id, owner, "config", status, "", _when(ref.expires_at), ""])
    headers = ["KEY ID", "CONSUMER", "SOURCE", "STATUS", "CREATED", "VALID UNTIL", "ROTATED TO"]
    if not rows:
        _say("No API keys.")
        return 0
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    from portico.identity.key_changes import rotate_key

    config = _config(args)
    _not_declared(config, args.key_id)
    with _database(config) as database, database.write() as session:
        old, issued = rotate_key(
            session, args.key_id, _author(), overlap=args.overlap, lifetime=args.expires
        )
    created = issued.stored
    _settle()
    _say(f"Rotated API key {old.id} of {old.consumer}: it keeps working{_until(old.valid_until)}.")
    _say(
        f"New API key {created.id}{_until(created.expires_at)}. This is the only time it is shown:"
    )
    print(issued.key, flush=True)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from portico.identity.key_changes import revoke_key

    config = _config(args)
    _not_declared(config, args.key_id)
    with _database(config) as database, database.write() as session:
        before, key = revoke_key(session, args.key_id, _author())
    if before.revoked_at is not None:
        _say(f"API key {key.id} was already revoked at {_when(before.revoked_at)}.")
    else:
        _settle()
        _say(f"Revoked API key {key.id} of {key.consumer}; running gateways refuse it now.")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from portico.identity.apikeys import generate_key

    new = generate_key()
    expires = ""
    if args.expires is not None:
        expires = f", expires_at: {_when(datetime.now(UTC) + args.expires)}"
    _say("A new API key; it is not stored anywhere. Give the key to the consumer and add the")
    _say("entry to tenants.<tenant>.consumers.<consumer>.api_keys in portico.yaml:")
    _say(f"  - {{id: {new.id}, sha256: {new.sha256}{expires}}}")
    print(new.key, flush=True)
    return 0


def _config(args: argparse.Namespace) -> PorticoConfig:
    config: PorticoConfig = args.load_config(args.config)
    return config


def _database(config: PorticoConfig) -> Database:
    from portico.store.database import Database
    from portico.store.secrets import current_store_secrets

    # SQLite is migrated in place, PostgreSQL must be current: the rules of `portico serve`
    # (a migration may seal what was stored in plain text before, with the config's keys).
    current_store_secrets(config.database.url, config.database.secrets_key_file)
    return Database(config.database.url)


def _consumer(config: PorticoConfig, name: str) -> str:
    tenant_name, sep, consumer = name.partition("/")
    tenant = config.tenants.get(tenant_name)
    if sep and tenant is not None and consumer in tenant.consumers:
        return name
    known = [f"{t}/{c}" for t, spec in config.tenants.items() for c in spec.consumers]
    listed = ", ".join(known) if known else "none"
    raise CommandError(f"no consumer {name!r} under tenants: in the config (known: {listed})")


def _not_declared(config: PorticoConfig, key_id: str) -> None:
    for tenant_name, tenant in config.tenants.items():
        for name, consumer in tenant.consumers.items():
            if any(ref.id == key_id for ref in consumer.api_keys):
                raise CommandError(
                    f"API key {key_id} is declared in the config (tenants.{tenant_name}."
                    f"consumers.{name}.api_keys): change it there"
                )


def _author() -> Author:
    from portico.store.repositories import Author, command_line_actor

    return Author(command_line_actor())


def _when(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _until(value: datetime | None) -> str:
    return f" until {_when(value)}" if value is not None else ""


def _settle() -> None:
    """Wait two polls of the running gateways (``IdentityState.watch``): a poll that started
    just before the commit missed it, the next one sees it."""
    import time

    from portico.identity.state import POLL_INTERVAL

    time.sleep(2 * POLL_INTERVAL)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
