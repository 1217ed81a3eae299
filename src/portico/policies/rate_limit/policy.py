"""The ``rate-limit`` policy at request time (docs/rate-limits.md).

    policies:
      - type: rate-limit
        limits:
          - {name: burst, limit: 20, window: 1s, by: [consumer]}
          - {name: daily, limit: 100000, period: day, by: [consumer]}
        plans:
          gold: [{name: burst, limit: 200, window: 1s}, {name: daily, limit: 5000000, period: day}]
        time_zone: Europe/Paris

Every limit of the request's plan is checked and taken in one atomic step (:mod:`.algorithm`):
in the process's memory with one process (no task is scheduled), in Redis with several. A
refused request gets 429 ``rate-limited`` with ``Retry-After``; every response of the route, its
own errors included, carries ``RateLimit-Policy`` and, once the request was counted,
``RateLimit`` (draft-ietf-httpapi-ratelimit-headers-10, :mod:`.fields`).

Compiled with mypyc (``[tool.portico.native]``): the limits are copied out of the settings into
plain objects when the snapshot is built.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from typing import Final
from zoneinfo import ZoneInfo

from portico.gateway import problems
from portico.gateway.exchange import Exchange, Reply
from portico.gateway.headers import Headers
from portico.gateway.stats import LabelledCounter
from portico.identity.context import BuildContext
from portico.policies.rate_limit.algorithm import COUNT, RESULTS_PER_LIMIT
from portico.policies.rate_limit.fields import admitted_field, limit_field, retry_after
from portico.policies.rate_limit.keys import KeyMaker
from portico.policies.rate_limit.leases import Lease, Leases
from portico.policies.rate_limit.limits import CompiledLimit, LimitSet, counter_prefix, plan_of
from portico.policies.rate_limit.settings import LimitSettings, RateLimitSettings
from portico.shared.state import SharedState, SharedStateUnavailable

__all__ = ["RateLimit", "build"]

log = logging.getLogger("portico.rate_limit")

_STATE = "rate-limit"
"""The start of the exchange state key where a rate-limit policy leaves what it counted."""
_WALL: Final = time.time
_CLOCK: Final = time.monotonic
"""Bound once: compiled, ``time.time()`` looks ``time`` up and then its attribute on every call."""
MAX_WAITS = 2
"""Times a request waits for another's answer from Redis before asking Redis itself."""
LOG_EVERY = 10.0
"""Seconds between two log lines about Redis failing: one line, not one per request."""
REPLACED = frozenset((b"ratelimit", b"ratelimit-policy"))
"""The upstream's own fields of these names do not describe Portico's limits, and a client must
not read two policies of one name: the gateway takes them out of the route's responses before
any response policy runs (``replaced_fields``), whichever way the head goes."""


class Counted:
    """What the policy learnt of one request: the fields it answers with."""

    __slots__ = ("field", "limits")

    def __init__(self, field: str | None, limits: LimitSet) -> None:
        self.field = field
        """The ``RateLimit`` field; ``None`` when the request was not counted."""
        self.limits = limits
        """The limits counted (not counted: the default ones): their ``RateLimit-Policy``."""


class RedisFailures:
    """Counts Redis failures and logs them at most once every :data:`LOG_EVERY` seconds."""

    __slots__ = ("_counter", "_last", "_suppressed", "route")

    def __init__(self, counter: LabelledCounter, route: str) -> None:
        self._counter = counter
        self.route = route
        self._last = 0.0
        self._suppressed = 0

    def record(self, outcome: str, error: SharedStateUnavailable) -> None:
        self._counter.inc((self.route, outcome))
        now = time.monotonic()
        if now - self._last < LOG_EVERY:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last line)" if self._suppressed else ""
        log.warning(
            "rate limits of route %s: %s; requests are %s%s",
            self.route,
            error,
            "let through (on_redis_failure: open)"
            if outcome == "open"
            else "refused (on_redis_failure: closed)",
            more,
        )
        self._last = now
        self._suppressed = 0


