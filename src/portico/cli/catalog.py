"""``portico catalog``: the API catalog of a config (docs/catalog.md).

- ``portico catalog list``: each service with its API, version, lifecycle, audience and owner;
- ``portico catalog event-types``: each event type with its version, owner and description
  (``--json``: and the JSON Schema of its data);
- ``portico catalog export --audience public``: the merged OpenAPI 3.1 document of what an
  audience sees (:mod:`portico.admin.catalog.openapi`), as YAML or JSON.

The catalog's modules are imported when a command runs: ``portico --help`` does not pay for
them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from portico.core.commands import config_option
from portico.core.errors import PorticoError

if TYPE_CHECKING:
    from portico.config.model import PorticoConfig

__all__ = ["register"]

AUDIENCES = ("public", "partner", "internal")


class ExportError(PorticoError):
    """An export that cannot be written as asked; the message says why."""


def _server_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a URL of the gateway such as https://api.example.com"
        )
    return value.rstrip("/")


def register(subparsers: Any, load_config: Callable[[Path], PorticoConfig]) -> None:
    """Add ``catalog list`` and ``catalog export`` to the ``portico`` command."""
    catalog = subparsers.add_parser(
        "catalog",
        help="list the services of the API catalog, or export an audience's OpenAPI document",
        description="The API catalog of a config: each service's owner, API, version, "
        "lifecycle and audience, and one merged OpenAPI 3.1 document per audience "
        "(docs/catalog.md).",
    )
    sub = catalog.add_subparsers(dest="catalog_command", required=True, metavar="COMMAND")

    listing = sub.add_parser(
        "list",
        help="each service: API, version, lifecycle, audience, owner",
        description="Each service of the config, with its API, version, lifecycle, audience "
        "and owner, one a line.",
    )
    config_option(listing)
    listing.add_argument("--json", action="store_true", help="a JSON list instead of a table")
    listing.set_defaults(func=lambda args: cmd_list(args, load_config))

    kinds = sub.add_parser(
        "event-types",
        help="each event type: version, owner, description (and its schema with --json)",
        description="The event types of the config's events section and Portico's own "
        "operational types, with their versions, owners and descriptions; --json adds the JSON "
        "Schema of each type's data.",
    )
    config_option(kinds)
    kinds.add_argument("--json", action="store_true", help="a JSON list instead of a table")
    kinds.set_defaults(func=lambda args: cmd_event_types(args, load_config))

    export = sub.add_parser(
        "export",
        help="print (or write) the merged OpenAPI 3.1 document an audience sees",
        description="The merged OpenAPI 3.1 document of every service an audience sees "
        "(public < partner < internal; design and retired services never): the gateway's "
        "paths, each operation's credentials and scopes, and the errors Portico answers.",
    )
    config_option(export)
    export.add_argument("--audience", required=True, choices=AUDIENCES, help="who it is for")
    export.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write it here instead of printing it"
    )
    export.add_argument(
        "--format",
        choices=("yaml", "json"),
        help="default: json for an --output ending in .json, else yaml",
    )
    export.add_argument(
        "--server",
        action="append",
        default=[],
        type=_server_url,
        metavar="URL",
        help="the gateway's URL as callers reach it (servers of the document); repeatable",
    )
    export.add_argument("--title", help="info.title of the document")
    export.set_defaults(func=lambda args: cmd_export(args, load_config))


def cmd_list(args: argparse.Namespace, load_config: Callable[[Path], PorticoConfig]) -> int:
    config = load_config(args.config)
    rows = [
        {
            "service": name,
            "api": service.api or name,
            "version": service.version,
            "lifecycle": service.lifecycle.state,
            "audience": service.audience,
            "owner": service.owner,
            "tags": list(service.tags),
        }
        for name, service in sorted(config.services.items())
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    columns = ("service", "api", "version", "lifecycle", "audience", "owner")
    cells = [[str(row[c] if row[c] is not None else "-") for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    for line in [list(columns), *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    return 0


def cmd_event_types(args: argparse.Namespace, load_config: Callable[[Path], PorticoConfig]) -> int:
    config = load_config(args.config)
    from portico.admin.catalog.events import event_types

    entries = event_types(config)
    if args.json:
        print(json.dumps([entry.describe() for entry in entries], indent=2))
        return 0
    columns = ("type", "version", "owner", "description")
    cells = [[e.name, e.version, e.owner or "-", e.description] for e in entries]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    for line in [list(columns), *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    return 0


def cmd_export(args: argparse.Namespace, load_config: Callable[[Path], PorticoConfig]) -> int:
    config = load_config(args.config)
    from portico.admin.catalog.openapi import exported_services, merged_document

    document = merged_document(config, args.audience, title=args.title, servers=args.server)
    kind = args.format or (
        "json" if args.output is not None and args.output.suffix == ".json" else "yaml"
    )
    text = _dump(document, kind)
    services = exported_services(config, args.audience)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ExportError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    operations = sum(
        1 for item in document["paths"].values() for key in item if not key.startswith("x-")
    )
    print(
        f"{args.output}: {operations} operations of {len(services)} "
        f"service{'' if len(services) == 1 else 's'} "
        f"({', '.join(services) or 'none'}) for {args.audience} callers",
        file=sys.stderr,
    )
    return 0


def _dump(document: dict[str, Any], kind: str) -> str:
    if kind == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    import yaml

    return str(yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100))
