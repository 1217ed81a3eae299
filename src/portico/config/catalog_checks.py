"""What ``portico check`` says of the catalog settings that span services (docs/catalog.md)."""

from __future__ import annotations

from portico.config.checks import Finding
from portico.config.model import PorticoConfig

__all__ = ["catalog_errors", "catalog_warnings"]


def catalog_errors(config: PorticoConfig) -> list[Finding]:
    """Two services that say they are the same version of the same API."""
    errors: list[Finding] = []
    seen: dict[tuple[str, str], str] = {}
    for name, service in config.services.items():
        if service.version is None:
            continue
        key = (service.api or name, service.version)
        if key in seen:
            errors.append(
                (
                    ("services", name, "version"),
                    f"service {seen[key]!r} is already version {key[1]!r} of API {key[0]!r}",
                )
            )
        else:
            seen[key] = name
    return errors


def catalog_warnings(config: PorticoConfig) -> list[Finding]:
    """Allowed, and worth knowing: the routes of a service in design are not served; a service
    named ``openapi`` is in the admin API's catalog list, but ``/catalog/openapi`` is the merged
    document, not its entry."""
    warnings: list[Finding] = []
    for name, service in config.services.items():
        if service.lifecycle.state == "design":
            routes = [r.name for r in config.routes if r.service == name]
            if routes:
                warnings.append(
                    (
                        ("services", name, "lifecycle"),
                        f"the service is in design: its routes ({', '.join(routes)}) are not "
                        "served (404 route-not-found) until its state changes",
                    )
                )
        if name == "openapi":
            warnings.append(
                (
                    ("services", name),
                    "GET /admin/v1/catalog/openapi is the merged document, not this service's "
                    "entry: find it in the list, GET /admin/v1/catalog?api=openapi",
                )
            )
    return warnings
