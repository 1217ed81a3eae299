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

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    field_validator,
    model_validator,
)

from portico.config.catalog import Audience, Lifecycle, Tag, Version
from portico.config.events import EventsSettings
from portico.config.fields import (
    CIDR,
    CONFIG_DIR,
    MAX_WORKERS,
    NAME_PATTERN,
    Duration,
    HeaderName,
    IPRules,
    Model,
    Name,
    Size,
    parse_workers_setting,
)
from portico.config.tenants import (
    ApiKeyRef,
    ClaimMapping,
    ClientCertificate,
    Consumer,
    Identity,
    IdentityProvider,
    OAuthClient,
    OAuthServer,
    SignatureKey,
    Tenant,
)
from portico.config.tracing import TracingSettings
from portico.core.http import HTTP_METHODS
from portico.core.net import parse_network
from portico.core.paths import PathTemplate

__all__ = [
    "CIDR",
    "CONFIG_DIR",
    "MAX_WORKERS",
    "NAME_PATTERN",
    "ApiKeyRef",
    "ClaimMapping",
    "ClientCertificate",
    "Consumer",
    "Duration",
    "HeaderName",
    "IPRules",
    "Identity",
    "IdentityProvider",
    "Model",
    "Name",
    "OAuthClient",
    "OAuthServer",
    "SignatureKey",
    "Size",
    "Tenant",
]


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
    workers: Annotated[int | Literal["auto"], BeforeValidator(parse_workers_setting)] = 1
    """Gateway processes sharing the listeners (``auto``: one per core the process may use);
    ``serve --workers`` overrides it; :func:`portico.config.workers.worker_count` resolves it."""
    worker_timeout: Duration = Field(30.0, ge=0)
    """With several workers: a gateway process that does not answer its supervisor for this long
    (an event loop stuck in a loop or a blocking call) is killed and replaced, as gunicorn's
    ``timeout`` does. ``0`` never kills one (``/healthz`` still fails by its name)."""

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


class AdminSettings(Model):
    """The admin API (docs/admin-api.md). Off unless the config has this section: it changes
    credentials, so a reader of the file sees that it is served, and where."""

    enabled: bool = True
    """``false`` keeps the section written but serves no admin API."""
    listen: Listen = Listen(port=9190)
    """Its own port, off the data plane's and the operations listener's, on 127.0.0.1 unless
    told otherwise."""


class EntitiesSettings(Model):
    """Where the served entities come from (docs/sync.md): ``services``, ``routes`` and
    ``tenants`` (with their consumers). The other sections always come from this file."""

    source: Literal["file", "store"] = "file"
    """``file``: this file's sections are the state, applied when it changes; the admin API
    reads them and refuses to edit them. ``store``: the store's latest state revision is
    served, changed by ``portico apply`` and the admin API (seeded from this file once, when
    the store holds none); edits of those sections here wait for ``portico apply``."""


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
        if "@" in parts.netloc:
            # It would reach the upstream in the Host field, and credentials belong in a header.
            raise ValueError(
                "a target URL cannot carry credentials (user:password@); send them with a "
                "headers policy (request: {set: {Authorization: ...}})"
            )
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


_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)


def _relative_to_config_dir(value: str, info: ValidationInfo) -> str:
    """A file the config names, relative to the config file's directory when not absolute."""
    base = info.context.get(CONFIG_DIR) if isinstance(info.context, dict) else None
    if base is not None and not Path(value).is_absolute():
        return str(Path(base) / value)
    return value


def _path(value: str) -> str:
    if not value.strip():
        raise ValueError("expected the path of a file")
    return value


ConfigFile = Annotated[str, AfterValidator(_path), AfterValidator(_relative_to_config_dir)]
"""The path of a file, relative to the config file's directory unless absolute."""


