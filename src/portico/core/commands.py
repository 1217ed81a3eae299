"""What the ``portico`` subcommands share in their argument parsers: the ``-c/--config`` option
and a subcommand that reads the config file."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["config_option", "subcommand"]


def config_option(parser: argparse.ArgumentParser, reads: str | None = None) -> None:
    """``-c/--config FILE`` (``portico.yaml`` by default); ``reads``: what the command reads of
    the file, for its help (``"its tenants and database.url"``)."""
    what = f"the config file: {reads}" if reads else "the config file"
    parser.add_argument(
        "-c",
        "--config",
        default="portico.yaml",
        type=Path,
        metavar="FILE",
        help=f"{what} (default: portico.yaml)",
    )


def subcommand(
    subparsers: Any,
    name: str,
    help_text: str,
    func: Callable[[argparse.Namespace], int],
    *,
    reads: str | None = None,
    **defaults: Any,
) -> argparse.ArgumentParser:
    """A subcommand with ``-c/--config``: ``help_text`` is its line in the list and, as a
    sentence, its description; ``defaults`` are set on its namespace beside ``func``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help_text, description=help_text[0].upper() + help_text[1:] + "."
    )
    config_option(parser, reads)
    parser.set_defaults(func=func, **defaults)
    return parser
