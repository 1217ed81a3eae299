"""The ``portico`` command.

Each command imports what it uses when it runs, not here: ``portico --help`` loads no Pydantic and
``portico check`` no SQLAlchemy, httpx or Alembic (tests/cli/test_conventions.py counts them).
A command that fails prints one line and exits non-zero (:mod:`portico.cli.failures`); the global
options (:data:`GLOBAL_OPTIONS`) are accepted before and after the command's name.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from portico.admin import cli as admin_cli
from portico.cli import cache as cache_cli
from portico.cli import catalog as catalog_cli
from portico.cli import routes as routes_cli
from portico.cli import secrets as secrets_cli
from portico.cli import sync as sync_cli
from portico.events import cli as events_cli
from portico.identity import cli as identity_cli
from portico.identity.oauth import cli as oauth_cli

if TYPE_CHECKING:
    from portico.config.model import PorticoConfig

__all__ = ["build_parser", "load_config", "main", "parse_listen", "parse_workers"]

DESCRIPTION = """\
Portico: a self-hosted API gateway and integration platform.

Start with `portico init` (a commented portico.yaml), check it with `portico check`, run it
with `portico serve`. `portico demo` runs a complete sample with its own backends.
Every key of portico.yaml is described in docs/configuration.md; every one-line failure and
its fix in docs/troubleshooting.md."""

EPILOG = """\
examples:
  portico init                          write a starter portico.yaml here
  portico check portico.yaml            list every error in the file, with its line
  portico serve --listen 0.0.0.0:8080   serve it on another address than gateway.listen
  portico keys create --consumer acme/billing --expires 30d
  portico serve --workers auto           one gateway process per core, supervised
  portico usage --consumer acme/billing  rate limits and quotas used, and what remains
  portico admin tokens create --role viewer  a token for the admin API, printed once
  portico diff -c portico.yaml           what `portico apply` would change in the store
  portico catalog export --audience public -o public.yaml  the OpenAPI document partners get
  portico serve --log-format json --log-level warning"""

DEFAULT_CONFIG = "portico.yaml"


def load_config(path: str | Path) -> PorticoConfig:
    """The config with every capability's checks: what ``check`` reports, ``serve`` refuses."""
    # Imported here: every capability comes with it, and `portico --help` should not pay for them.
    from portico.checking import load_config as load_checked

    return load_checked(path)


# -- the commands -----------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    from portico.checking import check_config_to_serve
    from portico.config.errors import ConfigError

    try:
        checked = check_config_to_serve(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        print(f"{len(exc.issues)} error(s) in {args.config}", file=sys.stderr)
        return 1
    for warning in checked.warnings:
        print(warning, file=sys.stderr)
    config = checked.config
    summary = f"{len(config.services)} services, {len(config.routes)} routes"
    if checked.warnings:
        summary += f"; {len(checked.warnings)} warning(s)"
    print(f"{args.config}: ok ({summary})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    if args.role == "worker":
        from portico.serving.delivery import serve_worker

        return serve_worker(Path(args.config), args.listen)
    from portico.supervisor.supervise import serve

    # Each gateway process of --workers logs as this command does.
    log_options = ["--log-level", _log_level(args), "--log-format", _global(args, "log_format")]
    return serve(Path(args.config), args.listen, args.workers, log_options)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from portico.store.migrate import db_upgrade_command
    from portico.store.secrets import open_secrets

    if args.url is not None:
        # No config: the secrets key comes from PORTICO_SECRETS_KEY, or the SQLite file's own.
        url, key_file = args.url, None
    else:
        settings = load_config(args.config).database
        url, key_file = settings.url, settings.secrets_key_file
    return db_upgrade_command(url, open_secrets(url, key_file))


def cmd_usage(args: argparse.Namespace) -> int:
    import asyncio

    from portico.policies.rate_limit.usage import usage_command

    return asyncio.run(usage_command(load_config(args.config), args.consumer, as_json=args.json))


def cmd_init(args: argparse.Namespace) -> int:
    from portico.cli.starter import write_starter

    write_starter(Path(args.path), force=args.force)
    print(f"wrote {args.path}; next: portico check {args.path} && portico serve -c {args.path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import signal

    # Until the demo's event loop takes over the signals, SIGTERM stops it as Ctrl-C does: quietly.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # Said before the imports, the longest step of a first start: without bytecode yet, Python
    # compiles every module it imports (seconds; at every start where PYTHONDONTWRITEBYTECODE is
    # set, docs/benchmarks.md "Bytecode").
    print(
        "portico demo: loading Portico and its libraries (a first start also compiles them to "
        "bytecode)",
        flush=True,
    )
    try:
        import uvloop

        from portico.demo.run import run_demo

        # uvloop, as for `portico serve`: the demo runs the gateway exactly as serve does.
        return uvloop.run(run_demo(Path(args.workdir), args.port))
    except KeyboardInterrupt:
        return 0


# -- arguments --------------------------------------------------------------------------------


def parse_workers(text: str) -> int | str:
    """``--workers``: a number of gateway processes, or ``auto`` (one per core)."""
    from portico.config.workers import parse_workers as parse

    try:
        return parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6, ``:8080`` for every interface) for ``--listen``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not HOST:PORT, for example 127.0.0.1:8080, 0.0.0.0:8080 or [::1]:8080"
        )
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port)