class UpstreamTLS(Model):
    """How Portico speaks TLS to a service's ``https://`` targets (docs/upstream-tls.md).

    The names follow ``gateway.tls`` (``certificate``, ``private_key``, ``min_version``) and the
    upstream settings of nginx (``proxy_ssl_trusted_certificate``, ``proxy_ssl_name``,
    ``proxy_ssl_verify``) and Envoy (``trusted_ca``, ``sni``). Files are relative to the config
    file's directory, as ``openapi`` is.
    """

    trusted_ca: ConfigFile | None = None
    """PEM CA certificates the targets' certificates must chain to, instead of the system's."""
    certificate: ConfigFile | None = None
    """PEM client certificate chain presented to the targets (mTLS to the backend)."""
    private_key: ConfigFile | None = None
    """The unencrypted PEM private key of ``certificate``."""
    server_name: str | None = None
    """The name sent as SNI and checked against the targets' certificates, instead of each
    target's host."""
    verify: StrictBool = True
    """Whether the targets' certificates and names are checked. Only a YAML boolean is taken: a
    quoted ``"no"``, or a variable's text, is refused rather than read as false."""
    min_version: Literal["1.2", "1.3"] = "1.2"

    @field_validator("server_name")
    @classmethod
    def _host_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.isascii():
            raise ValueError("write an internationalised name in its ASCII (xn--) form")
        name = value.lower()
        try:
            ipaddress.ip_address(name)
        except ValueError:
            if not _DNS_NAME.match(name):
                raise ValueError(
                    "expected a host name such as orders.internal, without scheme, port or path"
                ) from None
        return name

    @model_validator(mode="after")
    def _consistent(self) -> UpstreamTLS:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together: set both or neither")
        if not self.verify and self.trusted_ca is not None:
            raise ValueError("trusted_ca has no use with verify: false; remove one of them")
        return self


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
    tls: UpstreamTLS | None = None
    """TLS to the ``https://`` targets: by default verified against the system's CA store, with
    each target's host name as SNI."""
    policies: tuple[PolicySpec, ...] = ()
    """Policies every route of this service runs before its own; a route's entry of the same
    ``type`` replaces the service's (docs/configuration.md#service-policies)."""
    locked: bool = False
    """Managed by ``portico.yaml`` only: with ``entities.source: store``, the admin API refuses
    to change it (``portico apply`` still does)."""
    openapi: str | None = None
    """The file of the service's OpenAPI 3.0 or 3.1 document, relative to the config file's
    directory (read by the capabilities that use it: the ``validation`` policy)."""
    # The API catalog (docs/catalog.md, portico.config.catalog): a version is a service.
    api: Name | None = None
    """The API this service is a version of (default: the service's own name)."""
    version: Version | None = None
    owner: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=4000)
    tags: tuple[Tag, ...] = ()
    lifecycle: Lifecycle = Lifecycle()
    """``design``, ``beta``, ``stable`` (the default), ``deprecated`` or ``retired``; its
    routes are served accordingly (docs/catalog.md#lifecycle)."""
    audience: Audience = "internal"
    """Who the catalog's exports show it to: ``public`` ⊂ ``partner`` ⊂ ``internal``."""

    @field_validator("openapi")
    @classmethod
    def _relative_to_config(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("openapi is the path of an OpenAPI document file")
        return _relative_to_config_dir(value, info)


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
    locked: bool = False
    """Managed by ``portico.yaml`` only (see ``Service.locked``)."""

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
    secrets_key_file: str | None = None
    """The file of the key that seals the secrets Portico stores (docs/secrets.md), relative to
    the config file's directory. Not the key itself: the config's text is stored in the
    database, which is what the key protects."""

    @field_validator("secrets_key_file")
    @classmethod
    def _key_file_relative_to_config(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("secrets_key_file is the path of a key file")
        base = info.context.get(CONFIG_DIR) if isinstance(info.context, dict) else None
        if base is not None and not Path(value).is_absolute():
            return str(Path(base) / value)
        return value


class Redis(Model):
    """Where state shared by several gateway processes lives (docs/shared-state.md); without
    this section it lives in each process."""

    url: str = Field(pattern=r"^(redis|rediss|unix)://")
    """``redis://[user:password@]host:port/db``, ``rediss://`` for TLS, ``unix:///path?db=N``;
    each gateway process keeps one connection, its commands pipelined on it."""
    timeout: Duration = 0.25
    """The longest any one command may take; a policy then follows its ``on_redis_failure``."""
    key_prefix: str = Field("portico:", max_length=64)
    """Prepended to every key, so that several installations can share one server."""


class PorticoConfig(Model):
    gateway: GatewaySettings = GatewaySettings()
    operations: OperationsSettings = OperationsSettings()
    admin: AdminSettings | None = None
    database: Database = Database()
    redis: Redis | None = None
    entities: EntitiesSettings = EntitiesSettings()
    tracing: TracingSettings = TracingSettings()
    services: dict[Name, Service] = {}
    routes: tuple[Route, ...] = ()
    tenants: dict[Name, Tenant] = {}
    identity: Identity = Identity()
    events: EventsSettings | None = None

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
