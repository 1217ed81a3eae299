"""The ``idempotency`` policy at request time: ``Idempotency-Key``
(draft-ietf-httpapi-idempotency-key-header-07), docs/idempotency.md.

    policies:
      - type: idempotency
        required: true      # a POST or PATCH without a key is 400
        retention: 24h

The first request with a key takes the key's lock (atomically, in the shared state) and goes
upstream; its response is stored when its body is whole (``on_response_body``), and the lock
becomes the record. A retry with the same key and the same payload (method, path, query and
body, as a SHA-256) gets the stored response again, marked ``Idempotent-Replayed: true``;
with another payload 422; while the first is in flight 409. A response not stored (a 5xx, a
body over ``max_body_size``, Portico's own answer) frees the key in ``on_complete``. Keys
belong to the consumer (or, without authentication, to the client address): one client
cannot replay another's.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from urllib.parse import quote

from portico.gateway import problems
from portico.gateway.completion import CLIENT_GONE, Completion
from portico.gateway.exchange import Exchange, Reply
from portico.gateway.headers import Headers
from portico.gateway.policy import Outcome
from portico.gateway.stats import LabelledCounter
from portico.identity.context import BuildContext
from portico.policies.idempotency.records import (
    ACQUIRED,
    BEGIN,
    FINISH,
    IN_FLIGHT,
    RELEASE,
    STORED,
    StoredAnswer,
    decode_answer,
    encode_answer,
)
from portico.policies.idempotency.settings import IdempotencySettings
from portico.shared.failures import StateFailures, unavailable
from portico.shared.state import Script, SharedState, SharedStateUnavailable

__all__ = ["REPLAYED_HEADER", "IdempotencyKeys", "build"]

REPLAYED_HEADER = "idempotent-replayed"
"""Set to ``true`` on a replayed response (the name Stripe and others use)."""

_STATE = "idempotency"
_NOT_STORED = frozenset(
    {
        "connection",
        "content-length",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


class Held:
    """The key a request holds while it is in flight."""

    __slots__ = ("done", "fingerprint", "key", "lock")

    def __init__(self, key: str, fingerprint: str, lock: str) -> None:
        self.key = key
        self.fingerprint = fingerprint
        self.lock = lock
        self.done = False
        """Stored, or released: nothing left to do in ``on_complete``."""


class IdempotencyKeys:
    __slots__ = (
        "_failures",
        "_lock_ms",
        "_max_key",
        "_methods",
        "_outcomes",
        "_required",
        "_retention_ms",
        "_route",
        "_route_start",
        "_shared",
        "_store_5xx",
        "_tasks",
        "needs_body",
        "response_body_limit",
    )

    def __init__(
        self,
        settings: IdempotencySettings,
        route: str,
        shared: SharedState,
        outcomes: LabelledCounter,
        failures: StateFailures,
    ) -> None:
        self.needs_body = True  # the fingerprint covers the body
        self.response_body_limit = settings.max_body_size
        self._methods = frozenset(settings.methods)
        self._required = settings.required
        self._retention_ms = str(int(settings.retention * 1000))
        self._lock_ms = str(int(settings.lock_timeout * 1000))
        self._max_key = settings.max_key_length
        self._store_5xx = settings.store_server_errors
        self._route = route
        self._route_start = "idem:" + quote(route, safe="") + ":"
        self._shared = shared
        self._outcomes = outcomes
        self._failures = failures
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the request ---------------------------------------------------------------------------

    def on_request(self, exchange: Exchange) -> Outcome:
        if exchange.method not in self._methods:
            return None
        values = exchange.headers.get_all("idempotency-key")
        if not values:
            if not self._required:
                return None
            self._count("missing")
            detail = f"send an Idempotency-Key with {exchange.method} on this route"
            return problems.problem(problems.IDEMPOTENCY_KEY_MISSING, exchange.request_id, detail)
        given = parse_key(values[0]) if len(values) == 1 else None
        if given is None or len(given) > self._max_key:
            self._count("invalid")
            detail = (
                "the Idempotency-Key must be one string of 1 to "
                f'{self._max_key} characters, such as "4f1c..."'
            )
            return problems.problem(problems.IDEMPOTENCY_KEY_INVALID, exchange.request_id, detail)
        key = self._route_start + _digest(_owner(exchange) + "\x00" + given)
        fingerprint = _fingerprint(exchange)
        lock = "L" + fingerprint + os.urandom(8).hex()
        held = Held(key, fingerprint, lock)
        args = (lock, self._lock_ms, fingerprint)
        shared = self._shared
        if not shared.local:
            return self._begin(exchange, held, args)
        outcome = shared.run_now(BEGIN, (key,), args)[0]
        found = shared.get_now(key) if outcome == STORED else None
        return self._decided(exchange, held, outcome, found)

    async def _begin(
        self, exchange: Exchange, held: Held, args: tuple[str, str, str]
    ) -> Reply | None:
        shared = self._shared
        try:
            outcome = (await shared.run(BEGIN, (held.key,), args))[0]
            found = await shared.get(held.key) if outcome == STORED else None
        except SharedStateUnavailable as exc:
            self._failures.failed(exc)
            if self._failures.fails_closed:
                return unavailable(exchange.request_id)
            return None  # open: through, without idempotency
        return self._decided(exchange, held, outcome, found)

    def _decided(
        self, exchange: Exchange, held: Held, outcome: int, found: bytes | None
    ) -> Reply | None:
        if outcome == ACQUIRED:
            exchange.state[_STATE] = held
            return None
        request_id = exchange.request_id
        if outcome == IN_FLIGHT:
            self._count("in_flight")
            retry = Headers([("retry-after", "1")])
            detail = "the first request with this key has not been answered yet; retry later"
            return problems.problem(
                problems.IDEMPOTENCY_KEY_IN_FLIGHT, request_id, detail, headers=retry
            )
        if outcome == STORED:
            answer = decode_answer(found) if found else None
            if answer is not None:
                self._count("replayed")
                headers = Headers(answer.headers)
                headers.set(REPLAYED_HEADER, "true")
                return Reply(answer.status, headers, answer.body)
            return self._vanished(exchange)
        self._count("mismatch")
        detail = "this key was used for a request with another method, path or body"
        return problems.problem(problems.IDEMPOTENCY_KEY_REUSED, request_id, detail)

    def _vanished(self, exchange: Exchange) -> Reply:
        # The record expired between the two reads (rare), or is unreadable: the request is
        # refused as in flight rather than risk running twice; its retry finds the key free.
        self._count("in_flight")
        retry = Headers([("retry-after", "1")])
        return problems.problem(
            problems.IDEMPOTENCY_KEY_IN_FLIGHT, exchange.request_id, headers=retry
        )

    # -- the response --------------------------------------------------------------------------

    def on_response(self, exchange: Exchange, status: int, headers: Headers) -> None:
        held = exchange.state.get(_STATE)
        if not isinstance(held, Held) or held.done:
            return
        if status >= 500 and not self._store_5xx:
            # Freed now rather than once the answer is sent: the client's retry may follow it
            # at once (with Redis, the release is on its way while the answer goes out).
            self._release(held)
        elif status == 204:  # no body hook sees it: it is whole now
            self._store(held, status, headers, b"")

    def on_response_body(
        self, exchange: Exchange, status: int, headers: Headers, body: bytes | None
    ) -> bytes | Reply | None:
        held = exchange.state.get(_STATE)
        if not isinstance(held, Held) or held.done:
            return None
        if body is None:
            self._release(held)  # not stored: the client may retry
            return None
        self._store(held, status, headers, body)
        return None

    def on_complete(self, exchange: Exchange, completion: Completion) -> None:
        held = exchange.state.get(_STATE)
        if not isinstance(held, Held) or held.done:
            return
        if completion.failure == CLIENT_GONE:
            # The request went upstream but its answer was never stored: the upstream may have
            # acted. The lock stays until lock_timeout, so a quick retry gets 409 rather than
            # running a second time.
            held.done = True
            return
        self._release(held)  # Portico's own answer, or the upstream broke off

    def _release(self, held: Held) -> None:
        held.done = True
        self._count("not_stored")
        self._apply(RELEASE, held.key, (held.lock,))

    def _store(self, held: Held, status: int, headers: Headers, body: bytes) -> None:
        held.done = True
        kept = [(k, v) for k, v in headers.items if k.lower() not in _NOT_STORED]
        record = encode_answer(held.fingerprint, StoredAnswer(status, kept, body))
        self._count("stored")
        self._apply(FINISH, held.key, (held.lock, record, self._retention_ms))

    def _apply(self, script: Script, key: str, args: tuple[str, ...]) -> None:
        shared = self._shared
        if shared.local:
            shared.run_now(script, (key,), args)
            return
        task = asyncio.get_running_loop().create_task(self._run(script, key, args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, script: Script, key: str, args: tuple[str, ...]) -> None:
        try:
            await self._shared.run(script, (key,), args)
        except SharedStateUnavailable as exc:
            self._failures.failed(exc)

    def _count(self, outcome: str) -> None:
        self._outcomes.inc((self._route, outcome))


def parse_key(value: str) -> str | None:
    """The key of an ``Idempotency-Key`` field: a Structured Field string (``"abc"``, RFC 9651
    §3.3.3), or, as many clients send it, a bare run of visible ASCII characters; ``None`` when
    it is neither or empty."""
    value = value.strip(" \t")
    if not value:
        return None
    if value[0] == '"':
        out: list[str] = []
        index = 1
        while index < len(value):
            char = value[index]
            if char == "\\":
                if index + 1 >= len(value) or value[index + 1] not in '"\\':
                    return None
                out.append(value[index + 1])
                index += 2
                continue
            if char == '"':
                rest = value[index + 1 :].strip(" \t")
                # Parameters (";a=1") are allowed by RFC 9651 and ignored; anything else is not.
                if rest and not rest.startswith(";"):
                    return None
                return "".join(out) or None
            if not " " <= char <= "~":
                return None
            out.append(char)
            index += 1
        return None  # no closing quote
    for char in value:
        if not "!" <= char <= "~" or char in "\\,":
            return None
    return value


def _owner(exchange: Exchange) -> str:
    identity = exchange.identity
    if identity is not None:
        return "c\x00" + (identity.tenant or "") + "\x00" + identity.consumer
    return "ip\x00" + exchange.client_ip


def _fingerprint(exchange: Exchange) -> str:
    digest = hashlib.sha256()
    head = exchange.method + "\x00" + exchange.path + "\x00" + exchange.query + "\x00"
    digest.update(head.encode("utf-8", "surrogateescape"))
    digest.update(exchange.body or b"")
    return digest.hexdigest()


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def build(settings: IdempotencySettings, context: BuildContext) -> IdempotencyKeys:
    stats = context.extensions.stats
    route = context.route_name
    outcomes = stats.counter(
        "portico_idempotency_requests",
        "Requests with an Idempotency-Key, by outcome: stored, replayed, in_flight (409), "
        "mismatch (422), missing and invalid (400), not_stored (the key was freed).",
        ("route", "outcome"),
    )
    failures = StateFailures("idempotency", route, stats, settings.on_redis_failure)
    return IdempotencyKeys(settings, route, context.extensions.shared, outcomes, failures)
