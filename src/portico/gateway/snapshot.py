"""The immutable snapshot the data plane serves from.

A :class:`Runtime` is built by the composition root (:func:`portico.assembly.build_runtime`) from a
validated config: the router, each route's policy pipeline, and the live services. A reload builds
a new snapshot and swaps one reference; requests in flight finish on the snapshot they started
with. The gateway only reads snapshots, so they live here, below the policies that fill them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from portico.config.model import GatewaySettings, PorticoConfig
from portico.core.net import Network
from portico.core.paths import PathTemplate
from portico.gateway.completion import CompletionHook
from portico.gateway.endpoints import BuiltinEndpoint
from portico.gateway.iprules import CompiledIPRules
from portico.gateway.policy import (
    CompletionPolicy,
    FieldsResponsePolicy,
    Policy,
    PreflightPolicy,
    ResponsePolicy,
    StreamingResponsePolicy,
    WholeResponsePolicy,
)
from portico.gateway.router import Router
from portico.gateway.stats import GatewayStats, RouteStats
from portico.gateway.upstream import Service, note_replaced
from portico.gateway.uri import encode_path
from portico.observability.tracing import Tracing


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
    whole_body_pipeline: tuple[WholeResponsePolicy, ...] = ()
    """The policies with ``on_response_body``, in response order."""
    chunk_pipeline: tuple[StreamingResponsePolicy, ...] = ()
    """The policies with ``on_response_chunk``, in response order."""
    completion_pipeline: tuple[CompletionPolicy, ...] = ()
    """The policies with ``on_complete``."""
    response_fields: tuple[FieldsResponsePolicy, ...] | None = None
    """``response_pipeline`` again, when each of its policies is a :class:`FieldsResponsePolicy`:
    an upstream's head is then never decoded (``None`` otherwise)."""
    replaced_response_fields: frozenset[bytes] = frozenset()
    """The fields that the response policies' own replace (the union of their
    ``replaced_fields``, whether or not every one has ``response_fields``): the gateway takes
    them out of an upstream's head before the policies see it, whichever way it goes."""
    replaced_response_names: tuple[str, ...] = ()
    """The same names as text, taken out of the head of a reply before the policies see it (a
    stored answer of ``cache`` or ``idempotency`` holds the fields of its time)."""
    preflight: PreflightPolicy | None = None
    """The first policy with ``on_preflight``: it answers CORS preflights for this route."""
    path_template: str = ""
    """The route's ``match.path`` as written: a trace's ``http.route``."""

    def __post_init__(self) -> None:
        note_replaced(self.replaced_response_fields)

    @property
    def response_body_limit(self) -> int:
        """The body the whole-body policies may hold: the smallest of their limits."""
        return min(p.response_body_limit for p in self.whole_body_pipeline)

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
    stats: GatewayStats
    """The data plane's counters: the same object in every snapshot of a process."""
    completion_hooks: tuple[CompletionHook, ...] = ()
    """What every exchange's end is told: the metrics, the access log."""
    timed: bool = False
    """Someone listens to the end of exchanges (a completion hook, a route's ``on_complete``,
    tracing): each exchange is timed and its completion told. Without, no clock is read per
    request."""
    tracing: Tracing | None = None
    """The process's tracing (the same in every snapshot), when ``tracing.enabled`` is on: each
    exchange is a span, and each upstream attempt (:mod:`portico.gateway.spans`)."""


def retired_services(old: Runtime, new: Runtime) -> list[Service]:
    """Services of ``old`` that ``new`` no longer uses (to close their idle connections)."""
    kept = {id(s) for s in new.services.values()}
    return [s for s in old.services.values() if id(s) not in kept]
