"""The tenants, consumers and credentials a user declares in ``portico.yaml``, and the identity
section (the OAuth 2.0 server, external identity providers). Validated here; what only identity
can judge (a certificate subject, a JWKS) is checked by ``portico.identity.checks``."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    Field,
    field_validator,
    model_validator,
)

from portico.config.fields import Duration, IPRules, Model, Name


def _aware(value: datetime | None) -> datetime | None:
    # A timestamp written without an offset is taken as UTC rather than the server's zone.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class ApiKeyRef(Model):
    """A key declared in the config by its hash (keys made with ``portico keys create`` live in
    the database instead). ``portico keys generate`` prints a new key and this entry for it."""

    id: str = Field(pattern=r"^[A-Za-z0-9]+$")
    """The ``<id>`` of ``pk_<id>_<secret>``."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """The hex SHA-256 of the whole key."""
    expires_at: Annotated[datetime | None, AfterValidator(_aware)] = None


class OAuthClient(Model):
    client_id: str
    client_secret: str | None = None
    """The secret itself (use ${VAR}); only its hash is kept in memory."""
    client_secret_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    jwks: dict[str, Any] | None = None
    """Public keys for ``private_key_jwt`` client authentication (RFC 7523)."""
    jwks_uri: str | None = None
    introspect_any: bool = False
    """May introspect (RFC 7662) the tokens of every client, not only its own: for a resource
    server that checks the tokens other clients present to it. Any other token is
    ``{"active": false}`` to a client."""

    @model_validator(mode="after")
    def _credentials(self) -> OAuthClient:
        if self.client_secret is not None and self.client_secret_sha256 is not None:
            raise ValueError("give client_secret or client_secret_sha256, not both")
        if self.jwks is not None and self.jwks_uri is not None:
            raise ValueError("give jwks or jwks_uri, not both")
        if (self.client_secret, self.client_secret_sha256, self.jwks, self.jwks_uri) == (None,) * 4:
            raise ValueError(
                "a client needs a client_secret (or client_secret_sha256), or public keys for "
                "private_key_jwt (jwks or jwks_uri)"
            )
        if self.jwks_uri is not None:
            _check_http_url(self.jwks_uri, "jwks_uri")
        return self


def _check_http_url(value: str, what: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        raise ValueError(f"{what} must be an http:// or https:// URL with a host")


MIN_HMAC_SECRET_BYTES = 32


class SignatureKey(Model):
    """A key a consumer signs requests with (HTTP Message Signatures, RFC 9421)."""

    keyid: str = Field(min_length=1, max_length=256, pattern=r"^[\x20-\x7e]+$")
    algorithm: Literal["ed25519", "ecdsa-p256-sha256", "rsa-pss-sha512", "hmac-sha256"]
    public_key: str | None = None
    """PEM public key (asymmetric algorithms)."""
    secret: str | None = None
    """Shared secret (hmac-sha256; use ${VAR})."""

    @model_validator(mode="after")
    def _key_material(self) -> SignatureKey:
        if self.algorithm == "hmac-sha256":
            if self.secret is None or self.public_key is not None:
                raise ValueError("hmac-sha256 takes a secret and no public_key")
            if len(self.secret.encode()) < MIN_HMAC_SECRET_BYTES:
                raise ValueError(
                    f"an hmac-sha256 secret needs at least {MIN_HMAC_SECRET_BYTES} bytes"
                )
            return self
        if self.public_key is None or self.secret is not None:
            raise ValueError(f"{self.algorithm} takes a PEM public_key and no secret")
        _check_public_key(self.algorithm, self.public_key)
        return self


def _check_public_key(algorithm: str, pem: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise ValueError("public_key is not a PEM public key") from exc
    if algorithm == "ed25519" and not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError("public_key is not an Ed25519 key")
    if algorithm == "ecdsa-p256-sha256" and not (
        isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
    ):
        raise ValueError("public_key is not an EC P-256 key")
    if algorithm == "rsa-pss-sha512" and not (
        isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048
    ):
        raise ValueError("public_key is not an RSA key of 2048 bits or more")


def _fingerprint(value: str | None) -> str | None:
    # Accept the forms tools print (openssl: AB:CD:..., others: abcd...) and keep one.
    if value is None:
        return None
    digest = value.replace(":", "").strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError("expected the 64 hex digits of a SHA-256 fingerprint (colons allowed)")
    return digest


class ClientCertificate(Model):
    """Maps a TLS client certificate to the consumer, by fingerprint or by subject."""

    sha256_fingerprint: Annotated[str | None, AfterValidator(_fingerprint)] = None
    """SHA-256 of the certificate's DER, in hex (stored lower-case without colons)."""
    subject: str | None = None
    """RFC 4514 string, for example ``CN=billing,O=Acme`` (checked by identity)."""

    @model_validator(mode="after")
    def _one_of(self) -> ClientCertificate:
        if (self.sha256_fingerprint is None) == (self.subject is None):
            raise ValueError("give either sha256_fingerprint or subject")
        return self


class Consumer(Model):
    scopes: tuple[str, ...] = ()
    metadata: dict[str, str] = {}
    api_keys: tuple[ApiKeyRef, ...] = ()
    oauth: OAuthClient | None = None
    signature_keys: tuple[SignatureKey, ...] = ()
    certificates: tuple[ClientCertificate, ...] = ()
    ip_rules: IPRules = IPRules()
    locked: bool = False
    """Managed by ``portico.yaml`` only (``entities.source: store``: the admin API refuses to
    change it)."""


class Tenant(Model):
    consumers: dict[Name, Consumer] = {}
    metadata: dict[str, str] = {}
    locked: bool = False
    """Managed by ``portico.yaml`` only: the admin API refuses to change the tenant itself (its
    consumers have marks of their own)."""


class ClaimMapping(Model):
    consumer: str = "sub"
    tenant: str | None = None
    scopes: str = "scope"
    """A space-separated string claim or a list claim."""


class IdentityProvider(Model):
    """An external issuer whose JWTs are accepted (verified with its JWKS)."""

    issuer: str
    jwks_uri: str
    audiences: tuple[str, ...] = Field(min_length=1)
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    claims: ClaimMapping = ClaimMapping()
    clock_skew: Duration = 30.0
    jwks_cache_ttl: Duration = 300.0
    jwks_min_refresh_interval: Duration = 10.0


class OAuthServer(Model):
    """Portico's own OAuth 2.0 authorization server (client credentials grant)."""

    issuer: str
    """The ``iss`` of issued tokens and the base of the metadata document."""
    audience: str | None = None
    """The ``aud`` of issued tokens; the issuer when not given."""
    token_ttl: Duration = 3600.0
    signing_algorithm: Literal["EdDSA", "RS256"] = "EdDSA"
    path_prefix: str = "/oauth2"

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, value: str) -> str:
        # RFC 8414 §2: a URL with a scheme and host, and no query or fragment.
        _check_http_url(value, "issuer")
        if urlsplit(value).query:
            raise ValueError("issuer cannot have a query")
        return value

    @field_validator("token_ttl")
    @classmethod
    def _positive_ttl(cls, value: float) -> float:
        if value < 1:
            raise ValueError("token_ttl must be at least 1s")
        return value

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)*/?", value):
            raise ValueError("path_prefix is a plain path such as /oauth2 (no parameters)")
        return value


class Identity(Model):
    oauth: OAuthServer | None = None
    providers: dict[Name, IdentityProvider] = {}
