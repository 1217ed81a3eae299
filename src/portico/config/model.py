"""The declarative model a user writes in ``portico.yaml``.

Pydantic models at the edge: they validate, fill defaults and normalise units (durations in
seconds, sizes in bytes). The runtime never reads these directly on the hot path; it compiles them
into the immutable :class:`portico.gateway.snapshot.Runtime` snapshot.

This package knows no capability: a policy entry is opaque here (its ``type`` names it), and what
only a capability can judge (a policy's settings, a certificate subject, a JWKS, a route's
authentication method against ``gateway.tls``) is checked by that capability, through the
:class:`~portico.config.checks.Checks` the composition root hands to the loader.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from portico.core.http import HTTP_METHODS
from portico.core.net import parse_network
from portico.core.paths import PathTemplate

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}
MAX_WORKERS = 256
"""The most gateway processes ``gateway.workers`` may ask for."""
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
"""What a name (of a route, service, tenant, consumer, provider) may be made of."""
CONFIG_DIR = "config_dir"
"""The validation context's key for the directory of the config file: the file references it
holds (``services.<name>.openapi``) are relative to it."""
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _parse_duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 2s or 1m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError("expected a duration such as 500ms, 2s or 1m")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def _parse_size(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512KiB, 10MiB or a number of bytes")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    else:
        raise ValueError("expected a size such as 512KiB, 10MiB or a number of bytes")
    if size < 0:
        raise ValueError("a size cannot be negative")
    return size


def _parse_workers(value: Any) -> int | str:
    # One message for both forms, rather than one per member of the union.
    if value == "auto" or (
        isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_WORKERS
    ):
        return value  # type: ignore[no-any-return]
    raise ValueError(f"expected a number of processes from 1 to {MAX_WORKERS}, or auto")


def _check_header_name(name: str) -> str:
    if not _HEADER_NAME.match(name):
        raise ValueError(f"{name!r} is not a valid HTTP header name")
    return name


Duration = Annotated[float, BeforeValidator(_parse_duration)]
Size = Annotated[int, BeforeValidator(_parse_size)]
HeaderName = Annotated[str, AfterValidator(_check_header_name)]


class Model(BaseModel):
    """Base for every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Listen(Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            host, sep, port = value.rpartition(":")
            if not sep or not port.isdigit():
                raise ValueError("expected host:port, for example 127.0.0.1:8080")
            return {"host": host.strip("[]") or "0.0.0.0", "port": int(port)}
        return value


class TLSListener(Model):
    """An HTTPS listener, optionally asking clients for certificates (mTLS)."""

    listen: Listen = Listen(port=8443)
    certificate: str
    """Path to the PEM server certificate chain."""
    private_key: str
    client_ca: str | None = None
    """Path to PEM CA certificates that client certificates must chain to."""
    client_certificate: Literal["none", "optional", "required"] = "none"
    min_version: Literal["1.2", "1.3"] = "1.2"

    @model_validator(mode="after")
    def _ca_for_client_certs(self) -> TLSListener:
        if self.client_certificate != "none" and self.client_ca is None:
            raise ValueError("client_certificate needs client_ca")
        return self


def _check_cidr(cidr: str) -> str:
    try:
        parse_network(cidr)
    except ValueError as exc:
        raise ValueError(f"{cidr!r} is not an IP address or network") from exc
    return cidr


CIDR = Annotated[str, AfterValidator(_check_cidr)]


class IPRules(Model):
    """Allow and deny lists of addresses and networks (IPv4 and IPv6). Deny wins."""

    allow: tuple[CIDR, ...] = ()
    deny: tuple[CIDR, ...] = ()


class GatewaySettings(Model):
    listen: Listen = Listen()
    tls: TLSListener | None = None
    ip_rules: IPRules = IPRules()
    """Applied to every request before routing, using the client address."""
    trusted_proxies: tuple[str, ...] = ()
    """CIDRs of proxies whose X-Forwarded-* and Forwarded headers are believed."""
    max_body_size: Size = 10 * 1024**2
    request_id_header: HeaderName = "X-Request-ID"
    keepalive_timeout: Duration = 75.0
    """How long an idle client connection stays open."""
    header_timeout: Duration = 30.0
    """How long a client has to send a complete request head."""
    body_timeout: Duration = 60.0
    """Longest pause between two reads of a request body (as nginx's ``client_body_timeout``):
    a client that stalls longer gets 408, and the upstream is not blamed."""
    tunnel_idle_timeout: Duration = 300.0
    """How long an upgraded connection (WebSocket) may carry nothing either way."""
    max_header_fields: int = Field(100, ge=1, le=10_000)
    """Most header fields in one request head; more is answered 431."""
    drain_timeout: Duration = 30.0
    """On shutdown, how long in-flight requests get to finish."""
    access_log: bool = False
    workers: Annotated[int | Literal["auto"], BeforeValidator(_parse_workers)] = 1
    """Gateway processes sharing the listeners (``auto``: one per core the process may use);
    ``serve --workers`` overrides it; :func:`portico.config.workers.worker_count` resolves it."""

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            try:
                parse_network(cidr)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not an IP network") from exc
        return value


class OperationsSettings(Model):
    """The operations listener: /healthz, /readyz and /metrics (docs/metrics.md)."""

    enabled: bool = True
    listen: Listen = Listen(port=9180)
    """Off the data plane's port, and on 127.0.0.1 unless told otherwise: metrics name routes,
    services and targets."""
    metrics: bool = True
    """Count requests for /metrics (false: the data plane skips per-request counting)."""


class Target(Model):
    url: str
    weight: int = Field(1, ge=1, le=1000)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL with a host")
        if parts.query or parts.fragment:
            raise ValueError("a target URL cannot have a query or fragment")
        return value


class Timeouts(Model):
    connect: Duration = 5.0
    read: Duration = 60.0
    """Longest wait for the response head, and between two reads of the response body."""
    write: Duration = 60.0
    """Longest time the upstream may refuse to accept request body bytes."""


class ActiveHealthCheck(Model):
    path: str = "/health"
    interval: Duration = 5.0
    timeout: Duration = 2.0
    healthy_threshold: int = Field(2, ge=1)
    unhealthy_threshold: int = Field(3, ge=1)
    expected_statuses: tuple[int, ...] = tuple(range(200, 400))

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("the probe path must start with /")
        return value


class PassiveHealthCheck(Model):
    unhealthy_threshold: int = Field(5, ge=1)
    """Consecutive failures that take a target out of rotation until it recovers."""
    failure_statuses: tuple[int, ...] = (502, 503, 504)
    recovery_after: Duration = 10.0


class HealthCheck(Model):
    active: ActiveHealthCheck | None = None
    passive: PassiveHealthCheck | None = None


class CircuitBreaker(Model):
    failure_threshold: int = Field(5, ge=1)
    reset_timeout: Duration = 10.0
    """How long the circuit stays open before one trial request is let through."""


class Keepalive(Model):
    max_idle: int = Field(64, ge=0)
    idle_timeout: Duration = 4.0
    """Shorter than common upstream keep-alive timeouts (5 s) so we never reuse a closing socket."""


class PolicySpec(Model):
    """One entry of a route's or a service's ``policies`` list; ``type`` picks the policy, the
    rest configures it.

    The policy-specific fields are validated against the policy's own model when the config is
    checked (see :mod:`portico.policies.registry`); here the entry is opaque.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str


class Service(Model):
    targets: tuple[Target, ...] = Field(min_length=1)
    balancer: Literal["round_robin", "least_connections"] = "round_robin"
    timeouts: Timeouts = Timeouts()
    retries: int = Field(1, ge=0, le=10)
    health_check: HealthCheck = HealthCheck()
    circuit_breaker: CircuitBreaker | None = CircuitBreaker()
    keepalive: Keepalive = Keepalive()
    policies: tuple[PolicySpec, ...] = ()
    """Policies every route of this service runs before its own; a route's entry of the same
    ``type`` replaces the service's (docs/configuration.md#service-policies)."""
    openapi: str | None = None
    """The file of the service's OpenAPI 3.0 or 3.1 document, relative to the config file's
    directory (read by the capabilities that use it: the ``validation`` policy)."""

    @field_validator("openapi")
    @classmethod
    def _relative_to_config(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("openapi is the path of an OpenAPI document file")
        base = info.context.get(CONFIG_DIR) if isinstance(info.context, dict) else None
        if base is not None and not Path(value).is_absolute():
            return str(Path(base) / value)
        return value


class Match(Model):
    path: str
    methods: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    headers: dict[HeaderName, str] = {}

    @field_validator("path")
    @classmethod
    def _template(cls, value: str) -> str:
        PathTemplate.parse(value)  # raises ValueError with a precise message
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        upper = tuple(m.upper() for m in value)
        unknown = [m for m in upper if m not in HTTP_METHODS]
        if unknown:
            raise ValueError(f"unknown HTTP method {unknown[0]!r}")
        return upper

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Host names compare without case and without a trailing dot, as requests' are.
        return tuple(h.lower().rstrip(".") for h in value)


class Route(Model):
    name: str = Field(pattern=NAME_PATTERN)
    match: Match
    service: str
    strip_prefix: str | None = None
    """Remove this literal prefix from the path sent upstream."""
    upstream_path: str | None = None
    """Rewrite the upstream path with a template using the route's parameters: /orders/{id}."""
    preserve_host: bool = False
    rewrite_location: bool = True
    """Map a ``Location`` the upstream sends back to the gateway's address and path."""
    websocket: bool = True
    max_body_size: Size | None = None
    policies: tuple[PolicySpec, ...] = ()

    @field_validator("upstream_path")
    @classmethod
    def _rewrite_template(cls, value: str | None) -> str | None:
        if value is not None:
            PathTemplate.parse(value)  # the runtime compiles it; an invalid one must fail here
        return value

    @model_validator(mode="after")
    def _rewrite_is_one_of(self) -> Route:
        if self.strip_prefix is not None and self.upstream_path is not None:
            raise ValueError("use either strip_prefix or upstream_path, not both")
        if self.strip_prefix is not None and not self.match.path.startswith(self.strip_prefix):
            raise ValueError("strip_prefix must be a prefix of match.path")
        return self


class Database(Model):
    url: str = "sqlite:///portico.db"


class Redis(Model):
    """Where state shared by several gateway processes lives (docs/shared-state.md); without
    this section it lives in each process."""

    url: str = Field(pattern=r"^(redis|rediss|unix)://")
    """``redis://[user:password@]host:port/db``, ``rediss://`` for TLS, ``unix:///path``."""
    timeout: Duration = 0.25
    """The longest any one command may take; a policy then follows its ``on_redis_failure``."""
    key_prefix: str = Field("portico:", max_length=64)
    """Prepended to every key, so that several installations can share one server."""
    max_connections: int = Field(64, ge=1, le=10_000)
    """Connections to Redis per gateway process; a request waits for a free one (up to
    ``timeout``) when all are busy."""


Name = Annotated[str, Field(pattern=NAME_PATTERN)]


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


class Tenant(Model):
    consumers: dict[Name, Consumer] = {}
    metadata: dict[str, str] = {}


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


class PorticoConfig(Model):
    gateway: GatewaySettings = GatewaySettings()
    operations: OperationsSettings = OperationsSettings()
    database: Database = Database()
    redis: Redis | None = None
    services: dict[Name, Service] = {}
    routes: tuple[Route, ...] = ()
    tenants: dict[Name, Tenant] = {}
    identity: Identity = Identity()

    def semantic_errors(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Errors that span sections (a route naming an unknown service, a duplicate name...).

        Returned as ``(location, message)`` so the loader can point at the file line of each. The
        capabilities' own cross-section checks are :class:`~portico.config.checks.Checks`.
        """
        errors: list[tuple[tuple[str | int, ...], str]] = []
        names: set[str] = set()
        for i, route in enumerate(self.routes):
            if route.service not in self.services:
                errors.append((("routes", i, "service"), f"unknown service {route.service!r}"))
            if route.upstream_path is not None:
                unknown = _template_names(route.upstream_path) - _template_names(route.match.path)
                for name in sorted(unknown):
                    errors.append(
                        (
                            ("routes", i, "upstream_path"),
                            f"parameter {name!r} is not defined by match.path",
                        )
                    )
            if route.name in names:
                errors.append((("routes", i, "name"), f"route name {route.name!r} is used twice"))
            names.add(route.name)
        return errors


def _template_names(template: str) -> set[str]:
    return set(PathTemplate.parse(template).names)
