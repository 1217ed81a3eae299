"""Secrets at rest: what Portico stores and must read back is sealed, never plain text.

Hashes stay hashes (API keys, client secrets): Portico only compares them. What it must use
again -- the OAuth server's signing keys today, webhook signing secrets and connection
credentials next -- is sealed with envelope encryption before it reaches the database:

- :mod:`~portico.store.secrets.keys`: master keys, their text form and their ids;
- :mod:`~portico.store.secrets.sources`: where the master keys come from
  (``PORTICO_SECRETS_KEY``, ``database.secrets_key_file``, or a file made beside a SQLite
  database);
- :mod:`~portico.store.secrets.envelope`: :class:`Secrets`, which seals one secret for the place
  it is stored and opens it there only (AES-256-GCM, a data key per secret);
- :mod:`~portico.store.secrets.stored`: every sealed column together: counted by key, checked
  before serving, sealed again under the newest key (``portico secrets rotate-key``).

A capability stores a secret in a column marked :data:`~portico.store.tables.SEALED`, seals it
with ``secrets.seal(value, column.context(row_key))`` and opens it with ``secrets.open``.
docs/secrets.md is the operator's side.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from portico.store.migrate import ensure_current
from portico.store.secrets.envelope import Secrets
from portico.store.secrets.errors import (
    BadSecretsKey,
    SecretsError,
    SecretsKeyMissing,
    SecretTampered,
    UnknownSecretFormat,
    UnknownSecretsKey,
)
from portico.store.secrets.sources import ENVIRONMENT_VARIABLE, key_source

__all__ = [
    "ENVIRONMENT_VARIABLE",
    "BadSecretsKey",
    "SecretTampered",
    "Secrets",
    "SecretsError",
    "SecretsKeyMissing",
    "UnknownSecretFormat",
    "UnknownSecretsKey",
    "current_store_secrets",
    "open_secrets",
]


def open_secrets(
    url: str, key_file: str | None = None, env: Mapping[str, str] | None = None
) -> Secrets:
    """The secrets of the database at ``url``, with the keys its configuration gives:
    ``database.secrets_key_file`` (``key_file``) or ``PORTICO_SECRETS_KEY`` in ``env``
    (default: this process's environment). Reads no file until a secret needs it."""
    return Secrets(key_source(url, key_file, os.environ if env is None else env))


def current_store_secrets(url: str, key_file: str | None = None) -> Secrets:
    """:func:`open_secrets`, with the database's schema made current as ``portico serve`` makes
    it: SQLite migrated (a migration may seal what an older Portico stored in plain text, with
    these keys), PostgreSQL checked (``portico db upgrade``)."""
    secrets = open_secrets(url, key_file)
    ensure_current(url, secrets)
    return secrets
