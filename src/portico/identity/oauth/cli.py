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
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from portico.config.errors import ConfigError

if TYPE_CHECKING:
    from portico.config.model import PorticoConfig
    from portico.identity.oauth.keys import SigningKey

# The store (SQLAlchemy, Alembic) is imported inside the commands: registering them runs on
# every `portico` invocation, and `portico --help` should not pay for a database layer.


def _load(args: argparse.Namespace) -> PorticoConfig | None:
    try:
        config: PorticoConfig = args.load_config(args.config)
        return config
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def cmd_rotate_key(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return 1
    settings = config.identity.oauth
    if settings is None:
        print(f"{args.config}: identity.oauth is not configured", file=sys.stderr)
        return 1
    from portico.identity.oauth.repository import SigningKeys
    from portico.identity.oauth.state import retired_key_lifetime
    from portico.store.database import Database, StoreError
    from portico.store.migrate import ensure_current

    try:
        ensure_current(config.database.url)
        with Database(config.database.url) as database:
            lifetime = timedelta(0) if args.drop_old_keys else retired_key_lifetime(settings)
            rotation = SigningKeys(database).rotate(settings.signing_algorithm, lifetime)
    except StoreError as exc:
        print(f"portico oauth rotate-key: {exc}", file=sys.stderr)
        return 1
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
    if config is None:
        return 1
    from portico.identity.oauth.repository import SigningKeys
    from portico.store.database import Database, StoreError
    from portico.store.migrate import ensure_current

    try:
        ensure_current(config.database.url)
        with Database(config.database.url) as database:
            keys = SigningKeys(database).published()
    except StoreError as exc:
        print(f"portico oauth keys: {exc}", file=sys.stderr)
        return 1
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


def register(subparsers: Any, load_config: Callable[[str], PorticoConfig]) -> None:
    """Add ``portico oauth ...`` to the ``portico`` command's subparsers; ``load_config`` reads the
    config with every capability's checks (the composition root's)."""
    oauth = subparsers.add_parser("oauth", help="the OAuth 2.0 authorization server's signing keys")
    commands = oauth.add_subparsers(dest="oauth_command", required=True)

    rotate = commands.add_parser("rotate-key", help="make a new signing key; retire the current")
    rotate.add_argument("-c", "--config", default="portico.yaml")
    rotate.add_argument(
        "--drop-old-keys",
        action="store_true",
        help="unpublish the previous keys at once: their tokens stop working (a key leaked)",
    )
    rotate.set_defaults(func=cmd_rotate_key, load_config=load_config)

    keys = commands.add_parser("keys", help="list the published signing keys")
    keys.add_argument("-c", "--config", default="portico.yaml")
    keys.set_defaults(func=cmd_keys, load_config=load_config)
