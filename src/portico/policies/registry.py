"""What a policy type is, and how a route's policy entries are checked and built with them.

A policy's folder declares one :class:`PolicyType` in its ``__init__.py``: the Pydantic model of
its settings (validated by ``portico check`` with file:line errors), a ``build`` function that
turns validated settings into a policy object once, when the runtime snapshot is built (given by
reference, ``"portico.policies.cors.policy:build"``, so that checking a config never imports the
request-time code), and
optionally ``checks``: its cross-section checks (a setting that needs another section of the
config). :mod:`portico.policies.catalogue` names the built-in types; the functions here take that
catalogue from the composition root, which hands :func:`route_policy_errors` and
:func:`settings_model` to the config loader. ``config/`` keeps a policy entry opaque.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from portico.config.checks import Finding, Location
from portico.config.model import PolicySpec, PorticoConfig, Route
from portico.config.reporting import without_consequences
from portico.core.extensions import Catalogue, Deferred, ExtensionUnavailable
from portico.gateway.policy import Policy
from portico.identity.context import BuildContext
from portico.policies.lifecycle import DEPRECATION, lifecycle_entry

__all__ = [
    "BuildContext",
    "PolicyType",
    "PolicyTypes",
    "build_policy",
    "effective_policies",
    "entry_errors",
    "per_process_state_errors",
    "route_policy_errors",
    "settings_model",
]

S_co = TypeVar("S_co", bound=BaseModel, covariant=True)
# Covariant, so that a catalogue holds PolicyType[BaseModel] whatever each type's settings are:
# a type's settings are only ever made by its own model and handed to its own build and checks
# (the methods below), never given from outside.


class PolicyType(Generic[S_co]):
    """One policy type, as its folder declares it:
    ``POLICY = PolicyType(HeadersSettings, "portico.policies.headers.policy:build")``."""

    __slots__ = ("_build", "_checks", "settings", "shares_state")

    def __init__(
        self,
        settings: type[S_co],
        build: Callable[[S_co, BuildContext], Policy] | str,
        checks: Callable[[S_co, PorticoConfig], Iterable[Finding]] | None = None,
        *,
        shares_state: bool = False,
    ) -> None:
        self.settings = settings
        self.shares_state = shares_state
        """True when the policy keeps state every gateway process must see alike (counters,
        cached responses, idempotency records) in ``BuildContext.extensions.shared``: with more
        than one process, such a policy needs the config's ``redis`` section."""
        """The model of the entry's keys other than ``type``."""
        self._build: Deferred[Callable[[S_co, BuildContext], Policy]] = Deferred(build)
        """Imported on the first build, not when a config is checked."""
        self._checks = checks
        """``checks(settings, config)``: findings located relative to the policy entry."""

    def errors(self, entry: Mapping[str, object], config: PorticoConfig) -> list[Finding]:
        """The entry's settings errors, then its cross-section checks, relative to the entry."""
        try:
            settings = self.settings.model_validate(entry)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            return [(tuple(e["loc"]), e["msg"]) for e in without_consequences(errors)]
        return list(self._checks(settings, config)) if self._checks is not None else []

    def build(self, entry: Mapping[str, object], context: BuildContext) -> Policy:
        """The policy object of a validated entry, for one route of one snapshot."""
        return self._build.get()(self.settings.model_validate(entry), context)


PolicyTypes = Catalogue[PolicyType[BaseModel]]
"""The policy types a route may name in its ``policies`` list, by name."""


def _settings_of(spec: PolicySpec) -> dict[str, object]:
    return dict(spec.model_extra or {})


def entry_errors(types: PolicyTypes, spec: PolicySpec, config: PorticoConfig) -> list[Finding]:
    """Validation errors of one policy entry, and its cross-section checks, located relative to
    the entry."""
    try:
        kind = types.get(spec.type)
    except ExtensionUnavailable as exc:
        return [(("type",), str(exc))]
    return kind.errors(_settings_of(spec), config)


