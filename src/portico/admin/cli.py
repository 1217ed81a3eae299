"""``portico admin tokens``: create, list and revoke the tokens of the admin API.

The token is printed once, alone on standard output (``TOKEN=$(portico admin tokens create
...)`` works); everything else goes to standard error. Only its SHA-256 is stored. Creating and
revoking a token are recorded in the audit log (by the token's id, never the token). A revoked or
expired token is refused by the admin API at its next request: tokens are checked against the
store on every request, not kept in memory.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portico.core.commands import subcommand
from portico.identity.cli import CommandError, parse_duration

# The store is imported by the commands, not here: registering them runs on every `portico`.
if TYPE_CHECKING:
    from portico.admin.tokens import AdminToken
    from portico.config.model import PorticoConfig
    from portico.store.database import Database

__all__ = ["register"]

_READS = "its tenants and database.url"

ROLES = ("viewer", "operator", "admin")


def _actor() -> str:
    from portico.store.repositories import command_line_actor

    return command_line_actor()


def register(subparsers: Any, load_config: Callable[[Path], PorticoConfig]) -> None:
    """Add ``portico admin`` and its subcommands; ``load_config`` reads the config with every
    capability's checks (the composition root's)."""
    admin = subparsers.add_parser(
        "admin",
        help="the admin API's tokens",
        description="The admin API's tokens (docs/admin-api.md).",
    )
    sub = admin.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")
    tokens = sub.add_parser(
        "tokens",
        help="create, list and revoke admin tokens",
        description="Create, list and revoke the tokens of the admin API, kept in the database.",
    )
    commands = tokens.add_subparsers(dest="tokens_command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> Any:
        return subcommand(commands, name, help_text, func, reads=_READS, load_config=load_config)

    create = command("create", "create an admin token and print it once", cmd_create)
    create.add_argument(
        "--role",
        required=True,
        choices=ROLES,
        help="viewer reads; operator also manages API keys; admin also rotates signing keys",
    )
    create.add_argument(
        "--tenant",
        metavar="TENANT",
        help="scope the token to this tenant: it sees only that tenant and its consumers",
    )
    create.add_argument(
        "--expires",
        type=parse_duration,
        metavar="DURATION",
        help="lifetime with its unit, for example 30d, 12h or 90s (default: no expiry)",
    )
    create.add_argument(
        "--description", metavar="TEXT", help="who or what the token is for, shown by list"
    )

    command("list", "list the admin tokens (never the tokens themselves)", cmd_list)

    revoke = command("revoke", "make an admin token stop working now", cmd_revoke)
    revoke.add_argument(
        "token_id", metavar="TOKEN_ID", help="the id `portico admin tokens list` shows"
    )


def cmd_create(args: argparse.Namespace) -> int:
    from portico.admin.roles import Role
    from portico.admin.tokens import AdminTokens, generate_token
    from portico.store.repositories import AuditLog, Author

    config = _config(args)
    if args.tenant is not None and args.tenant not in config.tenants:
        known = ", ".join(config.tenants) or "none"
        raise CommandError(
            f"no tenant {args.tenant!r} under tenants: in the config (known: {known})"
        )
    now = datetime.now(UTC)
    expires_at = now + args.expires if args.expires is not None else None
    new = generate_token()
    role = Role(args.role)
    with _database(config) as database, database.write() as session:
        token = AdminTokens(session).add(
            new,
            role,
            tenant=args.tenant,
            description=args.description,
            created_by=_actor(),
            expires_at=expires_at,
            now=now,
        )
        AuditLog(session).record(
            Author(_actor()),
            "admin_token.create",
            token.id,
            tenant=token.tenant,
            after=_view(token, now),
        )
    scope = f" for tenant {args.tenant}" if args.tenant else ""
    until = f" until {_when(expires_at)}" if expires_at is not None else ""
    _say(f"Created admin token {token.id} ({role.value}{scope}){until}.")
    _say("This is the only time the token is shown; store it now:")
    print(new.token, flush=True)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from portico.admin.tokens import AdminTokens

    config = _config(args)
    now = datetime.now(UTC)
    with _database(config) as database:
        tokens = AdminTokens(database).list()
    if not tokens:
        _say("No admin tokens.")
        return 0
    headers = ["TOKEN ID", "ROLE", "TENANT", "STATUS", "CREATED", "EXPIRES", "DESCRIPTION"]
    rows = [
        [
            t.id,
            t.role.value,
            t.tenant or "*",
            t.status(now),
            _when(t.created_at),
            _when(t.expires_at),
            t.description or "",
        ]
        for t in tokens
    ]
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from portico.admin.tokens import AdminTokens
    from portico.store.repositories import AuditLog, Author

    config = _config(args)
    now = datetime.now(UTC)
    with _database(config) as database, database.write() as session:
        before = AdminTokens(session).get(args.token_id)
        token, changed = AdminTokens(session).revoke(args.token_id, now=now)
        if changed and before is not None:
            AuditLog(session).record(
                Author(_actor()),
                "admin_token.revoke",
                token.id,
                tenant=token.tenant,
                before=_view(before, now),
                after=_view(token, now),
            )
    if not changed:
        _say(f"Admin token {token.id} was already revoked at {_when(token.revoked_at)}.")
    else:
        _say(f"Revoked admin token {token.id}; the admin API refuses it from now on.")
    return 0


def _view(token: AdminToken, now: datetime) -> dict[str, Any]:
    """What the audit log records of a token: never the token, nor its hash."""
    return {
        "id": token.id,
        "role": token.role.value,
        "tenant": token.tenant,
        "status": token.status(now),
        "expires_at": _when(token.expires_at) or None,
    }


def _config(args: argparse.Namespace) -> PorticoConfig:
    config: PorticoConfig = args.load_config(args.config)
    return config


def _database(config: PorticoConfig) -> Database:
    from portico.store.database import Database
    from portico.store.migrate import ensure_current

    ensure_current(config.database.url)
    return Database(config.database.url)


def _when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
