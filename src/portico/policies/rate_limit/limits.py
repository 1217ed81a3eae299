"""The limits of a policy as the request-time code reads them: plain objects copied out of the
settings when the snapshot is built (no pydantic at request time)."""

from __future__ import annotations

import math
from zoneinfo import ZoneInfo

from portico.config.model import PorticoConfig
from portico.policies.rate_limit.algorithm import CALENDAR, SLIDING
from portico.policies.rate_limit.keys import KeyMaker
from portico.policies.rate_limit.periods import CalendarPeriod
from portico.policies.rate_limit.settings import LimitSettings

__all__ = ["CompiledLimit", "LimitSet", "counter_prefix", "plan_of", "policy_field"]


def counter_prefix(limit: LimitSettings) -> str:
    """The start of the counter keys of a limit: its name and its window (or period), so that
    limits of one name with different windows never share a counter."""
    span = f"{int(limit.window)}s" if limit.window is not None else str(limit.period)
    return f"rl:{limit.name}:{span}:"


def plan_of(config: PorticoConfig, consumer_id: str, plan_key: str) -> str | None:
    """The plan a consumer (``tenant/name``) is on: its metadata's, else its tenant's."""
    tenant_name, _, name = consumer_id.partition("/")
    tenant = config.tenants.get(tenant_name)
    if tenant is None:
        return None
    consumer = tenant.consumers.get(name)
    if consumer is not None and plan_key in consumer.metadata:
        return consumer.metadata[plan_key]
    return tenant.metadata.get(plan_key)


T_TEXTS_UP_TO = 3600
"""Windows up to this many seconds have their ``t`` parameters made once."""


class CompiledLimit:
    __slots__ = (
        "field_start",
        "keys",
        "kind",
        "limit",
        "limit_text",
        "name",
        "period",
        "span_text",
        "t_texts",
    )

    def __init__(self, limit: LimitSettings, keys: KeyMaker, zone: ZoneInfo) -> None:
        self.name = limit.name
        self.field_start = f'"{limit.name}";r='
        """The start of this limit's item in a ``RateLimit`` field (:mod:`.fields`)."""
        self.limit = limit.limit
        self.limit_text = str(limit.limit)
        self.keys = keys
        self.period: CalendarPeriod | None = None
        self.t_texts: tuple[str, ...] = ()
        """``;t=0``, ``;t=1``... up to the window's length in seconds (an hour at most): the end
        of a ``RateLimit`` item, made once (:func:`.fields.admitted_field`)."""
        if limit.window is not None:
            self.kind = SLIDING
            self.span_text = str(int(limit.window * 1000))
            if limit.window <= T_TEXTS_UP_TO:
                self.t_texts = tuple(f";t={t}" for t in range(math.ceil(limit.window) + 1))
        else:
            self.kind = CALENDAR
            self.span_text = ""
            self.period = CalendarPeriod(str(limit.period), zone)


def policy_field(limits: tuple[LimitSettings, ...]) -> str:
    """The ``RateLimit-Policy`` field of these limits (see :mod:`.fields`)."""
    items: list[str] = []
    for limit in limits:
        if limit.window is not None:
            items.append(f'"{limit.name}";q={limit.limit};w={int(limit.window)}')
        elif limit.period == "day":
            items.append(f'"{limit.name}";q={limit.limit};w=86400')
        else:
            items.append(f'"{limit.name}";q={limit.limit}')
    return ", ".join(items)


class LimitSet:
    """The limits one request is held to (the policy's, or a plan's), and their policy field."""

    __slots__ = ("limits", "policy_bytes", "policy_field")

    def __init__(self, limits: tuple[CompiledLimit, ...], settings: tuple[LimitSettings, ...]):
        self.limits = limits
        self.policy_field = policy_field(settings)
        self.policy_bytes = self.policy_field.encode("latin-1")
        """The field as the upstream's response head carries it (bytes)."""