def route_policy_errors(types: PolicyTypes, config: PorticoConfig) -> list[Finding]:
    """Every service's and route's policy entries checked by their own types (a check of the
    config loader)."""
    errors: list[Finding] = []
    for name, service in config.services.items():
        for j, spec in enumerate(service.policies):
            at: Location = ("services", name, "policies", j)
            errors.extend(
                ((*at, *loc), message) for loc, message in entry_errors(types, spec, config)
            )
        made = lifecycle_entry(service)
        if made is not None:
            # Made from the lifecycle, which the config validated: a finding here is a bug of
            # the two models disagreeing, reported where the user can see what made it.
            errors.extend(
                (("services", name, "lifecycle"), f"{'.'.join(map(str, loc))}: {message}")
                for loc, message in entry_errors(types, made, config)
            )
    for i, route in enumerate(config.routes):
        for j, spec in enumerate(route.policies):
            base: Location = ("routes", i, "policies", j)
            errors.extend(
                ((*base, *loc), message) for loc, message in entry_errors(types, spec, config)
            )
    return errors


def effective_policies(config: PorticoConfig, route: Route) -> tuple[PolicySpec, ...]:
    """The policy entries a route runs: its service's first, then its own. A route that has
    entries of a ``type`` the service also has runs its own of that type, not the service's.

    A deprecated service's lifecycle comes before them all as a ``deprecation`` entry, unless
    one of them is a ``deprecation`` entry already; a retired service's replaces any
    (:mod:`portico.policies.lifecycle`)."""
    service = config.services.get(route.service)
    inherited = service.policies if service is not None else ()
    own = {spec.type for spec in route.policies}
    specs = (*(spec for spec in inherited if spec.type not in own), *route.policies)
    made = lifecycle_entry(service) if service is not None else None
    if made is None or service is None:
        return specs
    if service.lifecycle.state == "retired":
        return (made, *(spec for spec in specs if spec.type != DEPRECATION))
    if any(spec.type == DEPRECATION for spec in specs):
        return specs
    return (made, *specs)


def per_process_state_errors(
    types: PolicyTypes, config: PorticoConfig, workers: int | None = None
) -> list[Finding]:
    """With several gateway processes (``workers``, else ``gateway.workers``) and no ``redis``
    section, each policy that keeps shared state would keep it per process: a limit of 100 a
    minute would silently become 100 a minute per process. Each such entry is an error."""
    if config.redis is not None:
        return []
    if workers is None:
        from portico.config.workers import worker_count

        workers = worker_count(config)
    if workers <= 1:
        return []
    message = (
        f"the {{kind}} policy keeps state every gateway process must share, and {workers} "
        "processes would each keep their own: add a redis section (docs/shared-state.md) or "
        "run one worker"
    )
    errors: list[Finding] = []
    located: list[tuple[Location, PolicySpec]] = [
        (("services", name, "policies", j), spec)
        for name, service in config.services.items()
        for j, spec in enumerate(service.policies)
    ]
    located += [
        (("routes", i, "policies", j), spec)
        for i, route in enumerate(config.routes)
        for j, spec in enumerate(route.policies)
    ]
    for at, spec in located:
        try:
            kind = types.get(spec.type)
        except ExtensionUnavailable:
            continue  # reported by entry_errors
        if kind.shares_state:
            errors.append(((*at, "type"), message.format(kind=spec.type)))
    return errors


def settings_model(types: PolicyTypes, type_name: str) -> type[BaseModel] | None:
    """The settings model of a policy type, for the loader's "did you mean" on an unknown key;
    ``None`` when the type is unknown or not installed (reported by :func:`entry_errors`)."""
    try:
        return types.get(type_name).settings
    except ExtensionUnavailable:
        return None


def build_policy(types: PolicyTypes, spec: PolicySpec, context: BuildContext) -> Policy:
    return types.get(spec.type).build(_settings_of(spec), context)
