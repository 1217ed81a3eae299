"""The ``events`` section's checks that need the capability: each type's JSON Schema, each
endpoint's consumer, URL (against the SSRF rules), payload filter and secret, and the paths of
inbound sources. ``portico check`` reports them at their file line and field.

The secret parser (cryptography, for Ed25519 keys) is imported by the check that needs it, when
an endpoint is declared: checking a config without one loads no crypto (as identity's checks).
"""

from __future__ import annotations

from portico.config.checks import Finding
from portico.config.model import PorticoConfig
from portico.events.catalog import OPERATIONAL_TYPES, schema_problems
from portico.events.matching import FilterError, compile_filter
from portico.events.ssrf import Destinations, RefusedDestination

__all__ = ["events_errors"]


def events_errors(config: PorticoConfig) -> list[Finding]:
    events = config.events
    if events is None:
        return []
    found: list[Finding] = []
    for name, kind in events.types.items():
        where = ("events", "types", name)
        if name in OPERATIONAL_TYPES:
            found.append((where, f"{name} is Portico's own operational event type"))
        if kind.schema_:
            problem = schema_problems(kind.schema_)
            if problem is not None:
                found.append(((*where, "schema"), f"not a usable JSON Schema: {problem}"))
    delivery = events.delivery
    destinations = Destinations(
        allow_http=delivery.allow_http, allow_networks=delivery.allow_networks
    )
    known = set(events.types) | set(OPERATIONAL_TYPES)
    for name, endpoint in events.endpoints.items():
        where = ("events", "endpoints", name)
        tenant, consumer = endpoint.consumer.split("/", 1)
        owner = config.tenants.get(tenant)
        if owner is None or consumer not in owner.consumers:
            found.append(((*where, "consumer"), f"no consumer {endpoint.consumer!r} in tenants"))
        try:
            destinations.check_url(endpoint.url)
        except RefusedDestination as exc:
            found.append(((*where, "url"), str(exc)))
        for index, item in enumerate(endpoint.types):
            if item != "*" and not item.endswith(".*") and item not in known:
                found.append(((*where, "types", index), f"no event type {item!r} in events.types"))
        if endpoint.filter is not None:
            try:
                compile_filter(endpoint.filter)
            except FilterError as exc:
                for path, message in exc.problems:
                    found.append(((*where, "filter", *path), message))
        from portico.events.signing import InvalidSecret, Signer

        try:
            Signer.from_secret(endpoint.secret)
        except InvalidSecret as exc:
            found.append(((*where, "secret"), str(exc)))
    prefix = events.api.path_prefix
    paths: dict[str, str] = {}
    for name, source in events.inbound.items():
        where = ("events", "inbound", name)
        if source.path in paths:
            found.append(((*where, "path"), f"{source.path} is also inbound {paths[source.path]}"))
        paths.setdefault(source.path, name)
        if events.api.enabled and (source.path == prefix or source.path.startswith(prefix + "/")):
            found.append(((*where, "path"), f"{source.path} is under events.api.path_prefix"))
        if source.event_type not in events.types:
            found.append(((*where, "event_type"), f"no event type {source.event_type!r}"))
        if source.scheme == "standard-webhooks":
            for index, secret in enumerate(source.secrets):
                if not secret.startswith(("whsec_", "whpk_")):
                    found.append(
                        (
                            (*where, "secrets", index),
                            "a Standard Webhooks secret is whsec_… or whpk_…",
                        )
                    )
    return found
