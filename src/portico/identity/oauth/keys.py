"""Signing keys of the authorization server, and the key ring the data plane verifies with.

A key is *active* from ``activated_at`` until ``retired_at``: the newest active key signs new
access tokens. A retired key is still *published* (in the JWKS, and trusted for verification)
until ``expires_at``, which rotation sets past the expiry of the last token the key could have
signed; after that it drops out. ``kid`` is the key's RFC 7638 thumbprint.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt import PyJWK
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

SigningAlgorithm = Literal["EdDSA", "RS256"]
PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey

RSA_KEY_SIZE = 3072
"""NIST SP 800-57 strength of 128 bits, like Ed25519."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def thumbprint(public_jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url) of a public key."""
    required = {
        "RSA": ("e", "kty", "n"),
        "OKP": ("crv", "kty", "x"),
        "EC": ("crv", "kty", "x", "y"),
    }
    members = {name: public_jwk[name] for name in required[public_jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return _b64url(hashlib.sha256(canonical).digest())


def generate_private_key(algorithm: SigningAlgorithm) -> PrivateKey:
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_SIZE)


def private_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def load_private_pem(pem: str) -> PrivateKey:
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"unsupported signing key type {type(key).__name__}")
    return key


def public_jwk(key: PrivateKey, algorithm: SigningAlgorithm) -> dict[str, Any]:
    """The public half as a JWK with ``kid``, ``alg`` and ``use``, ready for the JWKS."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        jwk = dict(OKPAlgorithm.to_jwk(key.public_key(), as_dict=True))
    else:
        jwk = dict(RSAAlgorithm.to_jwk(key.public_key(), as_dict=True))
    jwk.pop("kid", None)
    return {**jwk, "kid": thumbprint(jwk), "alg": algorithm, "use": "sig"}


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    algorithm: SigningAlgorithm
    private_key: PrivateKey = field(repr=False)
    public_jwk: dict[str, Any]
    created_at: datetime
    activated_at: datetime
    retired_at: datetime | None = None
    expires_at: datetime | None = None
    verifier: PyJWK = field(init=False, repr=False, compare=False)
    """The public key bound to its one algorithm: a token cannot pick another one."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "verifier", PyJWK(self.public_jwk, self.algorithm))

    @classmethod
    def generate(cls, algorithm: SigningAlgorithm, now: datetime) -> SigningKey:
        key = generate_private_key(algorithm)
        jwk = public_jwk(key, algorithm)
        return cls(jwk["kid"], algorithm, key, jwk, created_at=now, activated_at=now)

    def signs_at(self, now: datetime) -> bool:
        return self.activated_at <= now and (self.retired_at is None or now < self.retired_at)

    def published_at(self, now: datetime) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The keys in effect at one moment: the one that signs, and every one that verifies."""

    signing: SigningKey | None
    """The newest active key, ``None`` when there is none."""
    published: tuple[SigningKey, ...]
    """Keys in the JWKS and trusted for verification, newest first."""
    by_kid: Mapping[str, SigningKey]
    next_change: datetime | None
    """When a key activates, retires or drops out next: the ring must then be rebuilt."""

    @classmethod
    def empty(cls) -> KeyRing:
        return cls(None, (), {}, None)

    @classmethod
    def build(cls, keys: Iterable[SigningKey], now: datetime) -> KeyRing:
        newest_first = sorted(keys, key=lambda k: (k.activated_at, k.created_at), reverse=True)
        published = tuple(k for k in newest_first if k.published_at(now))
        signing = next((k for k in published if k.signs_at(now)), None)
        moments = [
            moment
            for k in newest_first
            for moment in (k.activated_at, k.retired_at, k.expires_at)
            if moment is not None and moment > now
        ]
        return cls(signing, published, {k.kid: k for k in published}, min(moments, default=None))

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(k.public_jwk) for k in self.published]}
