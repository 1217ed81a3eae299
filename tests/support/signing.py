"""Signing requests for tests as a client would: with the ``http-message-signatures`` library.

:class:`Signer` holds a key of one RFC 9421 algorithm, the ``signature_keys`` entry a consumer
declares for it, and signs ``httpx.Request`` objects in place with the library's
``HTTPMessageSigner`` (Content-Digest included when the request has content).
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from http_message_signatures import (
    ContentDigest,
    HTTPMessageSigner,
    MappingKeyResolver,
    SigningKey,
    algorithms,
)

ALGORITHMS: dict[str, type[algorithms.HTTPSignatureAlgorithm]] = {
    "ed25519": algorithms.ED25519,
    "ecdsa-p256-sha256": algorithms.ECDSA_P256_SHA256,
    "rsa-pss-sha512": algorithms.RSA_PSS_SHA512,
    "hmac-sha256": algorithms.HMAC_SHA256,
}
TARGET = ("@method", "@authority", "@path")


class SHA512Digest(ContentDigest):
    algorithm = "sha-512"


PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _public_pem(key: PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@dataclass
class Signer:
    keyid: str
    algorithm: str
    key: SigningKey
    entry: dict[str, Any]
    """The consumer's ``signature_keys`` entry for this key."""
    signer: HTTPMessageSigner = field(init=False)

    def __post_init__(self) -> None:
        self.signer = HTTPMessageSigner(
            signature_algorithm=ALGORITHMS[self.algorithm],
            key_resolver=MappingKeyResolver(public_keys={}, private_keys={self.keyid: self.key}),
        )

    @classmethod
    def generate(cls, algorithm: str, keyid: str | None = None) -> Signer:
        keyid = keyid or f"{algorithm}-{secrets.token_hex(4)}"
        entry: dict[str, Any] = {"keyid": keyid, "algorithm": algorithm}
        key: SigningKey
        if algorithm == "hmac-sha256":
            secret = secrets.token_urlsafe(32)
            key = secret.encode()
            entry["secret"] = secret
        else:
            private: PrivateKey
            if algorithm == "ed25519":
                private = ed25519.Ed25519PrivateKey.generate()
            elif algorithm == "ecdsa-p256-sha256":
                private = ec.generate_private_key(ec.SECP256R1())
            else:
                private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            key = private
            entry["public_key"] = _public_pem(private)
        return cls(keyid, algorithm, key, entry)

    def sign(
        self,
        request: httpx.Request,
        *,
        components: Sequence[str] | None = None,
        nonce: str | None = "",
        created: datetime.datetime | None = None,
        tag: str | None = None,
        label: str | None = None,
        append: bool = False,
        digest: type[ContentDigest] = ContentDigest,
    ) -> httpx.Request:
        """Sign ``request`` in place (and return it).

        By default the signature covers the method, authority, path, the query when there is one,
        and a Content-Digest of the content when there is content; ``nonce`` defaults to a fresh
        random one (``None`` leaves it out).
        """
        if components is None:
            components = (*TARGET, *(("@query",) if request.url.query else ()))
        content = request.content
        self.signer.content_digest_class = digest
        self.signer.sign(
            request,
            key_id=self.keyid,
            created=created,
            nonce=secrets.token_urlsafe(16) if nonce == "" else nonce,
            tag=tag,
            label=label,
            covered_component_ids=tuple(components),
            append_if_signature_exists=append,
            body=content or None,
        )
        return request


def consumer_config(*signers: Signer, scopes: Sequence[str] = ("orders:read",)) -> dict[str, Any]:
    """A ``tenants`` section: tenant ``acme``, consumer ``billing`` with these signature keys."""
    return {
        "acme": {
            "consumers": {
                "billing": {
                    "scopes": list(scopes),
                    "signature_keys": [signer.entry for signer in signers],
                }
            }
        }
    }
