"""The response body on a route whose policies want to see it (``gateway/policy.py``).

A :class:`BodyHooks` exists only for such a response; a route without body hooks never makes one,
and its bodies are relayed as the upstream sends them. With whole-body policies the body is held
(nothing is sent) until it is whole or over the smallest of their limits; with streaming policies
each chunk goes through them on its way. This module decides; the
:class:`~portico.gateway.proxy.Forward` that owns it writes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from portico.gateway import problems
from portico.gateway.exchange import Exchange, Reply
from portico.gateway.headers import Headers, decoded

if TYPE_CHECKING:
    from portico.gateway.snapshot import CompiledRoute

log = logging.getLogger("portico.gateway")


class BodyHooks:
    __slots__ = (
        "_headers",
        "_held",
        "_held_size",
        "drop",
        "exchange",
        "fields",
        "holding",
        "limit",
        "route",
        "status",
    )

    def __init__(
        self,
        route: CompiledRoute,
        exchange: Exchange,
        status: int,
        fields: list[tuple[bytes, bytes]],
        drop: frozenset[bytes],
    ) -> None:
        self.route = route
        self.exchange = exchange
        self.status = status
        self.fields = fields
        """The response's fields as the head hooks left them, while the head is held."""
        self.drop = drop
        self.holding = bool(route.whole_body_pipeline)
        """The head and the body wait for the whole-body policies."""
        self.limit = route.response_body_limit if self.holding else 0
        """The smallest limit of the whole-body policies: the most bytes held."""
        self._held: list[bytes] = []
        self._held_size = 0
        self._headers: Headers | None = None

    def filter(self, data: bytes, end: bool) -> bytes:
        """A chunk through the streaming policies: what to send instead."""
        exchange = self.exchange
        for policy in self.route.chunk_pipeline:
            data = policy.on_response_chunk(exchange, data, end)
        return data

    def hold(self, data: bytes) -> bool:
        """Keep a chunk; ``True`` once the body is over the whole-body policies' limit."""
        self._held.append(data)
        self._held_size += len(data)
        return self._held_size > self.limit

    def take_held(self) -> bytes:
        held, self._held = self._held, []
        return b"".join(held)

    @property
    def headers(self) -> Headers:
        """The held head's fields as text, for the whole-body policies to edit."""
        headers = self._headers
        if headers is None:
            headers = self._headers = decoded(self.fields)
        return headers

    def over_limit(self) -> Reply | None:
        """Ask the whole-body policies about a body over their limit: ``None`` lets it stream on
        untouched, a reply is sent instead."""
        exchange = self.exchange
        for policy in self.route.whole_body_pipeline:
            outcome = policy.on_response_body(exchange, self.status, self.headers, None)
            if outcome is None:
                continue
            if isinstance(outcome, Reply):
                return outcome
            log.error("a policy returned a body for a body over its limit")
            return problems.problem(problems.INTERNAL_ERROR, exchange.request_id)
        self.holding = False
        return None

    def whole(self) -> bytes | Reply:
        """The whole body through every body policy: what to send, or a reply instead."""
        exchange = self.exchange
        body = self.take_held()
        for policy in self.route.whole_body_pipeline:
            outcome = policy.on_response_body(exchange, self.status, self.headers, body)
            if outcome is None:
                continue
            if isinstance(outcome, Reply):
                return outcome
            body = outcome
        self.holding = False
        return self.filter(body, True) if self.route.chunk_pipeline else body
