"""What a service's lifecycle (docs/catalog.md#lifecycle) makes its routes run, as policy
entries of the ``deprecation`` type, so that the request-time code is that policy's:

- ``deprecated``: a ``deprecation`` entry with the lifecycle's ``since``, ``sunset`` and links
  (the ``Deprecation``, ``Sunset`` and ``Link`` fields, 410 after the sunset, the calls counted
  by consumer). An entry of the service's or the route's own ``policies`` wins: it is the more
  precise of the two, written for that service or route;
- ``retired``: a ``deprecation`` entry with ``retired: true``: 410 ``route-sunset`` on every
  request, whatever entry the service or the route has;
- ``design``: nothing here: the composition root does not serve the routes at all
  (:func:`served`).

Entries made here, never written by the user, are checked as a written one would be
(:func:`portico.policies.registry.route_policy_errors`), so that what ``portico check``
accepts always builds. :func:`portico.policies.registry.effective_policies` puts them in
front of the route's entries.
"""

from __future__ import annotations

from portico.config.model import PolicySpec, Service

__all__ = ["DEPRECATION", "lifecycle_entry", "served"]

DEPRECATION = "deprecation"
"""The policy type the lifecycle's entries are (named, never imported: policies/catalogue.py)."""


def served(service: Service) -> bool:
    """Whether the routes of ``service`` are served: not while it is in design."""
    return service.lifecycle.state != "design"


def lifecycle_entry(service: Service) -> PolicySpec | None:
    """The ``deprecation`` entry a deprecated or retired service gives each of its routes."""
    lifecycle = service.lifecycle
    if lifecycle.state not in ("deprecated", "retired"):
        return None
    settings: dict[str, object] = {"type": DEPRECATION}
    if lifecycle.state == "retired":
        settings["retired"] = True
    given = {
        "since": lifecycle.since,
        "sunset": lifecycle.sunset,
        "link": lifecycle.link,
        "sunset_link": lifecycle.sunset_link,
    }
    settings.update({key: value for key, value in given.items() if value is not None})
    return PolicySpec.model_validate(settings)
