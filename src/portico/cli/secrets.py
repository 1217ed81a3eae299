"""``portico secrets``: the key that seals the secrets Portico stores (docs/secrets.md).

- ``generate-key`` prints a new key, or puts it first in a key file (``--file``);
- ``status`` shows which keys seal how many stored secrets, and which are configured;
- ``rotate-key`` seals every stored secret again with the newest configured key, in short
  transactions beside serving gateways, and writes one audit entry.

Rotating is: a new key first in the key file (or ``PORTICO_SECRETS_KEY``), the old ones after
it; processes reading a key file see it within their next use of it (restart those given the
environment); then ``rotate-key``; then, once ``status`` shows the old keys seal nothing, they
may go.

The store and the cryptography are imported by the commands, not here: ``portico --help`` must
not pay for them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portico.core.errors import PorticoError

if TYPE_CHECKING:
    from portico.config.model import PorticoConfig
    from portico.store.secrets import Secrets

__all__ = ["register"]

_CONFIG_HELP = "the config file: database.url and database.secrets_key_file (default: portico.yaml)"


class SecretsCommandError(PorticoError):
    """A ``portico secrets`` command cannot do what it was asked; the message says why."""


def register(subparsers: Any, load_config: Callable[[Path], PorticoConfig]) -> None:
    """Add ``secrets`` and its commands to the ``portico`` command."""
    secrets = subparsers.add_parser(
        "secrets",
        help="the key that encrypts the secrets Portico stores: status, rotation",
        description="The key that encrypts the secrets Portico stores, such as the OAuth "
        "server's signing keys (docs/secrets.md).",
    )
    sub = secrets.add_subparsers(dest="secrets_command", required=True, metavar="COMMAND")

    status = sub.add_parser(
        "status",
        help="show which keys seal how many stored secrets",
        description="Show the key ids of the stored secrets, how many each key seals, and "
        "which keys are configured. Exits 1 when a stored secret has no configured key.",
    )
    status.add_argument(
        "-c", "--config", default="portico.yaml", type=Path, metavar="FILE", help=_CONFIG_HELP
    )
    status.set_defaults(func=cmd_status, load_config=load_config)

    rotate = sub.add_parser(
        "rotate-key",
        help="seal every stored secret again with the newest configured key",
        description="Seal every stored secret again with the newest configured key (the first "
        "of the key file or of PORTICO_SECRETS_KEY), while gateways serve. Every process must "
        "have the newest key before: see docs/secrets.md#rotating-the-key.",
    )
    rotate.add_argument(
        "-c", "--config", default="portico.yaml", type=Path, metavar="FILE", help=_CONFIG_HELP
    )
    rotate.set_defaults(func=cmd_rotate_key, load_config=load_config)

    generate = sub.add_parser(
        "generate-key",
        help="print a new secrets key, or put one first in a key file",
        description="Print a new secrets key (32 random bytes in base64) on standard output; "
        "with --file, put it first in that key file instead, keeping the keys already there "
        "(the file is made, readable by its owner only, if it does not exist).",
    )
    generate.add_argument(
        "--file",
        type=Path,
        metavar="FILE",
        help="the key file to add the new key to (database.secrets_key_file, or the "
        "<database>-secrets.key beside a SQLite database)",
    )
    generate.set_defaults(func=cmd_generate_key)


def cmd_generate_key(args: argparse.Namespace) -> int:
    from portico.store.secrets.keys import generate_key_text, parse_key
    from portico.store.secrets.sources import add_key

    key = generate_key_text()
    key_id = parse_key(key).id
    if args.file is None:
        _say(
            f"A new secrets key, id {key_id}. Put it first in PORTICO_SECRETS_KEY (old keys "
            "after it, comma-separated) or in the key file, then run `portico secrets "
            "rotate-key` (docs/secrets.md):"
        )
        print(key, flush=True)
        return 0
    keys = add_key(args.file, key)
    others = ", ".join(keys.ids[1:]) or "none"
    _say(
        f"Added key {key_id} first in {args.file}: it seals new secrets from now on; the keys "
        f"after it still open theirs ({others}). Processes reading the file see it at their "
        "next use of it. Then run `portico secrets rotate-key`."
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from portico.store.database import Database
    from portico.store.secrets.stored import StoredSecrets, sealed_columns

    config: PorticoConfig = args.load_config(args.config)
    secrets = _current_store(config)
    with Database(config.database.url) as database:
        found = StoredSecrets(database).inventory()
    keys = secrets.configured()
    configured = keys.ids if keys is not None else ()
    by_key = found.by_key()
    rows = [("KEY ID", "CONFIGURED", "SECRETS")]
    for position, key_id in enumerate(configured):
        role = "yes, seals new secrets" if position == 0 else "yes, opens only"
        rows.append((key_id, role, str(by_key.get(key_id, 0))))
    for stored_id, count in by_key.items():
        if stored_id not in configured:
            rows.append((stored_id or "(not sealed)", "NO", str(count)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    per_column = {
        column.name: sum(counts.get(column.name, 0) for counts in found.counts.values())
        for column in sealed_columns()
    }
    what = ", ".join(
        f"{column.protects} ({column.name}): {per_column[column.name]}"
        for column in sealed_columns()
    )
    unopenable = found.unopenable(secrets)
    if unopenable:
        count = sum(unopenable.values())
        raise SecretsCommandError(
            f"{count} stored secret(s) have no configured key ({secrets.origin}; the table "
            "shows which): Portico refuses to start so; configure the key that sealed them "
            "(docs/secrets.md)"
        )
    if keys is None:
        _say(f"No secrets key is configured yet: {secrets.origin}. Stored secrets: {what}.")
    else:
        _say(f"Keys from {secrets.origin}. Stored secrets: {what}.")
    return 0


def cmd_rotate_key(args: argparse.Namespace) -> int:
    from portico.store.database import Database
    from portico.store.repositories import AuditLog, command_line_actor
    from portico.store.secrets.stored import StoredSecrets

    config: PorticoConfig = args.load_config(args.config)
    secrets = _current_store(config)
    with Database(config.database.url) as database:
        stored = StoredSecrets(database)
        found = stored.check_openable(secrets)
        if found.total == 0:
            _say("No secrets are stored: nothing to seal again.")
            return 0
        done = stored.reseal(secrets)
        if done.total == 0:
            _say(f"Every stored secret ({found.total}) is sealed with key {done.key_id} already.")
            return 0
        AuditLog(database).append(
            command_line_actor(),
            "secrets.rotate_key",
            done.key_id,
            {"sealed_again": done.moved, "total": found.total, "keys_from": secrets.origin},
        )
    previous = ", ".join(f"{n} from key {key_id}" for key_id, n in done.moved.items())
    _say(
        f"Sealed {done.total} stored secret(s) again with key {done.key_id} ({previous}). Once "
        "no process needs them, the older keys can be removed (`portico secrets status`)."
    )
    return 0


def _current_store(config: PorticoConfig) -> Secrets:
    from portico.store.secrets import current_store_secrets

    return current_store_secrets(config.database.url, config.database.secrets_key_file)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