class _Version(argparse.Action):
    """``--version``: the package's version is looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> NoReturn:
        from importlib.metadata import version

        from portico import _native

        python = ".".join(str(part) for part in sys.version_info[:3])
        print(f"portico {version('portico')} (Python {python}, gateway code {_native.status()})")
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """Every command's parser has the global options, so they may follow the command's name
    (``portico serve --log-level debug``) as well as precede it. Their defaults are applied after
    parsing (:func:`_global`): a subcommand's parser would otherwise overwrite a value given
    before its name with its own default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        group = self.add_argument_group("global options")
        group.add_argument(
            "--log-level",
            choices=("debug", "info", "warning", "error"),
            default=argparse.SUPPRESS,
            help="the least severe log records shown (default: info); debug also shows the "
            "traceback of a failure",
        )
        group.add_argument(
            "--log-format",
            choices=("auto", "text", "json"),
            default=argparse.SUPPRESS,
            help="text for people, json (one object per line) for log collectors; auto "
            "(default): text when standard error is a terminal, else json",
        )
        group.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show debug logs and the traceback of a failure (same as --log-level debug)",
        )


GLOBAL_OPTIONS = {"log_level": "info", "log_format": "auto", "debug": False}


def _global(args: argparse.Namespace, name: str) -> Any:
    return getattr(args, name, GLOBAL_OPTIONS[name])


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="portico", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")

    def command(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> Any:
        found = sub.add_parser(
            name, help=help_text, description=help_text[0].upper() + help_text[1:] + "."
        )
        found.set_defaults(func=func)
        return found

    serve = command("serve", "run the gateway on a config file until Ctrl-C or SIGTERM", cmd_serve)
    serve.add_argument(
        "-c",
        "--config",
        default=DEFAULT_CONFIG,
        metavar="FILE",
        help=f"the config file (default: {DEFAULT_CONFIG}); edits are applied while serving",
    )
    serve.add_argument(
        "--listen",
        type=parse_listen,
        metavar="HOST:PORT",
        help="listen here instead of gateway.listen, e.g. 0.0.0.0:8080 or [::1]:8080",
    )
    serve.add_argument(
        "--workers",
        type=parse_workers,
        metavar="N|auto",
        help="run N gateway processes sharing the port, supervised (auto: one per core); "
        "instead of gateway.workers (default 1). See docs/workers.md",
    )
    serve.add_argument(
        "--role",
        choices=("all", "worker"),
        default="all",
        help="all: the gateway, and webhook deliveries unless events.delivery.enabled is off; "
        "worker: deliver webhooks only (--listen is then its operations listener). "
        "See docs/webhooks.md",
    )

    check = command("check", "validate a config file and list every error with its line", cmd_check)
    check.add_argument(
        "config",
        nargs="?",
        default=DEFAULT_CONFIG,
        metavar="FILE",
        help=f"the config file (default: {DEFAULT_CONFIG})",
    )

    usage = command(
        "usage",
        "show a consumer's current usage and remaining quota of each rate limit (from Redis)",
        cmd_usage,
    )
    usage.add_argument(
        "--consumer", required=True, metavar="TENANT/NAME", help="the consumer, e.g. acme/billing"
    )
    usage.add_argument(
        "-c",
        "--config",
        default=DEFAULT_CONFIG,
        metavar="FILE",
        help=f"the config file (default: {DEFAULT_CONFIG}); its redis section says where to read",
    )
    usage.add_argument("--json", action="store_true", help="one JSON object per limit, a list")

    init = command("init", "write a commented starter config file", cmd_init)
    init.add_argument(
        "path",
        nargs="?",
        default=DEFAULT_CONFIG,
        metavar="FILE",
        help=f"where to write it (default: {DEFAULT_CONFIG})",
    )
    init.add_argument(
        "--force", action="store_true", help="replace the file if it exists (default: refuse)"
    )

    db = sub.add_parser("db", help="database maintenance", description="Database maintenance.")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    upgrade = db_sub.add_parser(
        "upgrade",
        help="apply the database migrations this version of Portico ships",
        description="Apply the database migrations this version of Portico ships. SQLite is "
        "migrated by `portico serve` itself; PostgreSQL only by this command.",
    )
    upgrade.add_argument(
        "-c",
        "--config",
        default=DEFAULT_CONFIG,
        metavar="FILE",
        help=f"take database.url from this config file (default: {DEFAULT_CONFIG})",
    )
    upgrade.add_argument(
        "--url", help="the database URL to migrate, instead of database.url of the config"
    )
    upgrade.set_defaults(func=cmd_db_upgrade)

    identity_cli.register(sub, load_config)
    oauth_cli.register(sub, load_config)
    routes_cli.register(sub)
    cache_cli.register(sub, load_config)
    secrets_cli.register(sub, load_config)
    admin_cli.register(sub, load_config)
    sync_cli.register(sub)
    catalog_cli.register(sub, load_config)
    events_cli.register(sub, load_config)

    demo = command(
        "demo", "run Portico with sample backends and a sample config, for a first look", cmd_demo
    )
    demo.add_argument(
        "--workdir",
        default=".demo",
        metavar="DIR",
        help="where the demo keeps its config and database (default: .demo)",
    )
    demo.add_argument("--port", type=int, default=8080, help="the gateway's port (default: 8080)")
    return parser


def main(argv: list[str] | None = None) -> int:
    # The parser class of every subcommand is the class of the parser that made it (argparse).
    args = build_parser().parse_args(argv)
    debug = _debug(args)
    from portico.cli import logs

    logs.configure(_log_level(args), _global(args, "log_format"))
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            raise
        from portico.cli.failures import report

        return report(exc, _command_name(args), debug=debug)


def _debug(args: argparse.Namespace) -> bool:
    return bool(_global(args, "debug")) or _global(args, "log_level") == "debug"


def _log_level(args: argparse.Namespace) -> str:
    return "debug" if _debug(args) else str(_global(args, "log_level"))


def _command_name(args: argparse.Namespace) -> str:
    words = ["portico"]
    for key in (
        "command",
        "db_command",
        "keys_command",
        "oauth_command",
        "routes_command",
        "cache_command",
        "secrets_command",
        "admin_command",
        "tokens_command",
        "catalog_command",
        "events_command",
        "webhooks_command",
        "endpoints_command",
        "deliveries_command",
    ):
        value = getattr(args, key, None)
        if value:
            words.append(value)
    return " ".join(words)
