"""What ``portico check`` says of the services' OpenAPI documents and the ``validation``
entries: each document is read, checked against its version's meta-schema and compiled (every
problem one line naming the document's file and line), and a ``validation`` entry needs its
service to have a document."""

from __future__ import annotations

from collections.abc import Iterator

from portico.config.checks import Finding
from portico.config.model import PorticoConfig

__all__ = ["openapi_errors"]

_TYPE = "validation"


def openapi_errors(config: PorticoConfig) -> Iterator[Finding]:
    if any(service.openapi is not None for service in config.services.values()):
        yield from _document_errors(config)
    yield from _entry_errors(config)


def _document_errors(config: PorticoConfig) -> Iterator[Finding]:
    # Imported when a config has a document: YAML's composer and jsonschema-rs are not free.
    from portico.policies.validation.compiler import load_table
    from portico.policies.validation.document import DocumentError

    for name, service in config.services.items():
        if service.openapi is None:
            continue
        try:
            load_table(service.openapi)
        except DocumentError as exc:
            for problem in exc.problems:
                yield ("services", name, "openapi"), problem


def _entry_errors(config: PorticoConfig) -> Iterator[Finding]:
    for name, service in config.services.items():
        if service.openapi is not None:
            continue
        for j, spec in enumerate(service.policies):
            if spec.type == _TYPE:
                yield (
                    ("services", name, "policies", j, "type"),
                    f"the validation policy needs services.{name}.openapi",
                )
    for i, route in enumerate(config.routes):
        owner = config.services.get(route.service)
        if owner is None or owner.openapi is not None:
            continue
        for j, spec in enumerate(route.policies):
            if spec.type == _TYPE:
                yield (
                    ("routes", i, "policies", j, "type"),
                    f"the validation policy needs services.{route.service}.openapi",
                )
