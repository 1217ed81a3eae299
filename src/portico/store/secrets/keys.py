"""Master keys: the keys that wrap the data key of every stored secret, and their text form.

A master key is 32 random bytes, written in base64 (``portico secrets generate-key`` prints one;
``openssl rand -base64 32`` makes one too; :mod:`portico.core.secret_keys` reads the text).
Nothing about it is stored in the database but its *key id*, which every sealed secret carries
so that rotation can be gradual: sixteen hex digits derived from the key with HKDF, so the id
says which key it is without saying anything of it, and an operator never has to name a key.

The key itself is never used directly: HKDF derives the AES-256-GCM key that wraps data keys
(and, separately, the key id), so each use has a key of its own.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from portico.core.secret_keys import KEY_BYTES, decode_key

__all__ = ["KEY_BYTES", "MasterKey", "MasterKeys", "generate_key_text", "parse_key"]

_WRAPPING_INFO = b"portico secrets v1: wrapping key"
_KEY_ID_INFO = b"portico secrets: key id"


def _derive(material: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(material)


@dataclass(frozen=True, slots=True)
class MasterKey:
    """One master key: its id and the cipher that wraps and unwraps data keys with it."""

    id: str
    """Sixteen hex digits; what a sealed secret records of the key that wrapped it."""
    wrapping: AESGCM = field(repr=False, compare=False)

    @classmethod
    def from_bytes(cls, material: bytes) -> MasterKey:
        if len(material) != KEY_BYTES:
            raise ValueError(f"a secrets key is {KEY_BYTES} bytes, not {len(material)}")
        key_id = _derive(material, _KEY_ID_INFO, 8).hex()
        return cls(key_id, AESGCM(_derive(material, _WRAPPING_INFO, KEY_BYTES)))


def parse_key(text: str) -> MasterKey:
    """A master key from its base64 text (:func:`portico.core.secret_keys.decode_key`);
    ``ValueError`` saying why not, never repeating it."""
    return MasterKey.from_bytes(decode_key(text))


def generate_key_text() -> str:
    """A new master key, as text for ``PORTICO_SECRETS_KEY`` or a key file."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode("ascii")


@dataclass(frozen=True, slots=True)
class MasterKeys:
    """The configured master keys, newest first: the newest wraps, every one unwraps."""

    keys: tuple[MasterKey, ...]
    origin: str
    """Where they were read, for messages: ``PORTICO_SECRETS_KEY``, ``the key file ...``."""

    @classmethod
    def of(cls, keys: Iterable[MasterKey], origin: str) -> MasterKeys:
        unique: dict[str, MasterKey] = {}
        for key in keys:
            unique.setdefault(key.id, key)  # the same key twice is harmless: keep its first place
        if not unique:
            raise ValueError("no key")
        return cls(tuple(unique.values()), origin)

    @property
    def newest(self) -> MasterKey:
        return self.keys[0]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(key.id for key in self.keys)

    def get(self, key_id: str) -> MasterKey | None:
        return next((key for key in self.keys if key.id == key_id), None)