class RateLimit:
    __slots__ = (
        "_closed",
        "_default",
        "_exempt",
        "_failures",
        "_leases",
        "_limited",
        "_plans",
        "_refills",
        "_route",
        "_state",
        "_state_key",
        "_uncounted",
        "needs_body",
        "replaced_fields",
    )

    def __init__(
        self,
        state: SharedState,
        default: LimitSet,
        plans: Mapping[str, LimitSet],
        exempt: frozenset[str],
        closed: bool,
        limited: LabelledCounter,
        failures: RedisFailures,
        route: str,
        leases: Leases | None,
    ) -> None:
        self._state = state
        self._leases = leases
        """This process's leases of Redis permits (None: every request counted in the state
        itself, in the process or one round trip to Redis each)."""
        self._default = default
        self._plans = dict(plans)
        """Consumer id -> the limits of its plan; a consumer not listed has the default."""
        self._exempt = exempt
        self._closed = closed
        self._limited = limited
        self._failures = failures
        self._route = route
        self._state_key = f"{_STATE}:{id(self)}"
        """Where this policy leaves what it counted for its ``on_response`` (a route may have
        two rate-limit entries: its service's and its own are merged by type, a list is not)."""
        self._refills: set[asyncio.Task[None]] = set()
        """Leases being asked for ahead (kept referenced until done)."""
        self._uncounted = Counted(None, default)
        """The fields of a request not counted (an earlier policy answered, or Redis was away):
        the default limits' policy only."""
        self.needs_body = False
        self.replaced_fields = REPLACED

    def on_request(self, exchange: Exchange) -> Reply | Awaitable[Reply | None] | None:
        if exchange.method in self._exempt:
            return None
        chosen = self._default
        identity = exchange.identity
        if identity is not None and self._plans:
            chosen = self._plans.get(identity.consumer, self._default)
        now = _WALL()
        leases = self._leases
        if leases is not None:
            return self._leased(exchange, chosen, leases, now)
        keys: list[str] = []
        args: list[str] = []
        for limit in chosen.limits:
            keys.append(limit.keys.key(exchange))
            _add_arguments(args, limit, now, 1)
        state = self._state
        if state.local:
            return self._decide(exchange, chosen, state.run_now(COUNT, keys, args), now)
        return self._remote(exchange, chosen, keys, args, now)

    def _leased(
        self, exchange: Exchange, chosen: LimitSet, leases: Leases, now: float, waits: int = 0
    ) -> Reply | Awaitable[Reply | None] | None:
        """Every limit answered from this process's leases when each holds a permit (no round
        trip); else, when Redis is being asked for a spent one, after its answer (``waits``:
        how many times this request waited so); else one request to Redis for the limits whose
        lease is spent."""
        clock = _CLOCK()
        limits = chosen.limits
        count = len(limits)
        if count == 1 and waits == 0:
            # The common case, one limit whose lease holds a permit: no lists, no result.
            limit = limits[0]
            key = limit.keys.key(exchange)
            lease = leases.of(key, clock)
            if lease.usable(clock):
                remaining = lease.take()
                reset = int((lease.deadline - clock) * 1000)
                self._note(exchange, admitted_field(limit, remaining, reset, now), chosen)
                if lease.low():
                    self._ask_ahead(key, limit, lease, clock, now)
                return None
        keys: list[str] = []
        held: list[Lease] = []
        usable = True
        for i in range(count):
            limit = limits[i]
            key = limit.keys.key(exchange)
            keys.append(key)
            lease = leases.of(key, clock)
            held.append(lease)
            if not lease.usable(clock):
                usable = False
        if usable:
            result = [1]
            for i in range(count):
                lease = held[i]
                remaining = lease.take()
                reset = int((lease.deadline - clock) * 1000) if limits[i].period is None else 0
                result.extend((remaining, 0, reset, 1, lease.window))
                if lease.low():
                    self._ask_ahead(keys[i], limits[i], lease, clock, now)
            return self._decide(exchange, chosen, result, now)
        if waits < MAX_WAITS:
            for i in range(count):
                lease = held[i]
                if lease.pending > 0 and not lease.usable(clock):
                    return self._after_arrival(exchange, chosen, leases, lease.waiter(), waits)
        args: list[str] = []
        wants: list[int] = []
        for i in range(count):
            lease = held[i]
            if lease.usable(clock):
                lease.left -= 1  # reserved for this request: given back if it is refused
                want = 0
            else:
                want = lease.ask(clock)
                lease.pending += 1
            wants.append(want)
            _add_arguments(args, limits[i], now, want)
        return self._remote_leased(exchange, chosen, keys, args, held, wants, now, clock)

    async def _after_arrival(
        self,
        exchange: Exchange,
        chosen: LimitSet,
        leases: Leases,
        arrival: asyncio.Future[None],
        waits: int,
    ) -> Reply | None:
        # Shielded: a request given up (its client gone) must not cancel the others' wait.
        await asyncio.shield(arrival)
        outcome = self._leased(exchange, chosen, leases, time.time(), waits + 1)
        if outcome is None or isinstance(outcome, Reply):
            return outcome
        return await outcome

    async def _remote_leased(
        self,
        exchange: Exchange,
        chosen: LimitSet,
        keys: list[str],
        args: list[str],
        held: list[Lease],
        wants: list[int],
        now: float,
        sent: float,
    ) -> Reply | None:
        reserved = [lease.window for lease in held]
        try:
            result = await self._state.run(COUNT, keys, args)
        except BaseException as exc:  # cancelled too (the client left): nothing stays pending
            for lease, want, window in zip(held, wants, reserved, strict=True):
                if want == 0:
                    lease.give_back(window)
                else:
                    lease.settle()
            if isinstance(exc, SharedStateUnavailable):
                return self._unavailable(exchange, exc)
            raise
        admitted = result[0] == 1
        clock = time.monotonic()
        for i, limit in enumerate(chosen.limits):
            lease = held[i]
            slot = 1 + i * RESULTS_PER_LIMIT
            if wants[i] == 0:
                if not admitted:
                    lease.give_back(reserved[i])
                result[slot] = lease.remaining + lease.left
                if limit.period is None:
                    result[slot + 2] = max(0, int((lease.deadline - clock) * 1000))
                continue
            if admitted:
                if limit.period is None:
                    deadline = sent + result[slot + 2] / 1000
                else:
                    deadline = sent + (limit.period.at(now)[1] - now)
                result[slot] = lease.grant(
                    result[slot + 4], result[slot + 3], result[slot], deadline, clock
                )
            lease.settle()
        return self._decide(exchange, chosen, result, now)

    def _ask_ahead(
        self, key: str, limit: CompiledLimit, lease: Lease, clock: float, now: float
    ) -> None:
        """Ask Redis for the next lease of ``key`` in the background."""
        want = lease.ask(clock)
        lease.pending += 1
        args: list[str] = []
        _add_arguments(args, limit, now, want)
        task = asyncio.get_running_loop().create_task(
            self._refill(key, limit, lease, args, now, clock)
        )
        self._refills.add(task)
        task.add_done_callback(self._refills.discard)

    async def _refill(
        self, key: str, limit: CompiledLimit, lease: Lease, args: list[str], now: float, sent: float
    ) -> None:
        try:
            result = await self._state.run(COUNT, [key], args)
        except BaseException as exc:
            lease.settle()
            if isinstance(exc, SharedStateUnavailable):
                # No request is answered by this lease: those that find it spent ask Redis
                # themselves, and follow on_redis_failure (logged and counted) if it is away.
                return
            raise
        granted = result[4]
        if result[0] == 1 and granted > 0:
            if limit.period is None:
                deadline = sent + result[3] / 1000
            else:
                deadline = sent + (limit.period.at(now)[1] - now)
            lease.grant(result[5], granted, result[1], deadline, time.monotonic(), 0)
        lease.settle()

    async def _remote(
        self, exchange: Exchange, chosen: LimitSet, keys: list[str], args: list[str], now: float
    ) -> Reply | None:
        try:
            result = await self._state.run(COUNT, keys, args)
        except SharedStateUnavailable as exc:
            return self._unavailable(exchange, exc)
        return self._decide(exchange, chosen, result, now)

    def _unavailable(self, exchange: Exchange, error: SharedStateUnavailable) -> Reply | None:
        if self._closed:
            self._failures.record("closed", error)
            headers = Headers([("retry-after", "1")])
            return problems.problem(
                problems.SHARED_STATE_UNAVAILABLE, exchange.request_id, headers=headers
            )
        self._failures.record("open", error)
        return None

    def _decide(
        self, exchange: Exchange, chosen: LimitSet, result: list[int], now: float
    ) -> Reply | None:
        limits = chosen.limits
        field, wait, refused = limit_field(limits, result, now)
        self._note(exchange, field, chosen)
        if refused is None:
            return None
        self._limited.inc((self._route, refused.name))
        seconds = retry_after(wait)
        headers = Headers([("retry-after", str(seconds))])
        detail = f"the limit {refused.name!r} of {refused.limit} requests is spent here"
        return problems.problem(
            problems.RATE_LIMITED,
            exchange.request_id,
            detail,
            headers=headers,
            limit=refused.name,
            retry_after=seconds,
        )

    def _note(self, exchange: Exchange, field: str, chosen: LimitSet) -> None:
        """Leave the ``RateLimit`` field of a counted request for the response hooks: the field
        alone when the limits are the default ones (most requests: nothing more to allocate),
        else with the plan's limits."""
        note = field if chosen is self._default else Counted(field, chosen)
        exchange.state[self._state_key] = note

    def on_response(self, exchange: Exchange, status: int, headers: Headers) -> None:
        # The upstream's own fields of these names are gone already (:data:`REPLACED`).
        limits, field = self._noted(exchange)
        headers.add("ratelimit-policy", limits.policy_field)
        if field is not None:
            headers.add("ratelimit", field)

    def response_fields(
        self, exchange: Exchange, status: int, fields: list[tuple[bytes, bytes]]
    ) -> None:
        """``on_response`` on an upstream's head of bytes."""
        limits, field = self._noted(exchange)
        fields.append((b"ratelimit-policy", limits.policy_bytes))
        if field is not None:
            fields.append((b"ratelimit", field.encode("latin-1")))

    def _noted(self, exchange: Exchange) -> tuple[LimitSet, str | None]:
        """What the response fields of ``exchange`` say (:meth:`_note`): the limits counted
        and their ``RateLimit`` field, or (nothing counted) the default limits and no field.
        Both hooks ask here; nothing is allocated."""
        note = exchange.state.get(self._state_key)
        if isinstance(note, str):
            return self._default, note
        counted = note if isinstance(note, Counted) else self._uncounted
        return counted.limits, counted.field


