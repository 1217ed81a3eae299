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
head (status and headers) before it is sent to the client. A policy whose work on the head is
only to add fields (in place of the upstream's fields of the names it adds, which the gateway
takes out of every response of the route before the policies run) may also have the lighter
:class:`FieldsResponsePolicy` hook: when every response policy of a route has it, the upstream's
head is relayed as the bytes it came in, never decoded to text, and each policy appends its
fields as bytes. Portico's own answers to a routed request pass through ``on_response`` too: a
policy's reply (a 401 from ``auth``: the policies after it did not run ``on_request``, but their
response fields are on the 401), a 502/503/504, a 400 or 408 for a broken or stalled body, a 413
for a body over the route's limit, a refused upgrade. Answers given before a route was chosen
(400, 404, 405) have no route and no hooks.

The response body of the upstream reaches two optional hooks, also in reverse order:

- :class:`WholeResponsePolicy`: ``on_response_body`` gets the whole body, up to the policy's
  ``response_body_limit``, before anything is sent; it may replace the body (the length is then
  computed again), leave it, or answer with a :class:`~portico.gateway.exchange.Reply` instead
  (a masking policy that could not see the body refuses to let it through). Over the limit it is
  called once with ``None``: it returns ``None`` to let the body stream as it is, or a Reply.
- :class:`StreamingResponsePolicy`: ``on_response_chunk`` gets each chunk as it streams and
  returns what to send instead (``b""`` holds it back); ``end`` is true once, with the last (maybe
  empty) chunk. Such a route sends the body chunked, since its length may change.

The whole-body policies run first, then the streaming ones see the resulting body as one chunk.
Responses without a body (HEAD, 204, 304, a 101 switch) reach neither. A route without body hooks
relays the upstream's bytes untouched, with flat memory.

A CORS preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``, the Fetch
standard's "CORS-preflight request") is routed as the request it announces: admission looks up
the route that would serve the requested method on that path. When that route has a
:class:`PreflightPolicy`, the first one in its pipeline answers the preflight with
``on_preflight``, before any ``on_request`` runs (a browser never sends credentials on a
preflight, so an ``auth`` policy would refuse every one) and whether or not the route's methods
list ``OPTIONS``. Its reply is the whole answer: the other policies' response hooks do not see
it. A route without one serves an ``OPTIONS`` request like any other.

Last, :class:`CompletionPolicy`: ``on_complete`` runs once the exchange is over (the last byte
handed to the client's socket, or the client or the upstream failed), with a
:class:`~portico.gateway.completion.Completion` that says how it ended.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol, TypeAlias, runtime_checkable

from portico.gateway.completion import Completion
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


@runtime_checkable
class FieldsResponsePolicy(Protocol):
    """The lighter hook of a :class:`ResponsePolicy` that only adds fields to an upstream's
    response head. Each policy appends its own; it must add what its ``on_response`` adds (which
    still serves Portico's own answers and routes whose other response policies need the text
    fields)."""

    @property
    def replaced_fields(self) -> frozenset[bytes]:
        """Lower-case names of the fields this policy's own replace: the gateway takes them out
        of each response of the route (the upstream's head, as bytes or as text, and a reply,
        which may be a stored answer) before any response policy runs, once for all."""
        ...

    def response_fields(
        self, exchange: Exchange, status: int, fields: list[tuple[bytes, bytes]]
    ) -> None:
        """Append this policy's fields (lower-case names, Latin-1 values) to ``fields``."""
        ...


@runtime_checkable
class WholeResponsePolicy(Protocol):
    """The optional hook of a policy that must see the whole response body."""

    @property
    def response_body_limit(self) -> int:
        """The most bytes of a body this policy holds in memory."""
        ...

    def on_response_body(
        self, exchange: Exchange, status: int, headers: Headers, body: bytes | None
    ) -> bytes | Reply | None:
        """The new body, ``None`` to keep it, or a reply to send instead. ``body`` is ``None``
        when the body is over ``response_body_limit``; ``headers`` may be changed (framing
        fields excepted: Portico sets them)."""
        ...


@runtime_checkable
class StreamingResponsePolicy(Protocol):
    """The optional hook of a policy that sees the response body chunk by chunk."""

    def on_response_chunk(self, exchange: Exchange, chunk: bytes, end: bool) -> bytes: ...


@runtime_checkable
class PreflightPolicy(Protocol):
    """The optional hook of a policy that answers CORS preflight requests for its route."""

    def on_preflight(self, exchange: Exchange) -> Reply:
        """The answer to the preflight (``exchange.method`` is ``OPTIONS``; the route is the one
        that serves the method in ``Access-Control-Request-Method``)."""
        ...


@runtime_checkable
class CompletionPolicy(Protocol):
    """The optional hook of a policy told how each exchange ended."""

    def on_complete(self, exchange: Exchange, completion: Completion) -> None: ...
