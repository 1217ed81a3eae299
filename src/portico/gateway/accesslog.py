"""The access log: one record per exchange, written by a completion hook.

The record goes to the ``portico.access`` logger (see ``docs/configuration.md``,
``gateway.access_log``) with the message ``GET /path 200`` and its fields as the record's
attributes (``extra=``): the log format of the ``portico`` command writes them as ``key=value``
pairs for a person, or as members of the line's JSON object for a collector. The fields name the
route, the service and the target that answered, the consumer and tenant when the request was
authenticated, the status, the bytes each way and the durations with sub-millisecond precision.
The path goes without its query string, which may hold credentials; header values are never
logged.
"""

from __future__ import annotations

import logging

from portico.gateway.completion import Completion

access_log = logging.getLogger("portico.access")


def write_access_line(completion: Completion) -> None:
    """The completion hook of ``gateway.access_log: true``."""
    route = completion.route
    line: dict[str, object] = {
        "request_id": completion.request_id,
        "client": completion.client_ip,
        "method": completion.method,
        "path": completion.path,
        "status": completion.status,
        "route": route.name if route is not None else None,
        "service": route.service.name if route is not None else None,
        "target": completion.target or None,
        "consumer": completion.consumer,
        "tenant": completion.tenant,
        "bytes_in": completion.bytes_in,
        "bytes_out": completion.bytes_out,
        "duration_ms": round(completion.seconds * 1000, 3),
        "upstream_ms": (
            round(completion.upstream_seconds * 1000, 3)
            if completion.upstream_seconds >= 0.0
            else None
        ),
    }
    if completion.failure:
        line["failure"] = completion.failure
    access_log.info("%s %s %d", completion.method, completion.path, completion.status, extra=line)
