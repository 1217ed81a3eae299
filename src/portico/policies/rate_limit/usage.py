"""A consumer's current usage and remaining quota, per limit: what ``portico usage`` prints.

It reads the same counters the gateways write, through :class:`~portico.shared.state.SharedState`
(Redis, when the config has a ``redis`` section). A limit counts one consumer when it is keyed by
``consumer`` or ``tenant``, possibly with ``route`` or ``service``; a limit keyed by client
address or header counts addresses or header values, not consumers, and is not listed.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from zoneinfo import ZoneInfo

from portico.config.model import PorticoConfig
from portico.core.errors import PorticoError
from portico.policies.rate_limit.algorithm import (
    calendar_state,
    sliding_state,
    sliding_used,
)
from portico.policies.rate_limit.limits import counter_prefix, plan_of
from portico.policies.rate_limit.periods import CalendarPeriod
from portico.policies.rate_limit.settings import LimitSettings, RateLimitSettings
from portico.policies.registry import effective_policies
from portico.shared import open_shared_state
from portico.shared.state import SharedState

__all__ = ["Usage", "consumer_usage", "format_usage", "usage_command"]

POLICY_TYPE = "rate-limit"


@dataclass(frozen=True, slots=True)
class Usage:
    limit: str
    """The limit's name."""
    scope: str
    """Where it counts: ``every route`` or the route or service it is kept for."""
    span: str
    """``1h``, ``day (Europe/Paris)``..."""
    used: int
    quota: int
    resets_in: int
    """Seconds until the count falls (the end of the period or of the current window)."""

    @property
    def remaining(self) -> int:
        return max(0, self.quota - self.used)


@dataclass(frozen=True, slots=True)
class _Counter:
    key: str
    limit: LimitSettings
    scope: str
    zone: str


def _key_value(limit: LimitSettings, consumer: str, tenant: str, route: str, service: str) -> str:
    parts: list[str] = []
    for part in limit.by:
        if part == "consumer":
            parts.append("c=" + consumer)
        elif part == "tenant":
            parts.append("t=" + tenant)
        elif part == "route":
            parts.append("r=" + route)
        elif part == "service":
            parts.append("s=" + service)
    return "|".join(parts)


def _counters(config: PorticoConfig, consumer_id: str) -> Iterator[_Counter]:
    tenant = consumer_id.partition("/")[0]
    seen: set[str] = set()
    for route in config.routes:
        for spec in effective_policies(config, route):
            if spec.type != POLICY_TYPE:
                continue
            settings = RateLimitSettings.model_validate(dict(spec.model_extra or {}))
            plan = plan_of(config, consumer_id, settings.plan_key)
            limits = settings.plans.get(plan, settings.limits) if plan else settings.limits
            for limit in limits:
                if not {"consumer", "tenant"} & set(limit.by) or not set(limit.by) <= {
                    "consumer",
                    "tenant",
                    "route",
                    "service",
                }:
                    continue
                key = counter_prefix(limit) + _key_value(
                    limit, consumer_id, tenant, route.name, route.service
                )
                if key in seen:
                    continue
                seen.add(key)
                if "route" in limit.by:
                    scope = f"route {route.name}"
                elif "service" in limit.by:
                    scope = f"service {route.service}"
                else:
                    scope = "every route"
                yield _Counter(key, limit, scope, settings.time_zone)


async def consumer_usage(
    config: PorticoConfig, consumer_id: str, state: SharedState, now: float | None = None
) -> list[Usage]:
    """The usage of every limit that counts ``consumer_id`` (``tenant/name``)."""
    now = time.time() if now is None else now
    now_ms = int(now * 1000)
    out: list[Usage] = []
    for counter in _counters(config, consumer_id):
        raw = await state.get(counter.key)
        limit = counter.limit
        if limit.window is not None:
            window = int(limit.window * 1000)
            index = now_ms // window
            elapsed = now_ms - index * window
            previous, current = sliding_state(raw, index)
            used = sliding_used(previous, current, elapsed, window)
            resets = math.ceil((window - elapsed) / 1000)
            span = f"{int(limit.window)}s window"
        else:
            period = CalendarPeriod(str(limit.period), ZoneInfo(counter.zone))
            number, end = period.at(now)
            used = calendar_state(raw, number)
            resets = math.ceil(end - now)
            span = f"{limit.period} ({counter.zone})"
        out.append(Usage(limit.name, counter.scope, span, used, limit.limit, resets))
    return out


def format_usage(consumer_id: str, rows: list[Usage]) -> str:
    """A table for people: one line per limit."""
    if not rows:
        return f"{consumer_id}: no rate limit counts this consumer"
    header = ("limit", "counts", "span", "used", "limit", "remaining", "resets in")
    lines = [header] + [
        (
            r.limit,
            r.scope,
            r.span,
            str(r.used),
            str(r.quota),
            str(r.remaining),
            _duration(r.resets_in),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _duration(seconds: int) -> str:
    if seconds >= 86400:
        return f"{seconds // 86400}d {seconds % 86400 // 3600}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60}s"
    return f"{seconds}s"


class UsageUnavailable(PorticoError):
    """``portico usage`` without a ``redis`` section: one process's counters live in its memory,
    where no other process can read them."""


async def usage_command(config: PorticoConfig, consumer_id: str, *, as_json: bool = False) -> int:
    """``portico usage --consumer TENANT/NAME``: read the counters in Redis and print them."""
    if config.redis is None:
        raise UsageUnavailable(
            "portico usage reads the counters from Redis, and this config has no redis section: "
            "a single process keeps its counters in its own memory (docs/rate-limits.md#usage)"
        )
    tenant, _, name = consumer_id.partition("/")
    known = config.tenants.get(tenant)
    if known is None or name not in known.consumers:
        print(f"note: {consumer_id} is not a consumer of the config", file=sys.stderr)
    state = open_shared_state(config.redis)
    try:
        rows = await consumer_usage(config, consumer_id, state)
    finally:
        await state.close()
    if as_json:
        print(json.dumps([{**asdict(row), "remaining": row.remaining} for row in rows], indent=2))
    else:
        print(format_usage(consumer_id, rows))
    return 0
