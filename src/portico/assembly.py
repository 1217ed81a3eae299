"""The composition root: the one place that knows every capability and wires them together.

- The catalogues it builds from: :data:`POLICIES` (the policy types, from
  :mod:`portico.policies.catalogue`) and :data:`ENDPOINTS` (the built-in endpoint providers).
  Authentication methods are the ``auth`` policy's own catalogue (``identity.authn.METHODS``).
- The config checks of every capability and the loader with them (:data:`CHECKS`,
  :func:`load_config`, :func:`load_config_to_serve`) are :mod:`portico.checking`'s, re-exported
  here: ``portico check`` imports that module alone, without the running gateway this one builds.
- :func:`build_runtime` compiles a validated config into the gateway's immutable
  :class:`~portico.gateway.snapshot.Runtime`: the router, each route's policy pipeline from the
  catalogue (its service's lifecycle included: :mod:`portico.policies.lifecycle`; the routes of
  a service in design are left out), the built-in endpoints of the providers it is asked to
  serve and of those bound to the process's live state (``Extensions.endpoints``), and the
  live services (carried over from the previous snapshot when neither their settings nor their
  TLS files changed).
- :func:`runtime_builder`: what the gateway is handed to reload its config file, since the
  gateway never imports a policy.

It is named ``assembly`` rather than ``app`` because ``gateway/app.py`` is the running gateway.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from portico.checking import (
    CHECKS,
    SERVE_CHECKS,
    load_config,
    load_config_text,
    load_config_to_serve,
)
from portico.config.model import PorticoConfig
from portico.core.extensions import Catalogue
from portico.core.net import parse_network
from portico.core.paths import PathTemplate
from portico.gateway.accesslog import write_access_line
from portico.gateway.completion import CompletionHook
from portico.gateway.iprules import CompiledIPRules
from portico.gateway.policy import (
    CompletionPolicy,
    FieldsResponsePolicy,
    PreflightPolicy,
    ResponsePolicy,
    StreamingResponsePolicy,
    WholeResponsePolicy,
)
from portico.gateway.router import RouteMatcher, Router
from portico.gateway.snapshot import CompiledRoute, Runtime
from portico.gateway.tls import upstream_tls_fingerprint
from portico.gateway.upstream import Service
from portico.identity.context import BuildContext, EndpointProvider, Extensions
from portico.policies import lifecycle, registry
from portico.policies.catalogue import POLICIES

__all__ = [
    "CHECKS",
    "ENDPOINTS",
    "POLICIES",
    "SERVE_CHECKS",
    "build_runtime",
    "load_config",
    "load_config_text",
    "load_config_to_serve",
    "runtime_builder",
]

ENDPOINTS: Catalogue[EndpointProvider] = Catalogue(
    "built-in endpoint provider",
    EndpointProvider,
    {"oauth": "portico.identity.oauth.server:ENDPOINTS"},
)
"""Built-in endpoints a process may serve, by provider; ``serve`` names those it serves (the
OAuth server's need its live state, which only ``serve`` has)."""


def runtime_builder(
    extensions: Extensions, endpoints: Sequence[str] = ()
) -> Callable[[Path, Runtime], Runtime]:
    """How the gateway reloads: load and check the file, build a snapshot after ``previous``."""

    def rebuild(path: Path, previous: Runtime) -> Runtime:
        return build_runtime(load_config(path), previous, extensions, endpoints)

    return rebuild


def build_runtime(
    config: PorticoConfig,
    previous: Runtime | None = None,
    extensions: Extensions | None = None,
    endpoints: Sequence[str] = (),
) -> Runtime:
    """The snapshot of ``config``. ``endpoints`` names the providers in :data:`ENDPOINTS` whose
    built-in endpoints it serves; each serves none when the config does not enable it."""
    if extensions is None:
        extensions = (
            Extensions()
            if previous is None
            else Extensions(stats=previous.stats, tracing=previous.tracing)
        )
    stats = extensions.stats
    stats.enabled = config.operations.metrics
    services: dict[str, Service] = {}
    for name, spec in config.services.items():
        if not lifecycle.served(spec):
            # In design: not served, not probed (its backend may not exist yet).
            continue
        old = previous.services.get(name) if previous else None
        services[name] = (
            old
            if old is not None
            and old.spec == spec
            and old.tls_fingerprint == upstream_tls_fingerprint(spec.tls)
            else Service(name, spec, stats.service(name))
        )

    matchers: list[RouteMatcher[CompiledRoute]] = []
    for route in config.routes:
        if route.service not in services:
            continue  # a route of a service in design answers 404, as if it were not written
        context = BuildContext(
            config=config, route_name=route.name, service_name=route.service, extensions=extensions
        )
        policies = tuple(
            registry.build_policy(POLICIES, spec, context)
            for spec in registry.effective_policies(config, route)
        )
        reverse = tuple(reversed(policies))
        responders = tuple(p for p in reverse if isinstance(p, ResponsePolicy))
        fielders = tuple(p for p in responders if isinstance(p, FieldsResponsePolicy))
        # Replaced on every path: also when another response policy makes the head go as text.
        replaced = frozenset(name for policy in fielders for name in policy.replaced_fields)
        compiled = CompiledRoute(
            name=route.name,
            service=services[route.service],
            pipeline=policies,
            response_pipeline=responders,
            response_fields=fielders if responders and len(fielders) == len(responders) else None,
            replaced_response_fields=replaced,
            replaced_response_names=tuple(sorted(name.decode("latin-1") for name in replaced)),
            whole_body_pipeline=tuple(p for p in reverse if isinstance(p, WholeResponsePolicy)),
            chunk_pipeline=tuple(p for p in reverse if isinstance(p, StreamingResponsePolicy)),
            completion_pipeline=tuple(p for p in policies if isinstance(p, CompletionPolicy)),
            preflight=next((p for p in policies if isinstance(p, PreflightPolicy)), None),
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
            needs_body=any(p.needs_body for p in policies),
            stats=stats.route(route.name, route.service),
            path_template=route.match.path,
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
    builtins = [e for name in endpoints for e in ENDPOINTS.get(name).build(config, extensions)]
    builtins.extend(e for bound in extensions.endpoints for e in bound.build(config, extensions))
    endpoint_router = (
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
    hooks: list[CompletionHook] = []
    if stats.enabled:
        hooks.append(stats.record)
    if config.gateway.access_log:
        hooks.append(write_access_line)
    return Runtime(
        config=config,
        settings=config.gateway,
        router=Router(matchers),
        services=services,
        trusted_proxies=tuple(parse_network(cidr) for cidr in config.gateway.trusted_proxies),
        endpoints=endpoint_router,
        ip_rules=CompiledIPRules.compile(config.gateway.ip_rules),
        stats=stats,
        completion_hooks=tuple(hooks),
        timed=(
            bool(hooks)
            or extensions.tracing is not None
            or any(m.target.completion_pipeline for m in matchers)
        ),
        tracing=extensions.tracing,
    )


def _methods(methods: Sequence[str] | frozenset[str]) -> frozenset[str]:
    """A route that takes GET takes HEAD too (RFC 9110 §9.3.2): the same route, the same
    policies, never another route's."""
    out = frozenset(methods)
    return out | {"HEAD"} if "GET" in out else out
