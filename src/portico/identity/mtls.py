"""The ``mtls`` method: the TLS client certificate, mapped to a consumer.

The gateway's HTTPS listener (``gateway.tls``) asks for a client certificate and verifies its chain
against ``client_ca`` during the handshake: a certificate that does not chain to that CA never
reaches a route (with ``client_certificate: required`` neither does a connection without one).
This method then maps the verified certificate to the consumer whose ``certificates`` name it,
by the SHA-256 fingerprint of its DER encoding, or by its subject (RFC 4514, compared as a
distinguished name, attribute by attribute, not as a string).

A fingerprint pins one certificate: a renewed certificate needs a new entry. A subject follows
renewals, so the CA must only issue that subject to that client.

No certificate on the connection (plain HTTP, or ``client_certificate: optional`` and none sent)
means the method's credentials are not present; a verified certificate that maps to no consumer
is refused.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from cryptography import x509

from portico.config.model import PorticoConfig
from portico.core.http import REALM
from portico.gateway.exchange import Exchange, Identity
from portico.identity.authn import AuthResult, Rejected
from portico.identity.certificates import distinguished_name
from portico.identity.method_settings import NEEDS_CLIENT_CERTIFICATES

if TYPE_CHECKING:
    from pydantic import BaseModel

    from portico.identity.authn import MethodSettings
    from portico.identity.context import BuildContext
    from portico.identity.state import IdentityState

__all__ = [
    "CertificateMap",
    "MutualTLSAuthenticator",
    "build_authenticator",
    "peer_certificate",
]

CHALLENGE = f'MutualTLS realm="{REALM}"'
"""No ``WWW-Authenticate`` scheme is registered for client certificates; this one names the
method so a client knows to present a certificate on the HTTPS listener."""
INVALID_CERTIFICATE = f'MutualTLS realm="{REALM}", error="invalid_certificate"'


def peer_certificate(exchange: Exchange) -> bytes | None:
    """The DER of the client certificate the TLS handshake verified, if any."""
    tls = exchange.tls
    if tls is None:
        return None
    der = tls.getpeercert(binary_form=True)
    return der if isinstance(der, bytes) and der else None


@functools.lru_cache(maxsize=1024)
def _subject(der: bytes) -> x509.Name | None:
    # Keep-alive connections present the same certificate on every request: parse it once.
    try:
        return x509.load_der_x509_certificate(der).subject
    except ValueError:
        return None


class CertificateMap:
    """Certificate fingerprints and subjects to ``ConsumerEntry.id``, compiled from the config."""

    __slots__ = ("by_fingerprint", "by_subject")

    def __init__(
        self, by_fingerprint: Mapping[bytes, str], by_subject: Mapping[x509.Name, str]
    ) -> None:
        self.by_fingerprint = by_fingerprint
        self.by_subject = by_subject

    @classmethod
    def from_config(cls, config: PorticoConfig) -> CertificateMap:
        by_fingerprint: dict[bytes, str] = {}
        by_subject: dict[x509.Name, str] = {}
        for tenant_name, tenant in config.tenants.items():
            for name, consumer in tenant.consumers.items():
                consumer_id = f"{tenant_name}/{name}"
                for cert in consumer.certificates:
                    if cert.sha256_fingerprint is not None:
                        by_fingerprint[bytes.fromhex(cert.sha256_fingerprint)] = consumer_id
                    elif cert.subject is not None:
                        by_subject[distinguished_name(cert.subject)] = consumer_id
        return cls(by_fingerprint, by_subject)

    def consumer_of(self, der: bytes) -> str | None:
        consumer = self.by_fingerprint.get(hashlib.sha256(der).digest())
        if consumer is None and self.by_subject:
            subject = _subject(der)
            if subject is not None:
                consumer = self.by_subject.get(subject)
        return consumer


class MutualTLSAuthenticator:
    """Maps the connection's verified client certificate to a consumer."""

    __slots__ = ("_certificates", "_state", "method")

    def __init__(self, state: IdentityState, certificates: CertificateMap) -> None:
        self.method = "mtls"
        self._state = state
        self._certificates = certificates

    @property
    def needs_body(self) -> bool:
        return False

    @property
    def accept_signature(self) -> str | None:
        return None

    def challenge(self) -> str:
        return CHALLENGE

    def present(self, exchange: Exchange) -> bool:
        return peer_certificate(exchange) is not None

    def identify(self, exchange: Exchange) -> AuthResult | None:
        return self.authenticate(exchange) if self.present(exchange) else None

    def authenticate(self, exchange: Exchange) -> AuthResult:
        der = peer_certificate(exchange)
        if der is None:
            return Rejected(INVALID_CERTIFICATE, "no client certificate on the connection")
        fingerprint = hashlib.sha256(der).hexdigest()
        consumer_id = self._certificates.consumer_of(der)
        if consumer_id is None:
            return Rejected(INVALID_CERTIFICATE, f"certificate {fingerprint} maps to no consumer")
        consumer = self._state.directory.consumers.get(consumer_id)
        if consumer is None:
            return Rejected(
                INVALID_CERTIFICATE, f"certificate {fingerprint}: consumer {consumer_id} not found"
            )
        return Identity(
            consumer=consumer.id,
            tenant=consumer.tenant,
            scopes=consumer.scopes,
            method=self.method,
            claims={"certificate_sha256": fingerprint},
        )


def build_authenticator(
    settings: MethodSettings[BaseModel], context: BuildContext
) -> MutualTLSAuthenticator:
    from portico.identity.state import IdentityState

    tls = context.config.gateway.tls
    if tls is None or tls.client_certificate == "none":
        # `portico check` reports this (the auth policy's checks); a runtime built from a config
        # loaded without them still refuses.
        raise ValueError(f"route {context.route_name!r}: {NEEDS_CLIENT_CERTIFICATES}")
    state = context.extensions.identity
    if state is None:
        # No live state (a runtime built outside `portico serve`): the config's consumers.
        state = IdentityState.for_config(context.config)
    return MutualTLSAuthenticator(state, CertificateMap.from_config(context.config))
