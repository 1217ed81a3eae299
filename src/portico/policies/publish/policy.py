"""The ``publish`` policy at request time.

    policies:
      - type: publish
        event: order.created
        data: response          # or request
        pointer: /order         # optional: a part of that body
        statuses: [201]         # optional: else every 2xx

The upstream's status is seen by ``on_response`` (or, with ``data: response``, with the whole
body by ``on_response_body``, up to ``max_body_size``); only an answer of the upstream counts,
never one Portico gave itself. Once the exchange is over (``on_complete``: the client has its
answer, so publishing never delays it), the event is published in a thread, as a platform event
(``tenant`` none) by ``route:<name>``; the request's ``Idempotency-Key`` (with the caller's
consumer id) is its idempotency key, so a retried request that the upstream answers again
publishes once.

What cannot be published (a body that is not JSON, over the limit, a pointer that leads nowhere,
data the type's schema refuses, the store failing) is logged at ERROR with the request id and
counted in ``portico_events_publish_failures_total{route, reason}``: never dropped silently.
"""

from __future__ import annotations

import asyncio
import json
import logging
from functools import partial
from typing import Any

from portico.events.catalog import InvalidPayload, UnknownEventType
from portico.gateway.completion import UPSTREAM_BROKE, Completion
from portico.gateway.exchange import Exchange
from portico.gateway.headers import Headers
from portico.gateway.stats import LabelledCounter
from portico.identity.context import BuildContext, EventPublisher
from portico.policies.publish.settings import PublishSettings

__all__ = ["PublishFromRequest", "PublishFromResponse", "build", "resolve_pointer"]

log = logging.getLogger("portico.events.publish")

_MISSING = object()


class NotPublished(Exception):
    """Why an event was not published: ``reason`` is the metric's label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def resolve_pointer(document: Any, pointer: str) -> Any:
    """The value at an RFC 6901 JSON Pointer, or ``_MISSING``."""
    if pointer == "":
        return document
    current = document
    for part in pointer[1:].split("/"):
        name = part.replace("~1", "/").replace("~0", "~")
        if isinstance(current, dict):
            if name not in current:
                return _MISSING
            current = current[name]
        elif isinstance(current, list):
            if not name.isdigit() or (name != "0" and name.startswith("0")):
                return _MISSING
            index = int(name)
            if index >= len(current):
                return _MISSING
            current = current[index]
        else:
            return _MISSING
    return current


class _Publish:
    """What both kinds share: the status check, the publish in a thread, the failure count."""

    def __init__(
        self,
        settings: PublishSettings,
        publisher: EventPublisher,
        route: str,
        failures: LabelledCounter,
        needs_body: bool,
    ) -> None:
        self.needs_body = needs_body
        """With ``data: request``, the route reads the request body whole before forwarding."""
        self._event = settings.event
        self._pointer = settings.pointer
        self._statuses = frozenset(settings.statuses)
        self._limit = settings.max_body_size
        self._publisher = publisher
        self._route = route
        self._failures = failures
        self._key = f"publish:{settings.event}:{id(self)}"
        """Where one exchange's upstream status (and body) wait for ``on_complete``."""
        self._pending: set[asyncio.Future[tuple[str, str] | None]] = set()
        """Publishes under way (held, so that none is collected before it is done)."""

    def on_request(self, exchange: Exchange) -> None:
        return None

    def _publishes(self, status: int) -> bool:
        return status in self._statuses if self._statuses else 200 <= status < 300

    def on_complete(self, exchange: Exchange, completion: Completion) -> None:
        seen = exchange.state.pop(self._key, None)
        if seen is None or completion.target == "":
            return  # no upstream answer that publishes (Portico answered, or another status)
        if completion.failure == UPSTREAM_BROKE:
            self._failed(exchange.request_id, "upstream-broke", "the upstream broke off")
            return
        try:
            data = self._data(exchange, seen)
        except NotPublished as exc:
            self._failed(exchange.request_id, exc.reason, str(exc))
            return
        identity = exchange.identity
        key = exchange.headers.get("idempotency-key")
        if key is not None:
            caller = identity.consumer if identity is not None else "-"
            key = f"{caller}:{key.strip()}"
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, self._publish, data, key)
        self._pending.add(future)
        future.add_done_callback(partial(self._done, exchange.request_id))

    def _data(self, exchange: Exchange, seen: object) -> Any:
        raise NotImplementedError

    def _document(self, body: bytes | None, where: str) -> Any:
        if body is None:
            raise NotPublished("body-too-large", f"the {where} body is over {self._limit} bytes")
        if not body:
            raise NotPublished("no-body", f"the {where} has no body")
        try:
            document = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise NotPublished("not-json", f"the {where} body is not JSON") from None
        value = resolve_pointer(document, self._pointer)
        if value is _MISSING:
            raise NotPublished("pointer-missing", f"nothing at {self._pointer} in the {where}")
        return value

    def _publish(self, data: Any, key: str | None) -> tuple[str, str] | None:
        """In a thread: publish, or say why not (the reason and the detail)."""
        try:
            self._publisher.publish(
                self._event, data, publisher=f"route:{self._route}", idempotency_key=key
            )
        except (InvalidPayload, UnknownEventType) as exc:
            return "payload-invalid", f"{exc}: {_errors(exc)}"
        except Exception as exc:
            return "store", f"{type(exc).__name__}: {exc}"
        return None

    def _done(self, request_id: str, future: asyncio.Future[tuple[str, str] | None]) -> None:
        self._pending.discard(future)
        if future.cancelled():
            self._failed(request_id, "cancelled", "the process stopped before publishing")
            return
        exc = future.exception()
        if exc is not None:
            self._failed(request_id, "internal", repr(exc))
            return
        failure = future.result()
        if failure is not None:
            self._failed(request_id, *failure)

    def _failed(self, request_id: str, reason: str, detail: str) -> None:
        self._failures.inc((self._route, reason))
        log.error(
            "route %s: event %s not published (%s)%s: %s",
            self._route,
            self._event,
            reason,
            f", request {request_id}" if request_id else "",
            detail,
        )


