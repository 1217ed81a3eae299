"""What policies, authentication methods and built-in endpoints get when a snapshot is built
(never per request).

:class:`Extensions` holds the long-lived components the composition root creates once and that
outlive any one snapshot; :class:`BuildContext` is what one policy of one route is built with;
an :class:`EndpointProvider` makes a capability's built-in endpoints from the config and the
extensions. They live in ``identity`` because their components are identity's live state, and
the ``auth`` policy (above), the methods it builds and the OAuth endpoints (here) consult them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from portico.config.model import PorticoConfig
from portico.gateway.endpoints import BuiltinEndpoint
from portico.gateway.stats import GatewayStats
from portico.observability.tracing import Tracing
from portico.shared.memory import MemoryState
from portico.shared.state import SharedState

if TYPE_CHECKING:
    from portico.identity.oauth.state import OAuthState
    from portico.identity.state import IdentityState


class EventPublisher(Protocol):
    """Publishing an event, as the events capability's ``Publisher`` does it (the ``publish``
    policy's way in): declared here, below ``events``, so that :class:`Extensions` can carry it.
    Raises what the catalog raises for an event that cannot be published; returns the event."""

    def publish(
        self,
        event_type: str,
        data: Any,
        *,
        publisher: str,
        tenant: str | None = None,
        idempotency_key: str | None = None,
        internal: bool = False,
    ) -> object: ...


@dataclass(frozen=True, slots=True)
class Extensions:
    """Long-lived components that outlive any one snapshot, given to policies when they are built.

    ``identity`` is the live identity state (consumers, keys) that the store keeps current between
    config reloads, ``oauth`` the authorization server's (signing keys, revoked tokens); both are
    ``None`` for a runtime built outside ``portico serve`` (tests, tools), where the methods use
    the config's identities only.
    """

    identity: IdentityState | None = None
    oauth: OAuthState | None = None
    stats: GatewayStats = field(default_factory=GatewayStats)
    """The data plane's counters (read by the operations listener), for the life of the process;
    the ``auth`` policy counts its refusals there."""
    shared: SharedState = field(default_factory=MemoryState)
    """Where policies keep state every gateway process must see alike (rate-limit counters,
    cached responses, idempotency records): the process's memory, or Redis when the config has a
    ``redis`` section (:func:`portico.shared.open_shared_state`)."""
    tracing: Tracing | None = None
    """The process's tracing, when ``tracing.enabled`` is on (started by ``serving``, in each
    gateway process); every snapshot built with these extensions traces its exchanges."""
    publisher: EventPublisher | None = None
    """Where events are published (the config has an ``events`` section and ``portico serve``
    opened its store); ``None`` otherwise, and a ``publish`` policy then refuses to build."""
    endpoints: tuple[EndpointProvider, ...] = ()
    """Built-in endpoint providers bound to this process's live state (the events consumer API
    and inbound webhooks, bound to its events store), served with every snapshot besides those
    of the composition root's catalogue."""


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a policy may consult when it is built (never per request)."""

    config: PorticoConfig
    route_name: str
    extensions: Extensions
    service_name: str = ""
    """The service of the route (its ``policies`` come first in the route's pipeline)."""


@dataclass(frozen=True, slots=True)
class EndpointProvider:
    """A capability's built-in endpoints (the OAuth server's token endpoint, its JWKS, ...):
    declared in its module and named in the composition root's catalogue
    (``assembly.ENDPOINTS``), which builds the providers it serves with each snapshot."""

    build: Callable[[PorticoConfig, Extensions], Sequence[BuiltinEndpoint]]
    """The endpoints for this config: none when the config does not enable the capability."""
