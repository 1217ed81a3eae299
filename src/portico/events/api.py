"""The consumer webhooks API: built-in endpoints of the gateway under ``events.api.path_prefix``
(``/webhooks/v1``), through which a consumer publishes its events and manages its own webhook
endpoints, secrets and deliveries with its own credentials (docs/webhooks-api.md).

Built-in endpoints bypass the policy pipeline, so the API authenticates the caller itself, with
the methods of ``events.api.auth`` built as the ``auth`` policy builds them (the same consumers,
keys, tokens and the consumers' ``ip_rules``), then checks the scope of the operation and the
ownership of what it names: another consumer's endpoint or delivery answers 404, exactly as one
that does not exist, so that ids cannot be probed. Store reads and writes run in threads, off the
event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from portico.config.events import ConsumerApi
from portico.config.model import PorticoConfig
from portico.core.extensions import ExtensionUnavailable
from portico.core.http import REALM
from portico.events.api_requests import (
    EndpointChanges,
    EndpointCreate,
    PublishBody,
    RedeliverBody,
    RotateBody,
    json_body,
    model_of,
    page_of,
    query_of,
    time_of,
)
from portico.events.catalog import InvalidPayload, UnknownEventType
from portico.events.endpoints import CONFIG_PREFIX, Endpoint, UnknownEndpoint
from portico.events.log import STATUSES, DeliveryFilter
from portico.events.matching import FilterError, compile_filter
from portico.events.problems import (
    DELIVERY_NOT_DEAD,
    DELIVERY_NOT_FOUND,
    ENDPOINT_NOT_FOUND,
    ENDPOINT_READ_ONLY,
    ENDPOINT_REFUSED,
    EVENT_TYPE_UNKNOWN,
    PAYLOAD_INVALID,
    STORE_UNAVAILABLE,
    EventsProblem,
    pointer_errors,
)
from portico.events.registration import store_changes
from portico.events.service import Events
from portico.events.ssrf import RefusedDestination
from portico.gateway import problems
from portico.gateway.endpoints import BuiltinEndpoint
from portico.gateway.exchange import Exchange, Identity, Reply
from portico.gateway.headers import Headers
from portico.identity.authn import Authenticator, AuthResult, Rejected, auth_method
from portico.identity.context import BuildContext, EndpointProvider, Extensions
from portico.identity.state import IdentityState
from portico.store.database import DatabaseUnavailable, StoreBusy

__all__ = ["ConsumerWebhooksApi", "consumer_api"]

log = logging.getLogger("portico.events.api")

ROUTE_NAME = "webhooks-api"
"""How the API's authentication is named where a route's name would be (logs, metrics)."""
MAX_BODY = 256 * 1024
"""A publish or an endpoint is a small JSON document; more is refused with 413."""
IDEMPOTENCY_KEY_LENGTH = 255
API_KEY_FIELD = "x-api-key"
"""Where the ``api_key`` method reads a key here (its default: the API takes no options)."""

_Action = Callable[[Identity, Exchange, bytes], Reply]


@dataclass(frozen=True, slots=True)
class _Operation:
    action: _Action
    scope: str | None
    """The scope the caller needs (``None``: any authenticated consumer)."""


def _json(status: int, data: Any, headers: Sequence[tuple[str, str]] = ()) -> Reply:
    out = Headers(list(headers))
    out.set("content-type", "application/json")
    out.set("cache-control", "no-store")
    return Reply(status, out, json.dumps(data, separators=(",", ":")).encode())


def _page(exchange: Exchange, items: list[Any], next_cursor: str | None) -> Reply:
    """A list as the admin API answers one: ``{items, next_cursor, next}``, and ``Link: <next>;
    rel="next"`` when there is more."""
    following = None
    headers: list[tuple[str, str]] = []
    if next_cursor is not None:
        params = {**query_of(exchange.query), "cursor": next_cursor}
        following = f"{exchange.path}?{urlencode(params)}"
        headers.append(("link", f'<{following}>; rel="next"'))
    return _json(200, {"items": items, "next_cursor": next_cursor, "next": following}, headers)


def _authenticators(config: PorticoConfig, context: BuildContext) -> tuple[Authenticator, ...]:
    """The methods of ``events.api.auth`` that this config can serve: ``jwt`` alone stands for
    every identity provider; ``oauth`` needs ``identity.oauth``."""
    assert config.events is not None
    names: list[str] = []
    for method in config.events.api.auth:
        if method == "jwt":
            names.extend(f"jwt:{name}" for name in config.identity.providers)
        elif method.startswith("jwt:"):
            if method[4:] in config.identity.providers:
                names.append(method)
        elif method == "oauth":
            if config.identity.oauth is not None:
                names.append(method)
        else:
            names.append(method)
    built = []
    for name in dict.fromkeys(names):
        try:
            built.append(auth_method(name).build(name, None, context))
        except ExtensionUnavailable as exc:
            raise ValueError(f"events.api.auth: {exc}") from None
    return tuple(built)


class ConsumerWebhooksApi:
    """The API of one snapshot's config, over the process's events store."""

    def __init__(self, events: Events, config: PorticoConfig, extensions: Extensions) -> None:
        assert config.events is not None
        self.events = events
        self.settings: ConsumerApi = config.events.api
        state = extensions.identity or IdentityState.for_config(config)
        if extensions.identity is None:
            extensions = Extensions(identity=state, oauth=extensions.oauth, stats=extensions.stats)
        context = BuildContext(config=config, route_name=ROUTE_NAME, extensions=extensions)
        self._state = state
        self._authenticators = _authenticators(config, context)
        self._missing = Headers([("www-authenticate", a.challenge()) for a in self._authenticators])
        self.prefix = self.settings.path_prefix.rstrip("/")

    # -- the resources ---------------------------------------------------------------------------

    def endpoints(self) -> list[BuiltinEndpoint]:
        manage = self.settings.manage_scope
        publish = self.settings.publish_scope
        p = self.prefix
        table: dict[str, dict[str, _Operation]] = {
            f"{p}/event-types": {"GET": _Operation(self.event_types, None)},
            f"{p}/events": {"POST": _Operation(self.publish, publish)},
            f"{p}/endpoints": {
                "GET": _Operation(self.list_endpoints, manage),
                "POST": _Operation(self.create_endpoint, manage),
            },
            f"{p}/endpoints/{{id}}": {
                "GET": _Operation(self.get_endpoint, manage),
                "PATCH": _Operation(self.update_endpoint, manage),
                "DELETE": _Operation(self.delete_endpoint, manage),
            },
            f"{p}/endpoints/{{id}}/rotate-secret": {"POST": _Operation(self.rotate, manage)},
            f"{p}/endpoints/{{id}}/enable": {"POST": _Operation(self.enable, manage)},
            f"{p}/endpoints/{{id}}/disable": {"POST": _Operation(self.disable, manage)},
            f"{p}/endpoints/{{id}}/deliveries": {
                "GET": _Operation(self.endpoint_deliveries, manage)
            },
            f"{p}/endpoints/{{id}}/redeliver": {
                "POST": _Operation(self.redeliver_endpoint, manage)
            },
            f"{p}/deliveries/{{id}}": {"GET": _Operation(self.get_delivery, manage)},
            f"{p}/deliveries/{{id}}/redeliver": {
                "POST": _Operation(self.redeliver_delivery, manage)
            },
        }
        return [
            BuiltinEndpoint(path, frozenset(operations), _Resource(self, operations), MAX_BODY)
            for path, operations in table.items()
        ]

    # -- authentication --------------------------------------------------------------------------

    def authenticate(self, exchange: Exchange) -> Identity | Reply | Awaitable[Identity | Reply]:
        if len(exchange.headers.get_all(API_KEY_FIELD)) > 1:
            # Which of two keys was meant is not ours to pick (a route's api_key takes the
            # first; this API, where a key manages endpoints and secrets, takes neither).
            return problems.problem(
                problems.BAD_REQUEST,
                exchange.request_id,
                f"{API_KEY_FIELD} is given more than once",
            )
        for authenticator in self._authenticators:
            result = authenticator.identify(exchange)
            if result is None:
                continue
            if isinstance(result, Identity | Rejected):
                return self._decide(exchange, result)
            return self._decide_later(exchange, result)
        return problems.problem(
            problems.UNAUTHORIZED,
            exchange.request_id,
            "The webhooks API needs the consumer's credentials.",
            headers=self._missing,
        )

    async def _decide_later(
        self, exchange: Exchange, pending: Awaitable[AuthResult]
    ) -> Identity | Reply:
        return self._decide(exchange, await pending)

    def _decide(self, exchange: Exchange, result: AuthResult) -> Identity | Reply:
        if isinstance(result, Rejected):
            log.debug("request %s: credentials refused: %s", exchange.request_id, result.reason)
            return problems.problem(
                problems.INVALID_CREDENTIALS,
                exchange.request_id,
                "The credentials presented are not valid.",
                headers=Headers([("www-authenticate", result.challenge)]),
            )
        rules = self._state.directory.ip_rules.get(result.consumer)
        if rules is not None and not rules.permits(exchange.client_ip):
            return problems.problem(problems.IP_FORBIDDEN, exchange.request_id)
        exchange.identity = result
        return result

    def authorize(self, who: Identity, exchange: Exchange, scope: str | None) -> Reply | None:
        if scope is not None and scope not in who.scopes:
            return problems.problem(
                problems.INSUFFICIENT_SCOPE,
                exchange.request_id,
                f"This operation needs the scope {scope}.",
                headers=Headers(
                    [
                        (
                            "www-authenticate",
                            f'Bearer realm="{REALM}", error="insufficient_scope", scope="{scope}"',
                        )
                    ]
                ),
            )
        if who.tenant is None or not who.consumer.startswith(who.tenant + "/"):
            # Endpoints belong to a consumer of a tenant, and a consumer's events go to its
            # tenant only: an identity without one (a JWT mapped to no tenant) would publish to
            # every tenant's endpoints.
            return problems.problem(
                problems.FORBIDDEN,
                exchange.request_id,
                "The webhooks API is for consumers of a tenant.",
            )
        return None

    # -- event types and publishing --------------------------------------------------------------

    def event_types(self, who: Identity, exchange: Exchange, body: bytes) -> Reply:
        items = [
            {
                "name": name,
                "description": kind.description,
                "version": kind.version,
                "schema": kind.schema_,
            }
            for name, kind in sorted(self.events.catalog().types.items())
        ]
        return _json(200, {"items": items, "next_cursor": None, "next": None})

    def publish(self, who: Identity, exchange: Exchange, body: bytes) -> Reply:
        given = model_of(PublishBody, json_body(exchange.headers, body))
        keys = exchange.headers.get_all("idempotency-key")
        if len(keys) > 1:
            raise EventsProblem(problems.BAD_REQUEST, "Idempotency-Key is given more than once")
        key = keys[0].strip() if keys else None
        if key is not None and not (0 < len(key) <= IDEMPOTENCY_KEY_LENGTH and key.isprintable()):
            raise EventsProblem(
                problems.BAD_REQUEST,
                f"an Idempotency-Key is 1 to {IDEMPOTENCY_KEY_LENGTH} printable characters",
            )
        if key is not None and given.id is not None and key != given.id:
            raise EventsProblem(
                problems.BAD_REQUEST, "the Idempotency-Key and the event's id differ"
            )
        try:
            published = self.events.publisher.publish(
                given.type,
                given.data,
                publisher=f"consumer:{who.consumer}",
                tenant=who.tenant,
                idempotency_key=key or given.id,
            )
        except UnknownEventType as exc:
            raise EventsProblem(
                EVENT_TYPE_UNKNOWN, str(exc), errors=pointer_errors([("/type", str(exc))])
            ) from None
        except InvalidPayload as exc:
            errors = [(e.pointer, e.message) for e in exc.errors]
            raise EventsProblem(PAYLOAD_INVALID, str(exc), errors=pointer_errors(errors)) from None
        headers = [] if published.created else [("idempotent-replayed", "true")]
        return _json(202, published.describe(), headers)

    # -- endpoints -------------------------------------------------------------------------------

    def _owned(self, who: Identity, exchange: Exchange) -> Endpoint:
        try:
            return self.events.endpoints.get(exchange.path_params["id"], consumer=who.consumer)
        except UnknownEndpoint:
            raise EventsProblem(ENDPOINT_NOT_FOUND) from None

    def _writable(self, who: Identity, exchange: Exchange) -> Endpoint:
        endpoint = self._owned(who, exchange)
        if endpoint.source == "config" or endpoint.id.startswith(CONFIG_PREFIX):
            raise EventsProblem(
                ENDPOINT_READ_ONLY,
                "This endpoint is declared in the config file: its operator changes it there.",
            )
        return endpoint

    def _refusals(
        self, url: str | None, types: Sequence[str] | None, payload_filter: Any
    ) -> list[tuple[str, str]]:
        refused: list[tuple[str, str]] = []
        if url is not None:
            try:
                self.events.destinations().check_url(url)
            except RefusedDestination as exc:
                refused.append(("/url", str(exc)))
        if types is not None:
            known = self.events.catalog().types
            for index, item in enumerate(types):
                if item != "*" and not item.endswith(".*") and item not in known:
                    refused.append((f"/types/{index}", f"no event type {item!r} in the catalog"))
        if payload_filter is not None:
            try:
                compile_filter(payload_filter)
            except FilterError as exc:
                for path, message in exc.problems:
                    refused.append(("/filter" + "".join(f"/{part}" for part in path), message))
        return refused

    def _refuse(self, refused: list[tuple[str, str]]) -> None:
        if refused:
            raise EventsProblem(ENDPOINT_REFUSED, refused[0][1], errors=pointer_errors(refused))

    def list_endpoints(self, who: Identity, exchange: Exchange, body: bytes) -> Reply:
        after, limit = page_of(query_of(exchange.query))
        found = self.events.endpoints.list(consumer=who.consumer, after=after, limit=limit)
        next_cursor = found[-1].id if len(found) == limit else None
        return _page(exchange, [e.describe() for e in found], next_cursor)

    def create_endpoint(self, who: Identity, exchange: Exchange, body: bytes) -> Reply:
        given = model_of(EndpointCreate, json_body(exchange.headers, body))
        self._refuse(self._refusals(given.url, given.types, given.filter))
        endpoint, secret = self.events.endpoints.create(
            who.consumer,
            given.url,
            types=given.types,
            description=given.description,
            filter=given.filter,
            rate_limit=given.rate_limit,
            concurrency=given.concurrency,
            ordering_key=None if given.ordering is None else given.ordering.key,
        )
        log.info("consumer %s registered webhook endpoint %s", who.consumer, endpoint.id)
        location = f"{self.prefix}/endpoints/{endpoint.id}"
        return _json(201, {**endpoint.describe(), "secret": secret}, [("location", location)])

    def get_endpoint(self, who: Identity, exchange: Exchange, body: bytes) -> Reply:
        return _json(200, self._owned(who, exchange).describe())

    def update_endpoint(self, who: Identity, exchange: Exchange, body: bytes) -> Reply:
        endpoint = self._writable(who, exchange)
        given = model_of(EndpointChanges, json_body(exchange.headers, body))
        fields = given.model_fields_set
        for required in ("url", "types"):
            if required in fields and getattr(given, required) is None:
                raise EventsProblem(
                    problems.VALIDATION_FAILED,
                    f"{required} cannot be null",
                    errors=pointer_errors([(f"/{required}", "cannot be null")]),
                )
        self._refuse(
            self._refusals(
                given.url if "url" in fields else None,
                given.types if "types" in fields else None,
                given.filter if "filter" in fields else None,
            )
        )
        changes = store_changes(given, fields)
        if not changes:
            return _json(200, endpoint.describe())
        try:
            updated = self.events.endpoints.update(endpoint.id, changes)
        except UnknownEndpoint:
            raise EventsProblem(ENDPOINT_NOT_FOUND) from None
        return _json(200, updated.describe())

    def delete_endpoint(self, who: Identity, exchange: Exchange, body: bytes) -> Reply:
        endpoint = self._writable(who, exchange)
        try:
            self.events.endpoints.delete(endpoint.id)
        except UnknownEndpoint:
            raise EventsProblem(ENDPOINT_NOT_FOUND) from None
        log.info("consumer %s deleted webhook endpoint %s", who.consumer, endpoint.id)
        return Reply(204, Headers([("cache-control", "no-store")]))

    def rotate(self, who: Identity, exchange: Exchange, body: bytes) -> Reply:
        endpoint = self._writable(who, exchange)
        given = model_of(RotateBody, json_body(exchange.headers, body, optional=True))
        overlap = (
            given.overlap if given.overlap is not None else self.events.delivery().secret_overlap
        )
        secret = self.events.endpoints.rotate(endpoint.id, overlap)
        until = time.time() + overlap
        valid_until = datetime.fromtimestamp(until, UTC).isoformat()
        return _json(200, {"secret": secret, "previous_secrets_valid_until": valid_until})

    def enable(self, who: Identity, exchange: Exchange, body: bytes) -> Reply:
        endpoint = self._writable(who, exchange)
        return _json(200, self.events.endpoints.set_disabled(endpoint.id, None).describe())

    def disable(self, who: Identity, exchange: Exchange, body: bytes) -> Reply:
        endpoint = self._writable(who, exchange)
        changed = self.events.endpoints.set_disabled(endpoint.id, "disabled by its owner")
        return _json(200, changed.describe())

    # -- deliveries ------------------------------------------------------------------------------

    def endpoint_deliveries(self, who: Identity, exchange: Exchange, body: bytes) -> Reply:
        endpoint = self._owned(who, exchange)
        params = query_of(exchange.query)
        after_text, limit = page_of(params)
        after = _delivery_id(after_text, "/query/cursor") if after_text is not None else None
        status = params.get("status") or None
        if status is not None and status not in STATUSES:
            raise EventsProblem(
                problems.VALIDATION_FAILED,
                "the query is not valid",
                errors=pointer_errors([("/query/status", f"one of {', '.join(STATUSES)}")]),
            )
        where = DeliveryFilter(
            endpoint_id=endpoint.id,
            consumer=who.consumer,
            status=status,
            event_type=params.get("event_type") or None,
            since=time_of(params.get("since"), "/query/since"),
            until=time_of(params.get("until"), "/query/until"),
        )
        found = self.events.delivery_log.deliveries(where, after=after, limit=limit)
        next_cursor = str(found[-1]["id"]) if len(found) == limit else None
        return _page(exchange, found, next_cursor)

    def _delivery(self, who: Identity, exchange: Exchange) -> dict[str, Any]:
        delivery_id = _delivery_id(exchange.path_params["id"], None)
        found = self.events.delivery_log.delivery(delivery_id)
        if found is None or found["consumer"] != who.consumer:
            raise EventsProblem(DELIVERY_NOT_FOUND)
        return found

    def get_delivery(self, who: Identity, exchange: Exchange, body: bytes) -> Reply:
        found = self._delivery(who, exchange)
        # Beside ``attempts`` (their count), the attempts themselves, in order, as the admin API
        # gives them.
        found["attempt_log"] = self.events.delivery_log.attempts(found["id"])
        return _json(200, found)

    def redeliver_delivery(self, who: Identity, exchange: Exchange, body: bytes) -> Reply:
        """A dead (or cancelled) delivery pending again, due now; anything else is 409
        ``delivery-not-dead``, as in the admin API."""
        found = self._delivery(who, exchange)
        if not self.events.queue.redeliver(delivery_ids=[found["id"]], now=time.time()):
            raise EventsProblem(
                DELIVERY_NOT_DEAD,
                f"delivery {found['id']} is {found['status']}: only a dead or cancelled "
                "delivery is redelivered",
            )
        self._wake()
        after = self.events.delivery_log.delivery(found["id"])
        return _json(200, after if after is not None else found)

    def redeliver_endpoint(self, who: Identity, exchange: Exchange, body: bytes) -> Reply:
        endpoint = self._owned(who, exchange)
        given = model_of(RedeliverBody, json_body(exchange.headers, body, optional=True))
        count = self.events.queue.redeliver(
            endpoint_id=endpoint.id,
            since=time_of(given.since, "/since"),
            until=time_of(given.until, "/until"),
            now=time.time(),
        )
        self._wake()
        return _json(202, {"redelivered": count})

    def _wake(self) -> None:
        dispatcher = self.events.dispatcher
        if dispatcher is not None:
            dispatcher.wake()


def _delivery_id(text: str, where: str | None) -> int:
    if text.isdigit() and len(text) <= 18:
        return int(text)
    if where is None:
        raise EventsProblem(DELIVERY_NOT_FOUND)
    raise EventsProblem(
        problems.VALIDATION_FAILED,
        "the query is not valid",
        errors=pointer_errors([(where, "a delivery id")]),
    )


class _Resource:
    """One path of the API: authenticate, authorize, then the method's action in a thread."""

    __slots__ = ("_api", "_operations")

    def __init__(self, api: ConsumerWebhooksApi, operations: Mapping[str, _Operation]) -> None:
        self._api = api
        self._operations = operations

    def handle(self, exchange: Exchange, body: bytes) -> Reply | Awaitable[Reply]:
        method = "GET" if exchange.method == "HEAD" else exchange.method
        operation = self._operations[method]
        who = self._api.authenticate(exchange)
        if isinstance(who, Reply):
            return who
        return self._serve(exchange, body, operation, who)

    async def _serve(
        self,
        exchange: Exchange,
        body: bytes,
        operation: _Operation,
        who: Identity | Awaitable[Identity | Reply],
    ) -> Reply:
        identity = who if isinstance(who, Identity) else await who
        if isinstance(identity, Reply):
            return identity
        refusal = self._api.authorize(identity, exchange, operation.scope)
        if refusal is not None:
            return refusal
        try:
            return await asyncio.to_thread(operation.action, identity, exchange, body)
        except EventsProblem as exc:
            return exc.reply(exchange.request_id)
        except (StoreBusy, DatabaseUnavailable) as exc:
            log.warning("webhooks API: %s", exc)
            busy = EventsProblem(STORE_UNAVAILABLE, headers=[("retry-after", "1")])
            return busy.reply(exchange.request_id)


def consumer_api(events: Events) -> EndpointProvider:
    """The API's endpoints over ``events``, for each snapshot whose config enables it."""

    def build(config: PorticoConfig, extensions: Extensions) -> Sequence[BuiltinEndpoint]:
        if config.events is None or not config.events.api.enabled:
            return ()
        return ConsumerWebhooksApi(events, config, extensions).endpoints()

    return EndpointProvider(build)
