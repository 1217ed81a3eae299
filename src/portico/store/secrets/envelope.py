"""Sealing and opening one secret: envelope encryption with AES-256-GCM.

Each secret is encrypted with a data key of its own (AES-256-GCM, 256 random bits), and that
data key is encrypted ("wrapped") with the newest master key (AES-256-GCM again). What is
stored is text:

    portico:v1:<key id>:<base64url(wrap nonce | wrapped data key | nonce | ciphertext)>

- ``portico:v1`` names the format, so that a later one can be read beside it.
- ``<key id>`` names the master key that wrapped the data key: a store holds secrets of several
  master keys while a rotation is under way, and ``portico secrets status`` counts them.
- Associated data binds each part to where it is stored. Every secret is sealed for a
  *context* -- its table, column and row, such as ``signing_keys.sealed_private_key/<kid>`` --
  authenticated with the data (``portico:v1:<context>``) and with the wrapped data key
  (``portico:v1:<key id>:<context>``): a ciphertext copied into another row, another column or
  another table does not open, and neither does one whose key id was edited.

Why AES-GCM and envelopes rather than Fernet (MultiFernet rotates too): Fernet takes no
associated data, so binding a secret to its row would be a check of Portico's own making
inside the plaintext; AES-GCM authenticates the context itself. A data key per secret keeps the
master key's work to wrapping 32-byte keys -- and is the shape a key management service (KMS,
Vault's transit engine) takes later, which wraps data keys and never hands out its own.

A rotation opens each secret and seals it again (:mod:`portico.store.secrets.inventory`): a new
data key and new nonces, so nothing of the old master key's work survives it.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from portico.store.secrets.errors import (
    SecretTampered,
    UnknownSecretFormat,
    UnknownSecretsKey,
)
from portico.store.secrets.keys import KEY_BYTES, MasterKeys
from portico.store.secrets.sources import KeySource

__all__ = ["FORMAT", "PREFIX_LENGTH", "Secrets", "key_id_of"]

FORMAT = "portico:v1"
KEY_ID_LENGTH = 16
PREFIX_LENGTH = len(FORMAT) + 1 + KEY_ID_LENGTH + 1
"""``portico:v1:<key id>:``, the same length for every secret: the store counts secrets by key
with SQL on it (``substr``)."""
_NONCE = 12
_TAG = 16
_WRAPPED = KEY_BYTES + _TAG
_MINIMUM = _NONCE + _WRAPPED + _NONCE + _TAG


def key_id_of(sealed: str) -> str | None:
    """The id of the master key that wrapped ``sealed``; ``None`` if it is not sealed (v1)."""
    if not sealed.startswith(FORMAT + ":") or len(sealed) < PREFIX_LENGTH:
        return None
    if sealed[PREFIX_LENGTH - 1] != ":":
        return None
    return sealed[len(FORMAT) + 1 : PREFIX_LENGTH - 1]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    # Strictly: the decoder's default is to skip what is not base64, and an appended byte of
    # rubbish would then pass unnoticed.
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


class Secrets:
    """Seals and opens the secrets Portico stores and must read back, with the keys of one
    :class:`~portico.store.secrets.sources.KeySource`. Safe to share between threads."""

    def __init__(self, source: KeySource) -> None:
        self.source = source

    @property
    def origin(self) -> str:
        return self.source.origin

    def configured(self) -> MasterKeys | None:
        """The master keys configured now (``None``: none), without making any."""
        return self.source.configured()

    def seal(self, plaintext: bytes, context: str) -> str:
        """``plaintext`` encrypted for ``context`` (where it is stored) with the newest key."""
        key = self.source.keys(create=True).newest
        data_key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
        wrap_nonce, nonce = os.urandom(_NONCE), os.urandom(_NONCE)
        wrapped = key.wrapping.encrypt(wrap_nonce, data_key, _wrap_aad(key.id, context))
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, _data_aad(context))
        return f"{FORMAT}:{key.id}:{_b64(wrap_nonce + wrapped + nonce + ciphertext)}"

    def open(self, sealed: str, context: str) -> bytes:
        """The plaintext of ``sealed``, which must have been sealed for ``context``."""
        key_id = key_id_of(sealed)
        if key_id is None:
            raise _unreadable(sealed, context)
        keys = self.source.configured()
        key = keys.get(key_id) if keys is not None else None
        if key is None:
            configured = ", ".join(keys.ids) if keys is not None else "none"
            raise UnknownSecretsKey(
                f"the secret {context} was sealed with the secrets key {key_id}, which is not "
                f"configured ({self.origin}: {configured}); configure that key too "
                "(docs/secrets.md)"
            )
        try:
            payload = _unb64(sealed[PREFIX_LENGTH:])
        except (binascii.Error, ValueError):
            raise _tampered(context) from None
        if len(payload) < _MINIMUM:
            raise _tampered(context)
        wrap_nonce = payload[:_NONCE]
        wrapped = payload[_NONCE : _NONCE + _WRAPPED]
        nonce = payload[_NONCE + _WRAPPED : _NONCE + _WRAPPED + _NONCE]
        ciphertext = payload[_NONCE + _WRAPPED + _NONCE :]
        try:
            data_key = key.wrapping.decrypt(wrap_nonce, wrapped, _wrap_aad(key_id, context))
            return AESGCM(data_key).decrypt(nonce, ciphertext, _data_aad(context))
        except InvalidTag:
            raise _tampered(context) from None


def _wrap_aad(key_id: str, context: str) -> bytes:
    return f"{FORMAT}:{key_id}:{context}".encode()


def _data_aad(context: str) -> bytes:
    return f"{FORMAT}:{context}".encode()


def _tampered(context: str) -> SecretTampered:
    return SecretTampered(
        f"the secret {context} does not open with its key: it was altered or damaged, or "
        "copied from another row or database; restore it from a backup, or replace what it "
        "protects (docs/secrets.md)"
    )


def _unreadable(sealed: str, context: str) -> Exception:
    scheme, _, rest = sealed.partition(":")
    version = rest.partition(":")[0]
    if scheme == "portico" and f"{scheme}:{version}" != FORMAT:
        return UnknownSecretFormat(
            f"the secret {context} is sealed in format {version!r}, which this version of "
            "Portico does not read; it was probably written by a newer Portico"
        )
    return SecretTampered(
        f"the secret {context} is not sealed (plain text, or damaged): Portico never stores "
        "one so; replace what it protects (docs/secrets.md)"
    )
