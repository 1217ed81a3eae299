"""Secrets out of what Portico shows: the admin API's views of the config and the audit log's
before and after states.

A config holds secrets wherever its author put them (``${VAR}`` is interpolated when loading):
an OAuth client's ``client_secret``, an HMAC signing secret, a ``headers`` policy that sets an
upstream ``Authorization``, a Redis password in a URL. :func:`redact` replaces the value of
every member whose name says it is one, at any depth, and the password of any URL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["REDACTED", "is_secret_name", "redact"]

REDACTED = "[redacted]"

# A member name that says its value is a secret; matched anywhere in the name, without case.
_SECRET_NAME = re.compile(
    r"secret|password|passwd|token|authorization|api[-_]?key|private|credential|cookie|"
    r"signature|session",
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    return _SECRET_NAME.search(name) is not None


def redact(value: Any) -> Any:
    """``value`` (JSON-like) with every secret member's value replaced by :data:`REDACTED`."""
    if isinstance(value, Mapping):
        return {
            key: (
                REDACTED
                if isinstance(key, str) and is_secret_name(key) and item is not None
                else redact(item)
            )
            for key, item in value.items()
        }
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [redact(item) for item in value]
    if isinstance(value, str) and "@" in value and "://" in value:
        return _without_password(value)
    return value


def _without_password(url: str) -> str:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{host}"))
