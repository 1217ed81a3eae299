"""``portico diff``, ``apply`` and ``export``: the file and the store's state (docs/sync.md).

- ``diff`` shows what ``apply`` would change, entity by entity, coloured on a terminal (not with
  ``NO_COLOR``); it exits 0 when the store is the file's already, 1 when they differ, 2 when it
  cannot compare (as ``diff`` does).
- ``apply`` checks the file exactly as ``portico check`` does, then writes one state revision
  and one audit entry, and prints what changed.
- ``export`` writes the file's other sections and the store's entities as YAML that ``apply``
  takes back unchanged; ``${VAR}`` references stay references.

The store and the checks are imported when a command runs: registering them costs nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from portico.core.commands import config_option

__all__ = ["EXIT_TROUBLE", "register"]

EXIT_TROUBLE = 2
"""``portico diff``: the comparison could not be made (exit 1 means "they differ")."""
SETTLE = 0.5
"""Seconds ``apply`` waits after writing: two polls of the gateways (``serving``'s 0.25 s)."""


def register(subparsers: Any) -> None:
    def command(name: str, help_text: str, description: str, func: Any) -> Any:
        parser = subparsers.add_parser(
            name,
            help=help_text,
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        config_option(parser, "with entities.source: store")
        parser.add_argument(
            "file",
            nargs="?",
            type=Path,
            metavar="FILE",
            help="the config file, as -c gives it (portico diff portico.yaml)",
        )
        parser.set_defaults(func=lambda args: func(_with_file(parser, args)))
        return parser

    command(
        "diff",
        "show what `portico apply` would change in the store's state",
        "Show what `portico apply` would change in the store's state: each service, route, "
        "tenant and consumer added (+), removed (-) or changed (~, with each field's old and "
        "new value); secrets redacted. Exit status: 0 no change, 1 changes, 2 trouble.",
        cmd_diff,
    )
    command(
        "apply",
        "make the store's state the file's services, routes and tenants (one revision)",
        "Check the file as `portico check` does, then make the store's state its services, "
        "routes and tenants, atomically: one state revision, one audit entry. Edits made "
        "through the admin API since are replaced (`portico diff` shows them first).",
        cmd_apply,
    )
    export = command(
        "export",
        "write the store's state as a config file that `portico apply` takes back",
        "Write the config file's other sections and the store's services, routes and tenants "
        "as YAML that `portico apply` takes back unchanged. ${VAR} references are written as "
        "references, never their values.",
        cmd_export,
    )
    export.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write here (default: standard output)"
    )


def _with_file(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """The config file named either way: ``FILE`` or ``-c FILE`` (two different ones: an
    error)."""
    if args.file is not None:
        if args.config != Path("portico.yaml") and args.config != args.file:
            parser.error(f"two config files: {args.file} and -c {args.config}")
        args.config = args.file
    return args


def cmd_diff(args: argparse.Namespace) -> int:
    from portico.admin.sync import counted, describe_changes, diff_file, use_colour

    try:
        changes, latest = diff_file(args.config)
    except BaseException as exc:
        if isinstance(exc, SystemExit | KeyboardInterrupt):
            raise
        from portico.cli.failures import report

        debug = bool(getattr(args, "debug", False)) or getattr(args, "log_level", "") == "debug"
        report(exc, "portico diff", debug=debug)
        return EXIT_TROUBLE
    against = "an empty store" if latest is None else f"store revision {latest.id}"
    if not changes:
        print(f"no changes: {against} is {args.config}'s services, routes and tenants")
        return 0
    print(describe_changes(changes, colour=use_colour(sys.stdout)))
    print(f"{counted(changes)} ({args.config} against {against})")
    return 1


def cmd_apply(args: argparse.Namespace) -> int:
    from portico.admin.sync import apply_file, counted, describe_changes, use_colour

    applied = apply_file(args.config)
    if applied.revision is None:
        print(f"no changes: store revision {applied.parent} is already {args.config}'s")
        return 0
    if applied.changes:
        print(describe_changes(applied.changes, colour=use_colour(sys.stdout)))
    parent = "" if applied.parent is None else f", after revision {applied.parent}"
    print(f"applied: store revision {applied.revision.id}{parent} ({counted(applied.changes)})")
    # As `portico keys` does: the command returns once running gateways have polled the store
    # twice, so that what follows it (a test, a deploy step) finds every process serving it.
    time.sleep(SETTLE)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from portico.admin.sync import export_text

    text = export_text(args.config)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
