"""Creating, rotating and revoking the API keys kept in the store, each with its audit entry:
what ``portico keys`` and the admin API both do, written once.

Every function runs in the caller's write transaction (a ``Session`` from
``Database.write()``): the key, the identity change counter that gateways poll, and the audit
entry commit together or not at all. The audit entry records the key's state before and after
(:func:`key_view`: never the key, nor its hash).

A change may be made conditional (``precondition``): it is called with the key as it is, locked,
inside the transaction, and raises to refuse (the admin API's ``If-Match``), so that a change
decided on what a client read cannot overwrite one made since.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from portico.identity.apikeys import generate_key
from portico.identity.store import ApiKeys, StoredApiKey
from portico.store.repositories import AuditLog, Author

__all__ = ["IssuedKey", "Precondition", "create_key", "key_view", "revoke_key", "rotate_key"]

Precondition = Callable[[StoredApiKey], None]
"""Raises when the change must not be made to the key as it is now."""


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just stored: ``key`` is shown once, to whoever asked for it, and never again."""

    stored: StoredApiKey
    key: str = field(repr=False)


def key_view(key: StoredApiKey, now: datetime) -> dict[str, Any]:
    """What is shown of a stored key (and recorded in the audit log): never the key or its hash."""
    return {
        "id": key.id,
        "consumer": key.consumer,
        "status": key.status(now),
        "created_at": _when(key.created_at),
        "expires_at": _when(key.expires_at),
        "revoked_at": _when(key.revoked_at),
        "rotated_to": key.rotated_to,
        "overlap_until": _when(key.overlap_until),
        "valid_until": _when(key.valid_until),
    }


def create_key(
    session: Session,
    consumer: str,
    author: Author,
    *,
    expires_at: datetime | None = None,
    now: datetime | None = None,
) -> IssuedKey:
    """A new key for ``consumer`` (``tenant/name``, checked by the caller against the config)."""
    now = now or datetime.now(UTC)
    new = generate_key()
    stored = ApiKeys(session).add(new.id, consumer, new.sha256, expires_at=expires_at, now=now)
    _audit(session, author, "api_key.create", None, stored, now)
    return IssuedKey(stored, new.key)


def rotate_key(
    session: Session,
    key_id: str,
    author: Author,
    *,
    overlap: timedelta,
    lifetime: timedelta | None = None,
    now: datetime | None = None,
    precondition: Precondition | None = None,
) -> tuple[StoredApiKey, IssuedKey]:
    """Replace the key with a new one of the same consumer; the old one keeps working for
    ``overlap``. The new key lives ``lifetime``, or as long as the old one was given.

    Raises :class:`~portico.identity.store.ApiKeyNotFound`, or
    :class:`~portico.identity.store.ApiKeyNotUsable` for a key revoked, rotated or expired.
    Returns ``(old, new)``."""
    now = now or datetime.now(UTC)
    keys = ApiKeys(session)
    before = keys.lock(key_id)
    if precondition is not None:
        precondition(before)
    if lifetime is not None:
        expires_at: datetime | None = now + lifetime
    elif before.expires_at is not None:
        expires_at = now + (before.expires_at - before.created_at)
    else:
        expires_at = None
    new = generate_key()
    old, created = keys.rotate(
        key_id, new.id, new.sha256, overlap_until=now + overlap, expires_at=expires_at, now=now
    )
    _audit(session, author, "api_key.rotate", before, old, now, rotated_to=created.id)
    _audit(session, author, "api_key.create", None, created, now, rotated_from=old.id)
    return old, IssuedKey(created, new.key)


def revoke_key(
    session: Session,
    key_id: str,
    author: Author,
    *,
    now: datetime | None = None,
    precondition: Precondition | None = None,
) -> tuple[StoredApiKey, StoredApiKey]:
    """Make the key stop working now; ``(before, after)``. Revoking a revoked key changes
    nothing and records nothing. Raises :class:`~portico.identity.store.ApiKeyNotFound`."""
    now = now or datetime.now(UTC)
    keys = ApiKeys(session)
    before = keys.lock(key_id)
    if precondition is not None:
        precondition(before)
    after = keys.revoke(key_id, now=now)
    if before.revoked_at is None:
        _audit(session, author, "api_key.revoke", before, after, now)
    return before, after


def _audit(
    session: Session,
    author: Author,
    action: str,
    before: StoredApiKey | None,
    after: StoredApiKey,
    now: datetime,
    **detail: str,
) -> None:
    AuditLog(session).record(
        author,
        action,
        after.id,
        tenant=after.consumer.partition("/")[0],
        before=None if before is None else key_view(before, now),
        after=key_view(after, now),
        detail={"consumer": after.consumer, **detail},
    )


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
