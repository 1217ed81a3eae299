"""What an endpoint's owner or an operator may register: checked before anything is stored, by
every way in (the admin API, the consumer API, ``portico webhooks endpoints``), with every
mistake named at once.

- the URL against the SSRF rules of the running config (:mod:`portico.events.ssrf`; its
  addresses are checked again at every delivery);
- each type filter: a type of the catalog, ``prefix.*`` or ``*``;
- the payload filter, compiled (:mod:`portico.events.matching`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from portico.core.errors import PorticoError
from portico.events.catalog import EventCatalog
from portico.events.matching import FilterError, compile_filter
from portico.events.ssrf import Destinations, RefusedDestination

__all__ = ["EndpointRefused", "Refusal", "check_endpoint"]


@dataclass(frozen=True, slots=True)
class Refusal:
    pointer: str
    """A JSON Pointer into the request's body: ``/url``, ``/types/1``, ``/filter/data.total``."""
    message: str
    reason: str | None = None
    """For the URL: the SSRF guard's stable reason (``private-address``, ``scheme-not-allowed``)."""


class EndpointRefused(PorticoError):
    """An endpoint that cannot be registered; :attr:`refusals` says every why."""

    def __init__(self, refusals: Sequence[Refusal]) -> None:
        super().__init__("; ".join(f"{r.pointer[1:] or 'endpoint'}: {r.message}" for r in refusals))
        self.refusals = list(refusals)


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def check_endpoint(
    destinations: Destinations,
    catalog: EventCatalog,
    *,
    url: str | None = None,
    types: Sequence[str] | None = None,
    filter: Mapping[str, Any] | None = None,
) -> None:
    """Raise :class:`EndpointRefused` for what is wrong in the parts given (``None``: not
    given, or a filter removed)."""
    refusals: list[Refusal] = []
    if url is not None:
        try:
            destinations.check_url(url)
        except RefusedDestination as exc:
            refusals.append(Refusal("/url", str(exc), exc.reason))
    for index, item in enumerate(types or ()):
        if item != "*" and not item.endswith(".*") and item not in catalog:
            refusals.append(Refusal(f"/types/{index}", f"no event type {item!r} in the catalog"))
    if filter is not None:
        try:
            compile_filter(filter)
        except FilterError as exc:
            for path, message in exc.problems:
                pointer = "/filter" + "".join("/" + _escape(part) for part in path)
                refusals.append(Refusal(pointer, message))
    if refusals:
        raise EndpointRefused(refusals)


def store_changes(body: object, given: Iterable[str]) -> dict[str, Any]:
    """The store's changes (:meth:`~portico.events.endpoints.Endpoints.update`) for the fields
    ``given`` in an endpoint's PATCH body, as both webhook APIs read it: ``ordering`` becomes
    ``ordering_key``, every other field keeps its name."""
    changes: dict[str, Any] = {}
    for name in given:
        if name == "ordering":
            ordering = getattr(body, "ordering", None)
            changes["ordering_key"] = None if ordering is None else ordering.key
        else:
            changes[name] = getattr(body, name)
    return changes
