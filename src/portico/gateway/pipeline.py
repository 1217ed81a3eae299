"""The policy runner: a route's policies on the request head (and body, when one asks for it),
then the hand-over to the upstream (:func:`forward`: the outbound head and a
:class:`~portico.gateway.proxy.Forward`); and the built-in endpoints, which answer themselves.

Policies run in the route's order. A policy's outcome is ``None`` (go on), a
:class:`~portico.gateway.exchange.Reply` (answer now, the rest is skipped) or, only when it must
wait for I/O, an awaitable of one of the two: the run then continues in a task from the next
policy. The contract is :mod:`portico.gateway.policy`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from portico.gateway import problems
from portico.gateway.exchange import Exchange, Reply
from portico.gateway.http import CONTINUE
from portico.gateway.outbound import outbound_fields
from portico.gateway.proxy import Forward
from portico.gateway.request import Request
from portico.gateway.spans import exchange_span

if TYPE_CHECKING:
    from portico.gateway.connection import ClientConnection
    from portico.gateway.endpoints import BuiltinEndpoint

log = logging.getLogger("portico.gateway")


def run(conn: ClientConnection, request: Request, exchange: Exchange, start: int) -> None:
    """Run the route's policies from ``start``; forward the request if none answered."""
    assert exchange.route is not None
    pipeline = exchange.route.pipeline
    for index in range(start, len(pipeline)):
        outcome = pipeline[index].on_request(exchange)
        if outcome is None:
            continue
        if isinstance(outcome, Reply):
            conn.answer(request, outcome, exchange)
            return
        if inspect.isawaitable(outcome):
            task = conn.loop.create_task(_resume(conn, request, exchange, index, outcome))
            conn.background = task
            return
        raise TypeError(f"policy returned {type(outcome).__name__}")
    forward(conn, request, exchange)


def preflight(conn: ClientConnection, request: Request, exchange: Exchange) -> None:
    """A CORS preflight: the route's preflight policy answers it before any ``on_request`` runs,
    and its reply is the whole answer (the other policies' response hooks do not see it)."""
    route = exchange.route
    assert route is not None and route.preflight is not None
    reply = route.preflight.on_preflight(exchange)
    conn.answer(request, reply, request_id=exchange.request_id)


async def _resume(
    conn: ClientConnection,
    request: Request,
    exchange: Exchange,
    index: int,
    outcome: Awaitable[Reply | None],
) -> None:
    try:
        result = await outcome
        if conn.closed:
            conn.done(request)
        elif result is not None:
            conn.answer(request, result, exchange)
        else:
            run(conn, request, exchange, index + 1)
    except Exception:
        log.exception("policy failed")
        conn.fail_internal(request)


def forward(conn: ClientConnection, request: Request, exchange: Exchange) -> None:
    """The policies let the request through: send it upstream."""
    if request.body.broken:
        request_id = exchange.request_id
        reply = problems.problem(problems.BAD_REQUEST, request_id)
        conn.answer(request, reply, exchange)
        return
    route = exchange.route
    assert route is not None
    if route.whole_body_pipeline or route.chunk_pipeline:
        # Body policies read the body as sent: a compressed one would pass a masking policy
        # untouched (no pattern matches gzip). The upstream is asked for it plain.
        exchange.headers.remove("accept-encoding")
    special = request.special
    # Any Transfer-Encoding that got this far is exactly "chunked" (see on_headers_complete).
    chunked = "transfer-encoding" in special
    if exchange.body is not None and chunked:
        # Read whole already: send it with a length instead of re-chunking.
        chunked = False
        exchange.headers.set("content-length", str(len(exchange.body)))
    peer = conn.peer
    tracing = conn.runtime.tracing
    if tracing is not None:
        exchange_span(tracing, request, peer)  # its id is the parent of the attempts' spans
    fields = outbound_fields(
        exchange,
        special,
        peer_ip=peer.ip,
        peer_trusted=peer.trusted,
        request_id_header=conn.request_id_header,
        replaced=conn.replaced_fields,
        chunked=chunked,
        upgrade=request.upgrade,
        traced=tracing is not None,
    )
    has_body = chunked or (
        bool(exchange.body)
        if exchange.body is not None
        else special.get("content-length", "0") != "0"
    )
    upstream = Forward(conn, request, exchange, route, fields, chunked, has_body)
    conn.forward = upstream
    expect = special.get("expect", "").lower() == "100-continue"
    transport = conn.transport
    if expect and upstream.has_body and not request.body.complete and transport is not None:
        transport.write(CONTINUE)
    upstream.start()


def run_with_body(conn: ClientConnection, request: Request, exchange: Exchange) -> None:
    """The body has been read whole (a policy asked for it): run the policies on it."""
    if conn.closed or conn.active is not request:
        return
    exchange.body = request.body.whole()
    try:
        run(conn, request, exchange, 0)
    except Exception:
        log.exception("internal error serving a request")
        conn.fail_internal(request)


def call_endpoint(
    conn: ClientConnection, request: Request, exchange: Exchange, builtin: BuiltinEndpoint
) -> None:
    """A built-in endpoint answers the request, with its body read whole."""
    if conn.closed or conn.active is not request:
        return
    body = request.body.whole()
    exchange.body = body
    try:
        outcome = builtin.endpoint.handle(exchange, body)
        if isinstance(outcome, Reply):
            conn.answer(request, outcome, exchange)
        else:
            task = conn.loop.create_task(_endpoint_reply(conn, request, exchange, outcome))
            conn.background = task
    except Exception:
        log.exception("built-in endpoint failed")
        conn.fail_internal(request)


async def _endpoint_reply(
    conn: ClientConnection, request: Request, exchange: Exchange, outcome: Awaitable[Reply]
) -> None:
    try:
        reply = await outcome
    except Exception:
        log.exception("built-in endpoint failed")
        conn.fail_internal(request)
        return
    if conn.closed:
        conn.done(request)
    else:
        conn.answer(request, reply, exchange)
