"""Inbound webhooks: built-in endpoints at each ``events.inbound.<name>.path`` that receive a
third party's webhooks, verify them, drop the copies a sender delivers again, and republish each
as the source's ``event_type`` (docs/inbound-webhooks.md).

For each ``POST``:

1. the signature, by the source's scheme: Standard Webhooks (:class:`~portico.events.signing.
   Verifier`), GitHub's and Stripe's presets, or the generic HMAC scheme
   (:class:`~portico.events.inbound_verify.HmacScheme`), with the timestamp window where the
   scheme signs a timestamp; any of the source's secrets may match (a sender rotating). A
   refusal is 401 ``webhook-signature-invalid`` with its ``reason``;
2. the message's id: the ``id_header`` field, ``webhook-id`` for Standard Webhooks, else the
   SHA-256 of the body;
3. the body, which must be JSON: it becomes the event's ``data``;
4. in a thread, one publish as ``inbound:<name>`` (a platform event) with the id as its
   idempotency key, so that a copy received again, even at the same moment or after a crash,
   is the same event; the id is recorded in ``inbound_webhooks`` beside it.

The answer is 200 ``{"event_id", "duplicate"}``, once the event is committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Sequence

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from portico.config.events import InboundSource
from portico.config.model import PorticoConfig
from portico.events.catalog import InvalidPayload, UnknownEventType
from portico.events.inbound_verify import HmacScheme, InboundScheme
from portico.events.problems import (
    PAYLOAD_INVALID,
    WEBHOOK_SIGNATURE_INVALID,
    EventsProblem,
    pointer_errors,
)
from portico.events.service import Events
from portico.events.signing import SignatureRejected, Verifier
from portico.gateway import problems
from portico.gateway.endpoints import BuiltinEndpoint
from portico.gateway.exchange import Exchange, Reply
from portico.gateway.headers import Headers
from portico.identity.context import EndpointProvider, Extensions
from portico.store.tables import InboundMessageRow

__all__ = ["InboundReceiver", "inbound_webhooks", "schemes_of"]

log = logging.getLogger("portico.events.inbound")

_INBOUND: sa.Table = InboundMessageRow.__table__  # type: ignore[assignment]
_POST = frozenset({"POST"})
MAX_ID_LENGTH = 255


def schemes_of(source: InboundSource) -> tuple[InboundScheme, ...]:
    """The verifiers of a source: one per secret for the HMAC schemes, one for all of its
    secrets for Standard Webhooks."""
    tolerance = source.tolerance
    if source.scheme == "standard-webhooks":
        return (Verifier(source.secrets, tolerance=tolerance),)
    if source.scheme == "github":
        return tuple(HmacScheme.github(secret) for secret in source.secrets)
    if source.scheme == "stripe":
        return tuple(HmacScheme.stripe(secret, tolerance=tolerance) for secret in source.secrets)
    assert source.header is not None  # the config's model requires it for scheme hmac
    return tuple(
        HmacScheme(
            secret,
            header=source.header,
            algorithm=source.algorithm,
            encoding=source.encoding,
            prefix=source.prefix,
            template=source.template,
            timestamp_header=source.timestamp_header,
            tolerance=tolerance,
        )
        for secret in source.secrets
    )


class InboundReceiver:
    """One source's endpoint."""

    __slots__ = ("_events", "_id_header", "_schemes", "name", "source")

    def __init__(self, events: Events, name: str, source: InboundSource) -> None:
        self._events = events
        self.name = name
        self.source = source
        self._schemes = schemes_of(source)
        header = source.id_header
        if header is None and source.scheme == "standard-webhooks":
            header = "webhook-id"
        self._id_header = header.lower() if header else None

    def endpoint(self) -> BuiltinEndpoint:
        return BuiltinEndpoint(self.source.path, _POST, self, self.source.max_body_size)

    def handle(self, exchange: Exchange, body: bytes) -> Reply | Awaitable[Reply]:
        request_id = exchange.request_id
        try:
            self._verify(exchange.headers.items, body)
            message_id = self._message_id(exchange.headers, body)
            data = _json_data(body)
        except EventsProblem as exc:
            return exc.reply(request_id)
        return self._publish(message_id, data, request_id)

    def _verify(self, headers: Sequence[tuple[str, str]], body: bytes) -> None:
        now = time.time()
        rejected: SignatureRejected | None = None
        for scheme in self._schemes:
            try:
                scheme.verify(headers, body, now)
                return
            except SignatureRejected as exc:
                rejected = exc
        assert rejected is not None
        log.info("inbound %s: webhook refused: %s", self.name, rejected.reason)
        raise EventsProblem(
            WEBHOOK_SIGNATURE_INVALID,
            f"The webhook's signature does not verify ({rejected.reason}).",
            reason=rejected.reason,
        )

    def _message_id(self, headers: Headers, body: bytes) -> str:
        if self._id_header is None:
            return "sha256:" + hashlib.sha256(body).hexdigest()
        values = headers.get_all(self._id_header)
        if len(values) != 1 or not values[0].strip():
            raise EventsProblem(
                problems.BAD_REQUEST, f"the webhook needs exactly one {self._id_header} field"
            )
        value = values[0].strip()
        if len(value) > MAX_ID_LENGTH:
            raise EventsProblem(problems.BAD_REQUEST, f"{self._id_header} is too long")
        return value

    async def _publish(self, message_id: str, data: object, request_id: str) -> Reply:
        try:
            event_id, duplicate = await asyncio.to_thread(self._store, message_id, data)
        except EventsProblem as exc:
            return exc.reply(request_id)
        headers = Headers([("content-type", "application/json"), ("cache-control", "no-store")])
        answer = {"event_id": event_id, "duplicate": duplicate}
        return Reply(200, headers, json.dumps(answer, separators=(",", ":")).encode())

    def _store(self, message_id: str, data: object) -> tuple[str, bool]:
        database = self._events.database
        query = sa.select(_INBOUND.c.event_id).where(
            _INBOUND.c.source == self.name, _INBOUND.c.message_id == message_id
        )
        with database.read() as session:
            seen = session.execute(query).scalar()
        if seen is not None:
            return str(seen), True
        try:
            published = self._events.publisher.publish(
                self.source.event_type,
                data,
                publisher=f"inbound:{self.name}",
                idempotency_key=message_id,
            )
        except (UnknownEventType, InvalidPayload) as exc:
            log.warning("inbound %s: webhook %s not republished: %s", self.name, message_id, exc)
            errors = exc.errors if isinstance(exc, InvalidPayload) else []
            raise EventsProblem(
                PAYLOAD_INVALID,
                str(exc),
                errors=pointer_errors([(e.pointer, e.message) for e in errors]),
            ) from None
        try:
            with database.write() as session:
                session.execute(
                    _INBOUND.insert().values(
                        source=self.name, message_id=message_id, event_id=published.id
                    )
                )
        except IntegrityError:
            pass  # the same message, received twice at once: the publish above was the same
        return published.id, not published.created


def _json_data(body: bytes) -> object:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise EventsProblem(
            problems.BAD_REQUEST, "the webhook's body must be JSON (it is the event's data)"
        ) from None


def inbound_webhooks(events: Events) -> EndpointProvider:
    """The endpoints of the config's ``events.inbound`` sources, over ``events``."""

    def build(config: PorticoConfig, extensions: Extensions) -> Sequence[BuiltinEndpoint]:
        if config.events is None:
            return ()
        return [
            InboundReceiver(events, name, source).endpoint()
            for name, source in config.events.inbound.items()
        ]

    return EndpointProvider(build)
