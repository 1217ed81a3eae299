"""The ``api_key`` method: long random keys with a visible id, stored only as a SHA-256 hash.

A key reads ``pk_<id>_<secret>``. The id (10 lower-case letters and digits) is not secret: it is
what ``portico keys list`` shows, what logs and the audit log name, and how a key is found. The
secret is ``secrets.token_urlsafe(32)``, 256 bits from the OS generator, so a plain SHA-256 of
the whole key is enough (no salt or slow hash: there is nothing to brute-force).

A request presents the key in ``X-API-Key`` (the header is configurable) or as
``Authorization: ApiKey <key>``. Verification looks the id up in the in-memory directory
(:mod:`portico.identity.state`), hashes the presented key and compares the two digests with
:func:`hmac.compare_digest`; an unknown id is compared against a dummy digest, so that the
time taken does not tell known ids from unknown ones either. Every failure (malformed key,
unknown id, wrong secret, expired, rotated past its overlap, revoked) gets the same answer.

The key is never logged: rejections log the key id at most, and by default the key is removed
from the request before it goes upstream.

A client sends the same key with every request. Once a key has verified, each authenticator
remembers it, in memory only, with the directory entries it resolved to: the next request with
that key costs one dict lookup instead of a SHA-256 and three lookups. The memo is emptied
whenever the directory is replaced (a key created, rotated or revoked anywhere, within a second),
holds at most ``MAX_VERIFIED`` keys, and expiry is still checked on every request. Only keys that
verified are remembered, so a wrong key always goes through the full constant-time check; and a
dict lookup compares strings only after their per-process, secretly seeded hashes matched, so its
timing tells nothing about how close a guess was.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from portico.core.http import REALM
from portico.gateway.exchange import Exchange, Identity
from portico.identity.authn import AuthResult, MethodSettings, Rejected
from portico.identity.method_settings import ApiKeySettings

if TYPE_CHECKING:
    from portico.identity.context import BuildContext
    from portico.identity.state import ConsumerEntry, Directory, IdentityState, KeyEntry

__all__ = [
    "KEY_PREFIX",
    "ApiKeyAuthenticator",
    "ApiKeySettings",
    "NewApiKey",
    "Settings",
    "build_authenticator",
    "generate_key",
    "key_digest",
    "key_id_of",
]

KEY_PREFIX = "pk_"
ID_LENGTH = 10
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
SECRET_BYTES = 32
"""256 bits (``secrets.token_urlsafe(32)``: 43 characters)."""
MAX_KEY_LENGTH = 256
"""Longer values are not keys of ours; they are refused before hashing."""

CHALLENGE = f'ApiKey realm="{REALM}"'
INVALID_KEY = f'ApiKey realm="{REALM}", error="invalid_key"'
_AUTHORIZATION_SCHEME = "apikey"
# What unknown ids are compared against: a digest no key has (not even a valid hex string).
_NO_DIGEST = "-" * 64
MAX_VERIFIED = 10_000
"""Verified keys one authenticator remembers (see the module's docstring)."""


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A key just generated: ``key`` is shown once and never stored."""

    id: str
    key: str = field(repr=False)
    sha256: str


def generate_key() -> NewApiKey:
    key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LENGTH))
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
    return NewApiKey(key_id, key, key_digest(key))


def key_digest(key: str) -> str:
    """The hex SHA-256 of the whole key: what the config and the database keep."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def key_id_of(key: str) -> str | None:
    """The id part of ``pk_<id>_<secret>``, or ``None`` if ``key`` does not have that shape."""
    if len(key) > MAX_KEY_LENGTH or not key.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    if not sep or not key_id or not secret or not key_id.isalnum():
        return None
    return key_id


Settings = ApiKeySettings
"""The settings model the ``auth`` policy validates this method's options with."""


class ApiKeyAuthenticator:
    """Verifies API keys against the directory of the live identity state."""

    __slots__ = (
        "_authorization",
        "_header",
        "_hide",
        "_state",
        "_verified",
        "_verified_for",
        "method",
    )

    def __init__(self, state: IdentityState, settings: ApiKeySettings | None = None) -> None:
        settings = settings or ApiKeySettings()
        self.method = "api_key"
        self._state = state
        self._header = settings.header.lower()
        self._authorization = settings.authorization
        self._hide = settings.hide_credentials
        self._verified: dict[str, _Known] = {}
        self._verified_for: Directory | None = None

    @property
    def needs_body(self) -> bool:
        return False

    @property
    def accept_signature(self) -> str | None:
        return None

    def challenge(self) -> str:
        return CHALLENGE

    def present(self, exchange: Exchange) -> bool:
        return self._find(exchange.headers.items)[0] is not None

    def authenticate(self, exchange: Exchange) -> AuthResult:
        return self.identify(exchange) or Rejected(INVALID_KEY, "no API key")

    def identify(self, exchange: Exchange) -> AuthResult | None:
        """``present`` and ``authenticate`` in one pass over the fields; ``None`` when the
        request carries no key. The ``auth`` policy calls this."""
        items = exchange.headers.items
        key, index, more = self._find(items)
        if key is None:
            return None
        directory = self._state.directory
        if directory is not self._verified_for:
            self._verified = {}
            self._verified_for = directory
        known = self._verified.get(key)
        if known is None:
            checked = _verify(key, directory)
            if isinstance(checked, Rejected):
                return checked
            known = _Known(*checked)
            if len(self._verified) < MAX_VERIFIED:
                self._verified[key] = known
        not_after = known.not_after
        if not_after is not None and time.time() >= not_after:
            return Rejected(INVALID_KEY, f"key {known.record.id} has expired or was revoked")
        if self._hide:
            if more:
                header = self._header
                exchange.headers.items = [
                    (name, value)
                    for name, value in items
                    if name != header and not (name == "authorization" and _is_apikey_scheme(value))
                ]
            else:
                items.pop(index)  # compiled, a list primitive (``del`` is a generic call)
        return known.identity

    def _find(self, items: list[tuple[str, str]]) -> tuple[str | None, int, bool]:
        """``(key, position, more)``: the key, the position of its field, and whether another
        field carries a key too. The configured header wins over ``Authorization: ApiKey``."""
        header = self._header
        found: str | None = None
        position = -1
        from_header = False
        more = False
        for index, (name, value) in enumerate(items):
            if name == header:
                if from_header or found is not None:
                    more = True
                if not from_header:
                    found, position, from_header = value.strip(), index, True
            elif name == "authorization" and self._authorization and _is_apikey_scheme(value):
                if found is not None:
                    more = True
                else:
                    found, position = value[7:].strip(), index
        return (found or None), position, more


class _Known:
    """A key verified once for this directory: its record (the expiry is checked on each
    request) and the identity it gives. The identity is the same object for every request with
    the key (nothing changes an identity once a policy set it), which saves making one per
    request."""

    __slots__ = ("identity", "not_after", "record")

    def __init__(self, record: KeyEntry, consumer: ConsumerEntry) -> None:
        self.record = record
        self.not_after = record.not_after
        """The record's, read here on each request (a native attribute, not the record's)."""
        self.identity = Identity(
            consumer=consumer.id,
            tenant=consumer.tenant,
            scopes=consumer.scopes,
            method="api_key",
            claims={"key_id": record.id},
        )


def _verify(key: str, directory: Directory) -> tuple[KeyEntry, ConsumerEntry] | Rejected:
    """The full check of a key not seen before (expiry aside): id, secret, consumer."""
    key_id = key_id_of(key)
    record = directory.api_keys.get(key_id) if key_id is not None else None
    expected = record.sha256 if record is not None else _NO_DIGEST
    # Hash and compare whatever happens, so that timing does not tell which check failed.
    matches = hmac.compare_digest(key_digest(key), expected)
    if record is None:
        return Rejected(INVALID_KEY, "malformed API key" if key_id is None else "unknown key id")
    if not matches:
        return Rejected(INVALID_KEY, f"wrong secret for key {record.id}")
    consumer = directory.consumers.get(record.consumer)
    if consumer is None:
        return Rejected(INVALID_KEY, f"key {record.id}: consumer {record.consumer} not found")
    return record, consumer


def _is_apikey_scheme(value: str) -> bool:
    return len(value) > 7 and value[6] == " " and value[:6].lower() == _AUTHORIZATION_SCHEME


def build_authenticator(
    settings: MethodSettings[ApiKeySettings], context: BuildContext
) -> ApiKeyAuthenticator:
    from portico.identity.state import IdentityState

    state = context.extensions.identity
    if state is None:
        # No live state (a runtime built outside `portico serve`): keys declared in the config.
        state = IdentityState.for_config(context.config)
    return ApiKeyAuthenticator(state, settings.options or ApiKeySettings())
