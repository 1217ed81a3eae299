"""The protocol every policy implements: the one thing the gateway knows of the policies.

The gateway defines it and never imports a policy (as Starlette's core never imports a
middleware); the composition root builds each route's pipeline from the catalogue.

A route's pipeline is the ordered tuple of its policies, built when the runtime snapshot is built.
For each request the gateway calls ``on_request`` of each policy in order. It returns:

- ``None`` to let the request continue,
- a :class:`~portico.gateway.exchange.Reply` to answer it now (the rest of the pipeline is skipped),
- or, only when it must wait for I/O (fetching a JWKS, a Redis counter), an awaitable resolving to
  one of the two. Returning plain values keeps the common path free of task scheduling, which is a
  large share of a Python proxy's cost per request.

After the upstream answered, ``on_response`` of each policy runs in reverse order on the response
head (status and headers) before it is sent to the client; bodies are streamed and not seen here.
Portico's own answers to a routed request pass through ``on_response`` too: a policy's reply (a
401 from ``auth``: the policies after it did not run ``on_request``, but their response fields are
on the 401), a 502/503/504, a 400 or 408 for a broken or stalled body. Answers given before a route
was chosen (400, 404, 405) have no route and no hooks.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol, TypeAlias, runtime_checkable

from portico.gateway.exchange import Exchange, Reply
from portico.gateway.headers import Headers

Outcome: TypeAlias = Reply | Awaitable[Reply | None] | None


@runtime_checkable
class Policy(Protocol):
    @property
    def needs_body(self) -> bool:
        """True makes the gateway read the whole request body (up to the route's
        ``max_body_size``) into ``exchange.body`` before the pipeline runs."""
        ...

    def on_request(self, exchange: Exchange) -> Outcome: ...


@runtime_checkable
class ResponsePolicy(Protocol):
    """The optional hook of a policy that also sees the response head."""

    def on_response(self, exchange: Exchange, status: int, headers: Headers) -> None: ...
