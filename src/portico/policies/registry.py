"""The registry of policy types a route may name in its ``policies`` list.

Each type has a Pydantic model for its settings (validated by ``portico check`` with file:line
errors), a ``build`` function that turns validated settings into a policy object once, when the
runtime snapshot is built, and optionally ``checks``: its cross-section checks (a setting that
needs another section of the config). ``config/`` keeps a policy entry opaque; the composition
root hands :func:`route_policy_errors` and :func:`settings_model` to the loader. The built-in
types are listed in :mod:`portico.policies.catalogue`; this module imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from portico.config.checks import Finding, Location
from portico.config.model import PolicySpec, PorticoConfig
from portico.gateway.policy import Policy
from portico.identity.context import BuildContext

__all__ = [
    "BuildContext",
    "PolicyType",
    "build_policy",
    "entry_errors",
    "policy_types",
    "register",
    "route_policy_errors",
    "settings_model",
]

PolicyChecks = Callable[[Any, PorticoConfig], Iterable[Finding]]
"""``checks(settings, config)``: findings located relative to the policy entry."""


@dataclass(frozen=True, slots=True)
class PolicyType:
    name: str
    settings: type[BaseModel]
    build: Callable[[Any, BuildContext], Policy]
    checks: PolicyChecks | None = None


_TYPES: dict[str, PolicyType] = {}


def register(
    name: str, settings: type[BaseModel], checks: PolicyChecks | None = None
) -> Callable[[Callable[[Any, BuildContext], Policy]], Callable[[Any, BuildContext], Policy]]:
    def decorate(
        build: Callable[[Any, BuildContext], Policy],
    ) -> Callable[[Any, BuildContext], Policy]:
        _TYPES[name] = PolicyType(name, settings, build, checks)
        return build

    return decorate


def policy_types() -> dict[str, PolicyType]:
    """The registered types (the catalogue's, once :mod:`portico.policies.catalogue` is loaded)."""
    return _TYPES


def _settings_of(spec: PolicySpec) -> dict[str, Any]:
    return dict(spec.model_extra or {})


def entry_errors(spec: PolicySpec, config: PorticoConfig) -> list[Finding]:
    """Validation errors of one policy entry, and its cross-section checks, located relative to
    the entry."""
    kind = _TYPES.get(spec.type)
    if kind is None:
        known = ", ".join(sorted(_TYPES))
        return [(("type",), f"unknown policy type {spec.type!r} (known: {known})")]
    try:
        settings = kind.settings.model_validate(_settings_of(spec))
    except ValidationError as exc:
        return [(tuple(e["loc"]), e["msg"]) for e in exc.errors()]
    return list(kind.checks(settings, config)) if kind.checks is not None else []


def route_policy_errors(config: PorticoConfig) -> list[Finding]:
    """Every route's policy entries checked by their own types (a check of the config loader)."""
    errors: list[Finding] = []
    for i, route in enumerate(config.routes):
        for j, spec in enumerate(route.policies):
            base: Location = ("routes", i, "policies", j)
            errors.extend(((*base, *loc), message) for loc, message in entry_errors(spec, config))
    return errors


def settings_model(type_name: str) -> type[BaseModel] | None:
    """The settings model of a policy type, for the loader's "did you mean" on an unknown key."""
    kind = _TYPES.get(type_name)
    return kind.settings if kind is not None else None


def build_policy(spec: PolicySpec, context: BuildContext) -> Policy:
    kind = _TYPES[spec.type]
    return kind.build(kind.settings.model_validate(_settings_of(spec)), context)
