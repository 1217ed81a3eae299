"""The immutable snapshot the data plane serves from.

:func:`build_runtime` compiles a validated :class:`~portico.config.model.PorticoConfig` into a
:class:`Runtime`: the router, each route's policy pipeline, and the live services. A reload builds
a new snapshot and swaps one reference; requests in flight finish on the snapshot they started
with. Services whose settings did not change are carried over with their pools and health state.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from portico.config.model import GatewaySettings, PorticoConfig
from portico.gateway.endpoints import BuiltinEndpoint
from portico.gateway.iprules import CompiledIPRules
from portico.gateway.router import PathTemplate, RouteMatcher, Router
from portico.gateway.stats import GatewayStats, RouteStats
from portico.gateway.upstream import Service
from portico.gateway.uri import encode_path
from portico.policies.base import Policy, ResponsePolicy
from portico.policies.registry import BuildContext, build_policy

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
EndpointFactory = Callable[[PorticoConfig, "Extensions"], Sequence[BuiltinEndpoint]]


@dataclass(frozen=True, slots=True)
class Extensions:
    """Long-lived components that outlive any one snapshot, given to policies when they are built.

    ``identity`` is the live identity state (consumers, keys, signing keys) that the store keeps
    current between config reloads; ``endpoint_factories`` contribute built-in endpoints.
    """

    identity: Any = None
    """``portico.identity.state.IdentityState``: consumers and API keys, kept current."""
    oauth: Any = None
    """``portico.identity.oauth`` live state: signing keys and revoked tokens from the store."""
    endpoint_factories: tuple[EndpointFactory, ...] = ()
    stats: GatewayStats = field(default_factory=GatewayStats)
    """The data plane's counters (read by the operations listener), for the life of the process."""


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    name: str
    service: Service
    pipeline: tuple[Policy, ...]
    response_pipeline: tuple[ResponsePolicy, ...]
    """The policies with ``on_response``, in reverse order (the last to see the request is the
    first to see the response)."""
    strip_prefix: str | None
    rewrite: PathTemplate | None
    preserve_host: bool
    rewrite_location: bool
    """Map a ``Location`` from the upstream to the client's view (off for path rewrites)."""
    websocket: bool
    max_body_size: int
    needs_body: bool
    """A policy reads the whole body (``exchange.body``) before the request goes upstream."""
    stats: RouteStats | None
    """This route's request counters; ``None`` when ``operations.metrics`` is off."""

    def upstream_path(self, path: str, params: dict[str, str], encode: bool) -> str:
        """The path sent upstream, from the decoded ``path`` the route matched. ``encode``: the
        client's path had percent-encodings, so the decoded path is encoded again canonically
        (a path without any goes as it is)."""
        if self.rewrite is not None:
            return self.rewrite.expand(params)
        if self.strip_prefix:
            path = path[len(self.strip_prefix) :]
            if not path.startswith("/"):
                path = "/" + path
        return encode_path(path) if encode else path


@dataclass(frozen=True, slots=True)
class Runtime:
    config: PorticoConfig
    settings: GatewaySettings
    router: Router[CompiledRoute]
    services: Mapping[str, Service]
    trusted_proxies: tuple[Network, ...]
    endpoints: Router[BuiltinEndpoint] | None
    ip_rules: CompiledIPRules | None
    extensions: Extensions


def build_runtime(
    config: PorticoConfig,
    previous: Runtime | None = None,
    extensions: Extensions | None = None,
) -> Runtime:
    if extensions is None:
        extensions = previous.extensions if previous is not None else Extensions()
    services: dict[str, Service] = {}
    for name, spec in config.services.items():
        old = previous.services.get(name) if previous else None
        services[name] = (
            old
            if old is not None and old.spec == spec
            else Service(name, spec, extensions.stats.service(name))
        )
    extensions.stats.enabled = config.operations.metrics

    matchers: list[RouteMatcher[CompiledRoute]] = []
    for route in config.routes:
        context = BuildContext(config=config, route_name=route.name, extensions=extensions)
        policies = tuple(build_policy(spec, context) for spec in route.policies)
        compiled = CompiledRoute(
            name=route.name,
            service=services[route.service],
            pipeline=policies,
            response_pipeline=tuple(p for p in reversed(policies) if isinstance(p, ResponsePolicy)),
            strip_prefix=route.strip_prefix.rstrip("/") if route.strip_prefix else None,
            rewrite=PathTemplate.parse(route.upstream_path) if route.upstream_path else None,
            preserve_host=route.preserve_host,
            rewrite_location=route.rewrite_location and not route.upstream_path,
            websocket=route.websocket,
            max_body_size=(
                route.max_body_size
                if route.max_body_size is not None
                else config.gateway.max_body_size
            ),
            needs_body=any(getattr(p, "needs_body", False) for p in policies),
            stats=extensions.stats.route(route.name, route.service),
        )
        matchers.append(
            RouteMatcher(
                template=PathTemplate.parse(route.match.path),
                methods=_methods(route.match.methods),
                hosts=frozenset(route.match.hosts),
                headers=tuple((k.lower(), v) for k, v in route.match.headers.items()),
                target=compiled,
            )
        )
    builtins = [e for factory in extensions.endpoint_factories for e in factory(config, extensions)]
    endpoints = (
        Router(
            [
                RouteMatcher(
                    template=PathTemplate.parse(e.path),
                    methods=_methods(e.methods),
                    hosts=frozenset(),
                    headers=(),
                    target=e,
                )
                for e in builtins
            ]
        )
        if builtins
        else None
    )
    return Runtime(
        config=config,
        settings=config.gateway,
        router=Router(matchers),
        services=services,
        trusted_proxies=tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in config.gateway.trusted_proxies
        ),
        endpoints=endpoints,
        ip_rules=CompiledIPRules.compile(config.gateway.ip_rules),
        extensions=extensions,
    )


def _methods(methods: Sequence[str] | frozenset[str]) -> frozenset[str]:
    """A route that takes GET takes HEAD too (RFC 9110 §9.3.2): the same route, the same
    policies, never another route's."""
    out = frozenset(methods)
    return out | {"HEAD"} if "GET" in out else out


def retired_services(old: Runtime, new: Runtime) -> list[Service]:
    """Services of ``old`` that ``new`` no longer uses (to close their idle connections)."""
    kept = {id(s) for s in new.services.values()}
    return [s for s in old.services.values() if id(s) not in kept]