def _add_arguments(args: list[str], limit: CompiledLimit, now: float, want: int) -> None:
    """The counting script's five arguments for one limit (:mod:`.algorithm`)."""
    period = limit.period
    if period is None:
        args.extend(("0", limit.limit_text, limit.span_text, "0", str(want)))
    else:
        number, end = period.at(now)
        # Kept an hour past its period, so that `portico usage` still reads it then.
        ttl = int((end - now + 3600.0) * 1000)
        args.extend(("1", limit.limit_text, str(number), str(ttl), str(want)))


def _limit_set(
    settings: tuple[LimitSettings, ...], route: str, service: str, prefix: int, zone: ZoneInfo
) -> LimitSet:
    compiled = tuple(
        CompiledLimit(
            limit, KeyMaker(limit.by, route, service, prefix, counter_prefix(limit)), zone
        )
        for limit in settings
    )
    return LimitSet(compiled, settings)


def build(settings: RateLimitSettings, context: BuildContext) -> RateLimit:
    zone = ZoneInfo(settings.time_zone)
    route, service = context.route_name, context.service_name
    prefix = settings.ipv6_prefix
    default = _limit_set(settings.limits, route, service, prefix, zone)
    by_plan = {
        name: _limit_set(limits, route, service, prefix, zone)
        for name, limits in settings.plans.items()
    }
    plans: dict[str, LimitSet] = {}
    if by_plan:
        for tenant_name, tenant in context.config.tenants.items():
            for name in tenant.consumers:
                consumer_id = f"{tenant_name}/{name}"
                plan = plan_of(context.config, consumer_id, settings.plan_key)
                if plan is not None and plan in by_plan:
                    plans[consumer_id] = by_plan[plan]
    stats = context.extensions.stats
    limited = stats.counter(
        "portico_rate_limited_requests",
        "Requests refused with 429 by a rate-limit policy, by route and by the limit that "
        "refused them.",
        ("route", "limit"),
    )
    failures = stats.counter(
        "portico_rate_limit_redis_failures",
        "Requests whose rate limits could not be checked because Redis did not answer, by "
        "route and outcome: open (let through) or closed (refused with 503).",
        ("route", "outcome"),
    )
    return RateLimit(
        context.extensions.shared,
        default,
        plans,
        frozenset(settings.exempt_methods),
        settings.on_redis_failure == "closed",
        limited,
        RedisFailures(failures, route),
        route,
        Leases() if settings.lease == "auto" and not context.extensions.shared.local else None,
    )
