"""What the log says when talking to an upstream fails: a retry, an answer Portico gave in the
upstream's place (502, 503, 504), a response cut short. Failure paths only: a request that goes
well logs nothing here.

Each line names the service and the target and says why (``docs/troubleshooting.md``); the same
values are on the record as fields (``service``, ``target``, ``route``, ``request_id``,
``error``, ``reason``) for the JSON log format. Never the path, the query or a header value.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from portico.gateway.health import counted
from portico.gateway.upstream import Target, UpstreamError

if TYPE_CHECKING:
    from portico.gateway.snapshot import CompiledRoute

log = logging.getLogger("portico.gateway")


def attempt_fields(
    route: CompiledRoute, request_id: str, target: Target, error: UpstreamError
) -> dict[str, object]:
    """The record's fields for a failed attempt."""
    fields = dict(target.health.fields)
    fields["route"] = route.name
    fields["request_id"] = request_id
    fields["error"] = error.kind
    fields["reason"] = error.reason
    return fields


def retrying(
    route: CompiledRoute, request_id: str, failed: Target, error: UpstreamError, next_target: Target
) -> None:
    log.info(
        "%s: request %s failed (%s: %s); retrying on %s",
        failed.health.prefix,
        request_id,
        error.kind,
        error.reason,
        next_target.label,
        extra=attempt_fields(route, request_id, failed, error),
    )


def unexpected(route: CompiledRoute, request_id: str, target: Target, error: UpstreamError) -> None:
    """A bug while connecting: with the traceback."""
    log.exception(
        "%s: request %s: %s",
        target.health.prefix,
        request_id,
        error.reason,
        extra=attempt_fields(route, request_id, target, error),
    )


def gave_up(
    route: CompiledRoute,
    request_id: str,
    failed: Target,
    error: UpstreamError,
    attempts: int,
    status: int,
) -> None:
    """A 502 or 504: ``failed`` is the last target tried, ``error`` its failure."""
    fields = attempt_fields(route, request_id, failed, error)
    fields["status"] = status
    log.warning(
        "%s: request %s answered %d after %s: %s (%s)",
        failed.health.prefix,
        request_id,
        status,
        counted(attempts, "attempt"),
        error.reason,
        error.kind,
        extra=fields,
    )


def no_target(route: CompiledRoute, request_id: str, status: int) -> None:
    """A 503: no target of the service could take the request; say what each one is doing."""
    service = route.service
    states = "; ".join(f"{t.label} {t.health.unavailable_because()}" for t in service.targets)
    log.warning(
        "service %r: request %s answered %d: no target available (%s)",
        service.name,
        request_id,
        status,
        states,
        extra={
            "service": service.name,
            "route": route.name,
            "request_id": request_id,
            "status": status,
            "error": "no-target",
        },
    )


def cut_short(route: CompiledRoute, request_id: str, target: Target, error: UpstreamError) -> None:
    """The upstream failed after the response head was sent: the client's connection is cut."""
    log.warning(
        "%s: request %s: response cut short after its head: %s (%s); "
        "the client connection was closed",
        target.health.prefix,
        request_id,
        error.reason,
        error.kind,
        extra=attempt_fields(route, request_id, target, error),
    )
