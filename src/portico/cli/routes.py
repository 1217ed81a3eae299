"""``portico routes from-openapi FILE``: routes for a config, one per operation of an OpenAPI
document (:mod:`portico.policies.validation.routes`), printed as YAML to paste under
``routes:``. The document is read and checked as ``portico check`` reads a service's
``openapi``; its problems are printed one a line."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def cmd_from_openapi(args: argparse.Namespace) -> int:
    import yaml

    from portico.policies.validation.document import DocumentError, load_document
    from portico.policies.validation.routes import routes_from_document

    try:
        document = load_document(args.file)
    except DocumentError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} error(s) in {args.file}", file=sys.stderr)
        return 1
    title = str((document.data.get("info") or {}).get("title") or "api")
    service = args.service or re.sub(r"[^A-Za-z0-9_.-]+", "-", title.lower()).strip("-") or "api"
    routes, notes = routes_from_document(document, service, args.prefix or "")
    print(f"# {len(routes)} routes from {args.file} (portico routes from-openapi).")
    print(f"# To validate requests against it, in services.{service}:")
    print(f"#   openapi: {args.file}")
    print("#   policies: [{type: validation}]")
    for note in notes:
        print(f"# note: {note}")
    print(yaml.safe_dump({"routes": routes}, sort_keys=False, allow_unicode=True), end="")
    return 0


def register(subparsers: Any) -> None:
    """Add ``routes`` and its subcommand to the ``portico`` command."""
    routes = subparsers.add_parser(
        "routes",
        help="make routes from an OpenAPI document",
        description="Make routes from an OpenAPI document.",
    )
    sub = routes.add_subparsers(dest="routes_command", required=True, metavar="COMMAND")
    found = sub.add_parser(
        "from-openapi",
        help="print routes YAML, one route per operation of an OpenAPI 3.0 or 3.1 document",
        description="Print routes YAML, one route per operation of an OpenAPI 3.0 or 3.1 "
        "document: named by operationId, its method and path, and an auth entry with the "
        "scopes of its security requirements.",
    )
    found.add_argument("file", type=Path, metavar="FILE", help="the OpenAPI document")
    found.add_argument(
        "--service",
        metavar="NAME",
        help="the service the routes go to (default: from the document's info.title)",
    )
    found.add_argument(
        "--prefix",
        metavar="/PATH",
        help="a path before the document's paths on the gateway, stripped on the way upstream",
    )
    found.set_defaults(func=cmd_from_openapi)
