"""A consumer's current usage and remaining quota, per limit: what ``portico usage`` prints.

It reads the same counters the gateways write, through :class:`~portico.shared.state.SharedState`:
in Redis, when the config has a ``redis`` section; otherwise the one gateway process keeps them in
its memory, and ``portico usage`` asks it, on its operations listener (``GET /usage/TENANT/NAME``,
:func:`usage_report`). A limit counts one consumer when it is keyed by
``consumer`` or ``tenant``, possibly with ``route`` or ``service``; a limit keyed by client
address or header counts addresses or header values, not consumers, and is not listed.
"""

from __future__ import annotations

import http.client
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from urllib.parse import quote
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

__all__ = ["Usage", "consumer_usage", "format_usage", "usage_command", "usage_report"]

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
    """``portico usage`` could not read the counters: no Redis, and the gateway that keeps them
    in its memory does not answer on its operations listener."""


def _rows_json(rows: list[Usage]) -> bytes:
    return json.dumps([{**asdict(row), "remaining": row.remaining} for row in rows]).encode()


async def usage_report(
    config: Callable[[], PorticoConfig], state: SharedState, consumer_id: str
) -> tuple[int, str, bytes]:
    """``GET /usage/TENANT/NAME`` on the operations listener: the consumer's usage as
    ``portico usage --json`` prints it, from this process's counters (``config`` is the one the
    gateway serves now)."""
    rows = await consumer_usage(config(), consumer_id, state)
    return 200, "application/json", _rows_json(rows) + b"\n"


def _from_gateway(config: PorticoConfig, consumer_id: str) -> list[Usage]:
    """The usage the running gateway keeps in its memory, asked on its operations listener."""
    where = config.operations.listen
    address = f"{where.host}:{where.port}"
    if not config.operations.enabled:
        raise UsageUnavailable(
            "portico usage: this config has no redis section, so the gateway keeps its counters "
            "in its memory and is asked on its operations listener, which the config disables "
            "(operations.enabled: false)"
        )
    connection = http.client.HTTPConnection(where.host, where.port, timeout=5)
    try:
        connection.request("GET", "/usage/" + quote(consumer_id, safe="/"))
        response = connection.getresponse()
        body = response.read()
    except OSError as exc:
        raise UsageUnavailable(
            f"portico usage: the gateway keeps its counters in its memory (no redis section), "
            f"and nothing answered on its operations listener at {address} ({exc.strerror or exc})"
            ": is portico serve running with this config?"
        ) from None
    finally:
        connection.close()
    if response.status != 200:
        raise UsageUnavailable(
            f"portico usage: the operations listener at {address} answered {response.status} "
            "to /usage: is it a Portico of this version?"
        )
    return [
        Usage(r["limit"], r["scope"], r["span"], r["used"], r["quota"], r["resets_in"])
        for r in json.loads(body)
    ]


async def usage_command(config: PorticoConfig, consumer_id: str, *, as_json: bool = False) -> int:
    """``portico usage --consumer TENANT/NAME``: the counters in Redis, or those the running
    gateway keeps in its memory (asked on its operations listener), printed."""
    tenant, _, name = consumer_id.partition("/")
    known = config.tenants.get(tenant)
    if known is None or name not in known.consumers:
        print(f"note: {consumer_id} is not a consumer of the config", file=sys.stderr)
    if config.redis is None:
        rows = _from_gateway(config, consumer_id)
    else:
        state = open_shared_state(config.redis)
        try:
            rows = await consumer_usage(config, consumer_id, state)
        finally:
            await state.close()
    if as_json:
        print(json.dumps(json.loads(_rows_json(rows)), indent=2))
    else:
        print(format_usage(consumer_id, rows))
    return 0
