"""The catalogue of policy types a route may name in its ``policies`` list.

Each type has a Pydantic model for its settings (validated by ``portico check`` with file:line
errors) and a ``build`` function that turns validated settings into a policy object once, when the
runtime snapshot is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from portico.config.model import PolicySpec, PorticoConfig
    from portico.policies.base import Policy
    from portico.runtime import Extensions


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a policy may consult when it is built (never per request)."""

    config: PorticoConfig
    route_name: str
    extensions: Extensions


@dataclass(frozen=True, slots=True)
class PolicyType:
    name: str
    settings: type[BaseModel]
    build: Callable[[Any, BuildContext], Policy]


_TYPES: dict[str, PolicyType] = {}


def register(
    name: str, settings: type[BaseModel]
) -> Callable[[Callable[[Any, BuildContext], Policy]], Callable[[Any, BuildContext], Policy]]:
    def decorate(
        build: Callable[[Any, BuildContext], Policy],
    ) -> Callable[[Any, BuildContext], Policy]:
        _TYPES[name] = PolicyType(name, settings, build)
        return build

    return decorate


def _load_builtins() -> None:
    # Imported for their @register side effect; the list is the catalogue of built-in policies.
    from portico.policies import auth, headers, ip_rules  # noqa: F401


_builtins_loaded = False


def policy_types() -> dict[str, PolicyType]:
    # A flag, not "is _TYPES empty": importing one policy module directly (portico.policies.auth)
    # registers its type, and the other built-ins must still be loaded.
    global _builtins_loaded
    if not _builtins_loaded:
        _load_builtins()
        _builtins_loaded = True
    return _TYPES


def _settings_of(spec: PolicySpec) -> dict[str, Any]:
    return dict(spec.model_extra or {})


def policy_errors(spec: PolicySpec) -> list[tuple[tuple[str | int, ...], str]]:
    """Validation errors of one policy entry, located relative to the entry."""
    types = policy_types()
    kind = types.get(spec.type)
    if kind is None:
        known = ", ".join(sorted(types))
        return [(("type",), f"unknown policy type {spec.type!r} (known: {known})")]
    try:
        kind.settings.model_validate(_settings_of(spec))
    except ValidationError as exc:
        return [(tuple(e["loc"]), e["msg"]) for e in exc.errors()]
    return []


def build_policy(spec: PolicySpec, context: BuildContext) -> Policy:
    kind = policy_types()[spec.type]
    return kind.build(kind.settings.model_validate(_settings_of(spec)), context)
