"""The end of an exchange: what the completion hooks are told.

When the last byte of the response has been handed to the client's socket, or the exchange ended
otherwise (the client went away, the upstream broke off a response already under way, Portico
answered itself), the connection builds one :class:`Completion` and gives it to the process-wide
hooks of the snapshot (the metrics, the access log) and to the ``on_complete`` of the route's
policies (:class:`~portico.gateway.policy.CompletionPolicy`). Hooks run after the client has its
answer, so nothing they do delays it; they must not block.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from portico.gateway.exchange import Exchange

if TYPE_CHECKING:
    from portico.gateway.proxy import Forward
    from portico.gateway.request import Request
    from portico.gateway.snapshot import CompiledRoute

log = logging.getLogger("portico.gateway")

CLIENT_CLOSED = 499
"""The status recorded when the client went away before any response reached it (nginx's
convention: it is counted among the 4xx, and nothing was sent)."""

COMPLETE = ""
CLIENT_GONE = "client_closed"
"""The client closed the connection before the response was complete."""
UPSTREAM_BROKE = "upstream_broke"
"""The upstream failed after the response head was sent: the client's connection was cut."""


class Completion:
    """One finished exchange, as the completion hooks see it."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "client_ip",
        "exchange",
        "failure",
        "method",
        "path",
        "request_id",
        "route",
        "seconds",
        "status",
        "target",
        "upstream_seconds",
    )

    def __init__(
        self,
        *,
        request_id: str,
        method: str,
        path: str,
        status: int,
        client_ip: str,
        route: CompiledRoute | None,
        exchange: Exchange | None,
        bytes_in: int,
        bytes_out: int,
        seconds: float,
        upstream_seconds: float,
        target: str,
        failure: str,
    ) -> None:
        self.request_id = request_id
        self.method = method
        self.path = path
        """The path as the client sent it, without the query string (which may hold secrets)."""
        self.status = status
        """The status the client got; :data:`CLIENT_CLOSED` when it got nothing."""
        self.client_ip = client_ip
        self.route = route
        """The matched route; ``None`` when Portico answered before one was chosen."""
        self.exchange = exchange
        """The exchange the policies saw; ``None`` when the request was refused before one."""
        self.bytes_in = bytes_in
        """Bytes of the request as received: the head as sent, and the body's content (a chunked
        body's framing is not counted)."""
        self.bytes_out = bytes_out
        """Bytes of the response handed to the client's socket: head and body."""
        self.seconds = seconds
        """From the first byte of the request head to the end."""
        self.upstream_seconds = upstream_seconds
        """From sending the request head upstream to the response head; -1.0 without one."""
        self.target = target
        """The upstream target of the last attempt (its origin), or empty."""
        self.failure = failure
        """:data:`COMPLETE`, :data:`CLIENT_GONE` or :data:`UPSTREAM_BROKE`."""

    @property
    def consumer(self) -> str | None:
        exchange = self.exchange
        identity = exchange.identity if exchange is not None else None
        return identity.consumer if identity is not None else None

    @property
    def tenant(self) -> str | None:
        exchange = self.exchange
        identity = exchange.identity if exchange is not None else None
        return identity.tenant if identity is not None else None


CompletionHook: TypeAlias = Callable[[Completion], None]
"""A process-wide hook: the metrics and the access log are two."""


def complete(
    request: Request,
    exchange: Exchange | None,
    forward: Forward | None,
    peer_ip: str,
    hooks: tuple[CompletionHook, ...],
) -> None:
    """Tell ``hooks`` and the route's ``on_complete`` policies how ``request`` ended. A hook
    that fails is logged and the others are still told."""
    target = forward.target if forward is not None else None
    route = request.route
    completion = Completion(
        request_id=request.request_id,
        method=request.method,
        path=request.log_path or "-",
        status=request.status or CLIENT_CLOSED,
        client_ip=exchange.client_ip if exchange is not None else peer_ip,
        route=route,
        exchange=exchange,
        bytes_in=request.head_bytes + request.body.received,
        bytes_out=request.bytes_out,
        seconds=time.perf_counter() - request.t0 if request.t0 else 0.0,
        upstream_seconds=forward.upstream_seconds if forward is not None else -1.0,
        target=target.origin if target is not None else "",
        failure=request.failure or COMPLETE,
    )
    for hook in hooks:
        try:
            hook(completion)
        except Exception:
            log.exception("a completion hook failed")
    if exchange is not None and route is not None:
        for policy in route.completion_pipeline:
            try:
                policy.on_complete(exchange, completion)
            except Exception:
                log.exception("a policy's on_complete failed")
