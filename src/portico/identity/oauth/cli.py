"""``portico oauth``: the authorization server's signing keys.

``portico oauth rotate-key`` makes a new key (of ``identity.oauth.signing_algorithm``) the
signing key. Running gateways see it within a second and sign new tokens with it; the previous
key stays in the JWKS, and keeps verifying the tokens it signed, until the last of them has
expired, then drops out. With ``--drop-old-keys`` the previous keys drop out at once, and with
them every token they signed: the answer to a leaked key.
``portico oauth keys`` lists the keys still published.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from portico.identity.cli import CommandError

if TYPE_CHECKING:
    from portico.config.model import PorticoConfig
    from portico.identity.oauth.keys import SigningKey
    from portico.store.secrets import Secrets

# The store (SQLAlchemy, Alembic) is imported inside the commands: registering them runs on
# every `portico` invocation, and `portico --help` should not pay for a database layer. Errors
# (a refused config, an unreachable database) go up to the `portico` command, which prints them in
# one line.


def _load(args: argparse.Namespace) -> PorticoConfig:
    config: PorticoConfig = args.load_config(args.config)
    return config


def _current_store(config: PorticoConfig) -> Secrets:
    from portico.store.secrets import current_store_secrets

    return current_store_secrets(config.database.url, config.database.secrets_key_file)


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def cmd_rotate_key(args: argparse.Namespace) -> int:
    config = _load(args)
    settings = config.identity.oauth
    if settings is None:
        raise CommandError(
            f"{args.config} has no identity.oauth section: Portico is not an authorization "
            "server there (docs/auth-oauth.md)"
        )
    from portico.identity.oauth.repository import SigningKeys
    from portico.identity.oauth.state import retired_key_lifetime
    from portico.store.database import Database

    secrets = _current_store(config)
    with Database(config.database.url) as database:
        lifetime = timedelta(0) if args.drop_old_keys else retired_key_lifetime(settings)
        rotation = SigningKeys(database, secrets).rotate(settings.signing_algorithm, lifetime)
    assert rotation is not None
    created = rotation.created
    print(f"new signing key {created.kid} ({created.algorithm}) signs new tokens from now on")
    if args.drop_old_keys:
        for old in rotation.retired:
            print(f"dropped key {old.kid}: the tokens it signed are no longer accepted")
        return 0
    for old in rotation.retired:
        print(
            f"retired key {old.kid}: verifies its tokens and stays in the JWKS until "
            f"{_when(old.expires_at)}"
        )
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    config = _load(args)
    from portico.identity.oauth.repository import SigningKeys
    from portico.store.database import Database

    secrets = _current_store(config)
    with Database(config.database.url) as database:
        keys = SigningKeys(database, secrets).published()
    now = datetime.now(UTC)
    rows = [("kid", "algorithm", "state", "activated", "published until")]
    for key in sorted(keys, key=lambda k: k.activated_at, reverse=True):
        rows.append(
            (
                key.kid,
                key.algorithm,
                _state(key, now),
                _when(key.activated_at),
                _when(key.expires_at),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def _state(key: SigningKey, now: datetime) -> str:
    if key.signs_at(now):
        return "signing"
    return "pending" if key.activated_at > now else "retired"


_CONFIG_HELP = "the config file: identity.oauth and database.url (default: portico.yaml)"


def register(subparsers: Any, load_config: Callable[[str], PorticoConfig]) -> None:
    """Add ``portico oauth ...`` to the ``portico`` command's subparsers; ``load_config`` reads the
    config with every capability's checks (the composition root's)."""
    oauth = subparsers.add_parser(
        "oauth",
        help="the OAuth 2.0 authorization server's signing keys",
        description="The signing keys of Portico's OAuth 2.0 authorization server.",
    )
    commands = oauth.add_subparsers(dest="oauth_command", required=True, metavar="COMMAND")

    rotate = commands.add_parser(
        "rotate-key",
        help="make a new signing key; retire the current",
        description="Make a new signing key; the current one keeps verifying its tokens until "
        "they expire.",
    )
    rotate.add_argument("-c", "--config", default="portico.yaml", metavar="FILE", help=_CONFIG_HELP)
    rotate.add_argument(
        "--drop-old-keys",
        action="store_true",
        help="unpublish the previous keys at once: their tokens stop working (a key leaked)",
    )
    rotate.set_defaults(func=cmd_rotate_key, load_config=load_config)

    keys = commands.add_parser(
        "keys",
        help="list the published signing keys",
        description="List the signing keys published in the JWKS.",
    )
    keys.add_argument("-c", "--config", default="portico.yaml", metavar="FILE", help=_CONFIG_HELP)
    keys.set_defaults(func=cmd_keys, load_config=load_config)
