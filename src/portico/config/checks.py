"""The capabilities' own checks of a config, as the loader runs them.

``config/`` knows no capability: a policy entry is an opaque record keyed by its ``type`` (as
Kong's plugin ``config``), and settings that span sections (a route's ``auth`` listing ``mtls``
needs ``gateway.tls``) are checked by the capability they belong to. The composition root
(:mod:`portico.assembly`) gathers those checks into one :class:`Checks` and hands it to
:func:`~portico.config.loader.load_config`, which reports their findings at the file line and
field of their location, with every other issue of the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pydantic import BaseModel

from portico.config.model import PorticoConfig

__all__ = ["NO_CHECKS", "Checks", "ConfigCheck", "Finding", "Location"]

Location = tuple[str | int, ...]
"""Where a finding is, as keys and indexes from the top of the document:
``("routes", 2, "policies", 0, "methods", 1)``."""
Finding = tuple[Location, str]
ConfigCheck = Callable[[PorticoConfig], Iterable[Finding]]
"""A capability's check of a validated config; it must not raise on any valid config."""


@dataclass(frozen=True, slots=True)
class Checks:
    checks: tuple[ConfigCheck, ...] = ()
    policy_settings: Callable[[str], type[BaseModel] | None] | None = None
    """The settings model of a policy type, to suggest the closest known key for an unknown one."""
    warnings: tuple[ConfigCheck, ...] = ()
    """Checks of a valid config whose findings are warnings (``portico check`` prints them and
    accepts the file): a choice that is allowed, and that a reader should know was made."""

    def findings(self, config: PorticoConfig) -> list[Finding]:
        return [finding for check in self.checks for finding in check(config)]

    def warning_findings(self, config: PorticoConfig) -> list[Finding]:
        return [finding for check in self.warnings for finding in check(config)]


NO_CHECKS = Checks()
"""The config's own rules only (every section's fields, the references between its sections)."""
