"""What can go wrong with secrets at rest; each message says what failed, why and what to do."""

from __future__ import annotations

from portico.store.database import StoreError

__all__ = [
    "BadSecretsKey",
    "SecretTampered",
    "SecretsError",
    "SecretsKeyMissing",
    "UnknownSecretFormat",
    "UnknownSecretsKey",
]


class SecretsError(StoreError):
    """Base class of the errors of secrets at rest."""


class SecretsKeyMissing(SecretsError):
    """A secret must be sealed or opened and no secrets key is configured (or its file is gone)."""


class BadSecretsKey(SecretsError):
    """A configured secrets key cannot be used: not a key, or a file others may read or write."""


class UnknownSecretsKey(SecretsError):
    """A stored secret was sealed with a key that is not among the configured keys."""


class SecretTampered(SecretsError):
    """A stored secret does not open: altered, damaged, or copied from another row."""


class UnknownSecretFormat(SecretsError):
    """A stored secret is in a format this version of Portico does not read."""
