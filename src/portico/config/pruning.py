"""The checks that span sections, also when some entries are invalid.

A route naming an unknown service, or a capability's :class:`~portico.config.checks.Checks`,
needs a validated :class:`PorticoConfig`. When validation failed, they run on the file without
what failed (the value of a field, a list, or a whole route, service, consumer... when that is
what stays invalid), so one run of ``portico check`` reports every problem rather than one layer
of problems at a time.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from portico.config.checks import Checks, Finding, Location
from portico.config.model import PorticoConfig

__all__ = ["cross_section_findings"]

# Each round leaves out what the previous one found invalid; real files settle in two or three.
_MAX_PRUNING_ROUNDS = 10


def cross_section_findings(
    config: PorticoConfig | None,
    data: Any,
    errors: list[ErrorDetails],
    checks: Checks,
    context: dict[str, Any] | None = None,
) -> list[Finding]:
    """The config's own cross-section errors and the capabilities' checks, located in the file.
    ``context`` is the loader's validation context (the config file's directory).

    ``config`` is the validated file, or ``None`` when ``errors`` are why it is not. A finding
    that may only be a consequence of something left out (a route naming a service that failed,
    ``mtls`` when ``gateway.tls`` failed) is not reported: it names what was left out.
    """
    if config is not None:
        return [*config.semantic_errors(), *checks.findings(config)]
    if not isinstance(data, dict):
        return []
    dropped: set[Location] = set()
    pruned, kept = data, _route_indexes(data)
    for _ in range(_MAX_PRUNING_ROUNDS):
        units = {_unit(tuple(e["loc"]), pruned, kept) for e in errors}
        if None in units or units <= dropped:
            return []
        dropped |= {unit for unit in units if unit is not None}
        pruned, kept = _without(data, dropped)
        try:
            partial = PorticoConfig.model_validate(pruned, context=context)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            continue
        findings = [*partial.semantic_errors(), *checks.findings(partial)]
        return [
            (_original(loc, kept), message)
            for loc, message in findings
            if not _may_follow_from(message, dropped)
        ]
    return []


def _route_indexes(data: dict[str, Any]) -> list[int]:
    routes = data.get("routes")
    return list(range(len(routes))) if isinstance(routes, list) else []


def _original(loc: Location, kept: list[int]) -> Location:
    """``loc`` with the file's index of its route, from the routes left after pruning."""
    match loc:
        case ("routes", int(i), *rest) if i < len(kept):
            return ("routes", kept[i], *rest)
    return loc


def _unit(loc: Location, pruned: dict[str, Any], kept: list[int]) -> Location | None:
    """What to leave out for an error at ``loc`` (in ``pruned``), in the file's terms: the
    deepest value of the file on the way to ``loc``. Never one item of a list but a route (the
    routes' indexes are mapped back; other lists are left out whole)."""
    unit: list[str | int] = []
    current: Any = pruned
    for item in loc:
        if not _holds(current, item):
            break
        current = current[item]
        unit.append(item)
    while unit and isinstance(unit[-1], int) and not (len(unit) == 2 and unit[0] == "routes"):
        unit.pop()
    return _original(tuple(unit), kept) if unit else None


def _holds(value: Any, item: str | int) -> bool:
    """Whether ``value[item]`` is a value of the file (a key of a mapping, an index of a list)."""
    if isinstance(value, dict):
        return item in value
    return isinstance(value, list) and isinstance(item, int) and 0 <= item < len(value)


def _without(data: dict[str, Any], dropped: set[Location]) -> tuple[dict[str, Any], list[int]]:
    """A copy of ``data`` without the ``dropped`` values, and the file's indexes of the routes
    it keeps."""
    pruned = copy.deepcopy(data)
    gone_routes = {loc[1] for loc in dropped if len(loc) == 2 and loc[0] == "routes"}
    for loc in dropped:
        if loc[0] == "routes" and len(loc) == 2:
            continue
        parent: Any = pruned
        for item in loc[:-1]:
            parent = parent[item] if _holds(parent, item) else None
        if isinstance(parent, dict):
            parent.pop(loc[-1], None)
    kept: list[int] = []
    routes = pruned.get("routes")
    if isinstance(routes, list):
        kept = [i for i in range(len(routes)) if i not in gone_routes]
        pruned["routes"] = [routes[i] for i in kept]
    return pruned, kept


def _may_follow_from(message: str, dropped: set[Location]) -> bool:
    """Whether ``message`` names something left out: a section (``gateway.tls``, for any value
    left out in it), a service or an identity provider (``'billing'``)."""
    for loc in dropped:
        if loc[0] == "routes":
            continue
        names = [str(item) for item in loc]
        first = 2 if len(names) > 1 else 1
        if any(".".join(names[:k]) in message for k in range(first, len(names) + 1)):
            return True
        named = names[1:2] if names[0] == "services" else []
        if names[:2] == ["identity", "providers"]:
            named = names[2:3]
        if any(repr(name) in message for name in named):
            return True
    return False
