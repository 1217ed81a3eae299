"""The config as every capability checks it: what ``portico check`` reports, ``serve`` and a
reload refuse.

- :data:`CHECKS`: the capabilities' own config checks (the policy catalogue validates each policy
  entry, identity its credentials), handed to the config loader; :func:`load_config` is the
  loader with all of them.
- :data:`SERVE_CHECKS` and :func:`load_config_to_serve` add the checks of starting to serve (the
  HTTPS listener's files, the secrets key file), for ``check`` and ``serve``;
  :func:`check_config_to_serve` is that with the warnings ``portico check`` prints.

Apart from the composition root's snapshot building (:mod:`portico.assembly`, which re-exports
these) so that ``portico check`` imports no running gateway: no event loop, no upstream pools, no
connection code (tests/cli/test_cli_conventions.py counts what it imports).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path

from portico.config import catalog_checks, loader
from portico.config.checks import Checks, Finding
from portico.config.loader import CheckedConfig, StoredEntities
from portico.config.model import PorticoConfig
from portico.core.secret_keys import KeyFileProblem, read_key_file
from portico.events.checks import events_errors
from portico.gateway import checks as gateway_checks
from portico.identity import checks as identity_checks
from portico.policies import registry
from portico.policies.catalogue import POLICIES
from portico.policies.validation import checks as validation_checks

__all__ = [
    "CHECKS",
    "SERVE_CHECKS",
    "check_config",
    "check_config_text",
    "check_config_to_serve",
    "load_config",
    "load_config_text",
    "load_config_to_serve",
    "secrets_key_file_errors",
]

CHECKS = Checks(
    checks=(
        partial(registry.route_policy_errors, POLICIES),
        partial(registry.per_process_state_errors, POLICIES),
        identity_checks.identity_errors,
        validation_checks.openapi_errors,
        gateway_checks.upstream_tls_errors,
        catalog_checks.catalog_errors,
        events_errors,
    ),
    policy_settings=partial(registry.settings_model, POLICIES),
    warnings=(gateway_checks.upstream_tls_warnings, catalog_checks.catalog_warnings),
)


def secrets_key_file_errors(config: PorticoConfig) -> list[Finding]:
    """``database.secrets_key_file`` missing, open to other users, or not keys: read with the
    rules the store reads it with, without the store (docs/secrets.md)."""
    path = config.database.secrets_key_file
    if path is None:
        return []
    where = ("database", "secrets_key_file")
    try:
        read_key_file(Path(path))
    except FileNotFoundError:
        return [(where, f"no file {path}: `portico secrets generate-key --file {path}` makes one")]
    except KeyFileProblem as exc:
        return [(where, str(exc))]
    return []


SERVE_CHECKS = Checks(
    checks=(*CHECKS.checks, gateway_checks.listener_errors, secrets_key_file_errors),
    policy_settings=CHECKS.policy_settings,
    warnings=CHECKS.warnings,
)
"""Also what only starting to serve needs: the HTTPS listener's files, the secrets key file."""


def load_config(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    entities: StoredEntities | None = None,
) -> PorticoConfig:
    """:func:`portico.config.loader.load_config` with every capability's checks; ``entities``:
    the stored entity sections served instead of the file's (``entities.source: store``)."""
    return loader.load_config(path, env, CHECKS, entities)


def check_config(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    entities: StoredEntities | None = None,
) -> CheckedConfig:
    """:func:`load_config`, with the warnings and the file as written."""
    return loader.check_config(path, env, CHECKS, entities)


def load_config_to_serve(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    entities: StoredEntities | None = None,
) -> PorticoConfig:
    """:func:`load_config`, and what ``serve`` would refuse when it starts (``portico check``)."""
    return loader.load_config(path, env, SERVE_CHECKS, entities)


def check_config_to_serve(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    entities: StoredEntities | None = None,
) -> CheckedConfig:
    """:func:`load_config_to_serve`, with what ``portico check`` warns of, and the file as
    written (:attr:`CheckedConfig.document`)."""
    return loader.check_config(path, env, SERVE_CHECKS, entities)


def load_config_text(
    text: str,
    filename: str,
    env: Mapping[str, str] | None = None,
    entities: StoredEntities | None = None,
) -> PorticoConfig:
    """:func:`portico.config.loader.load_config_text` with every capability's checks."""
    return loader.load_config_text(text, filename, env, CHECKS, entities)


def check_config_text(
    text: str,
    filename: str,
    env: Mapping[str, str] | None = None,
    entities: StoredEntities | None = None,
) -> CheckedConfig:
    """:func:`load_config_text`, with the warnings and the text as written."""
    return loader.check_config_text(text, filename, env, CHECKS, entities)
