"""The ``portico`` command: ``serve``, ``check``, ``db upgrade``, ``keys`` and ``demo``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from portico.config.errors import ConfigError
from portico.config.model import PorticoConfig
from portico.identity import cli as identity_cli


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def load_config(path: str | Path) -> PorticoConfig:
    """The config with every capability's checks: what ``check`` reports, ``serve`` refuses."""
    # Imported here: every capability comes with it, and `portico --help` should not pay for them.
    from portico.assembly import load_config as load_checked

    return load_checked(path)


def cmd_check(args: argparse.Namespace) -> int:
    from portico.assembly import load_config_to_serve

    try:
        config = load_config_to_serve(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        print(f"{len(exc.issues)} error(s) in {args.config}", file=sys.stderr)
        return 1
    print(f"{args.config}: ok ({len(config.services)} services, {len(config.routes)} routes)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from portico.serving import serve
    from portico.store.database import StoreError

    _configure_logging(args.log_level)
    try:
        return serve(Path(args.config))
    except (ConfigError, StoreError) as exc:
        print(exc, file=sys.stderr)
        return 1


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from portico.store.migrate import db_upgrade_command

    url = args.url
    if url is None:
        try:
            url = load_config(args.config).database.url
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
    return db_upgrade_command(url)


def cmd_demo(args: argparse.Namespace) -> int:
    import signal

    # Until the demo's event loop takes over the signals, SIGTERM stops it as Ctrl-C does: quietly.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        import uvloop

        from portico.demo.run import run_demo

        _configure_logging(args.log_level)
        # uvloop, as for `portico serve`: the demo runs the gateway exactly as serve does.
        return uvloop.run(run_demo(Path(args.workdir), args.port))
    except KeyboardInterrupt:
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="portico", description=__doc__)
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway on a config file")
    serve.add_argument("-c", "--config", default="portico.yaml")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check", help="validate a config file and list every error")
    check.add_argument("config", nargs="?", default="portico.yaml")
    check.set_defaults(func=cmd_check)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="apply database migrations")
    upgrade.add_argument("-c", "--config", default="portico.yaml")
    upgrade.add_argument("--url", help="database URL (default: database.url of the config)")
    upgrade.set_defaults(func=cmd_db_upgrade)

    identity_cli.register(sub, load_config)

    demo = sub.add_parser("demo", help="run Portico with sample backends and a sample config")
    demo.add_argument("--workdir", default=".demo")
    demo.add_argument("--port", type=int, default=8080)
    demo.set_defaults(func=cmd_demo)

    from portico.identity.oauth.cli import register as register_oauth

    register_oauth(sub, load_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