def _errors(exc: Exception) -> str:
    if isinstance(exc, InvalidPayload):
        return "; ".join(f"{e.pointer}: {e.message}" for e in exc.errors)
    return ""


class PublishFromResponse(_Publish):
    """``data: response``: the whole response body is held (up to ``max_body_size``)."""

    @property
    def response_body_limit(self) -> int:
        return self._limit

    def on_response_body(
        self, exchange: Exchange, status: int, headers: Headers, body: bytes | None
    ) -> None:
        if self._publishes(status):
            exchange.state[self._key] = _Seen(status, body)
        return None

    def _data(self, exchange: Exchange, seen: object) -> Any:
        assert isinstance(seen, _Seen)
        return self._document(seen.body, "response")


class PublishFromRequest(_Publish):
    """``data: request``: the route reads the request body whole before forwarding it."""

    def on_response(self, exchange: Exchange, status: int, headers: Headers) -> None:
        if self._publishes(status):
            exchange.state[self._key] = _Seen(status, None)

    def _data(self, exchange: Exchange, seen: object) -> Any:
        body = exchange.body if exchange.body is not None else b""
        return self._document(body if len(body) <= self._limit else None, "request")


class _Seen:
    __slots__ = ("body", "status")

    def __init__(self, status: int, body: bytes | None) -> None:
        self.status = status
        self.body = body


def build(settings: PublishSettings, context: BuildContext) -> _Publish:
    publisher = context.extensions.publisher
    if publisher is None:
        raise ValueError(
            f"route {context.route_name!r}: the publish policy needs the events store that "
            "`portico serve` opens for an events section"
        )
    failures = context.extensions.stats.counter(
        "portico_events_publish_failures",
        "Events a route's publish policy could not publish, by route and reason (logged at "
        "ERROR with the request id).",
        ("route", "reason"),
    )
    if settings.data == "response":
        return PublishFromResponse(settings, publisher, context.route_name, failures, False)
    return PublishFromRequest(settings, publisher, context.route_name, failures, True)
