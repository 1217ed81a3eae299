"""The settings of the ``rate-limit`` policy, validated when the config is loaded
(docs/rate-limits.md).

They live apart from the request-time code (:mod:`.policy`), which is compiled with mypyc, and
mypyc cannot compile pydantic models.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from portico.config.model import NAME_PATTERN, Duration
from portico.core.http import HTTP_METHODS

__all__ = ["KEY_PARTS", "LimitSettings", "RateLimitSettings"]

KEY_PARTS = ("consumer", "tenant", "route", "service", "ip")
"""What a counter may be keyed by, besides ``header:<Name>``."""
_HEADER_PART = re.compile(r"^header:([!#$%&'*+.^_`|~0-9A-Za-z-]+)$")
MAX_SLIDING_LIMIT = 10_000_000
"""With a window of at most a day, ``limit x window in ms`` stays below 2**53: Lua's doubles
count as exactly as Python's integers."""


def _key_part(value: str) -> str:
    if value in KEY_PARTS:
        return value
    match = _HEADER_PART.match(value)
    if match is None:
        raise ValueError(
            f"{value!r} is not a key: use consumer, tenant, route, service, ip or header:<Name>"
        )
    return "header:" + match.group(1).lower()


KeyPart = Annotated[str, AfterValidator(_key_part)]


class LimitSettings(BaseModel):
    """One limit: ``limit`` requests per sliding ``window``, or per calendar ``period``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=NAME_PATTERN, max_length=64)
    """Names the limit in the ``RateLimit`` fields, the 429 and ``portico usage``. Limits of
    the same name, window and key values share one counter wherever they are configured."""
    limit: int = Field(ge=1, le=10**12)
    window: Duration | None = None
    """A sliding window of whole seconds, 1s to 24h."""
    period: Literal["day", "month"] | None = None
    """A calendar day or month in the policy's ``time_zone``: a quota."""
    by: tuple[KeyPart, ...] = Field(("consumer",), min_length=1, max_length=4)
    """What one counter is kept for: ``[consumer]`` (one per consumer), ``[consumer, route]``,
    ``[ip]``, ``[header:X-Client-Id]``... A value the request does not have (no consumer before
    authentication, a missing header) is replaced by the client address."""

    @model_validator(mode="after")
    def _one_span(self) -> LimitSettings:
        if (self.window is None) == (self.period is None):
            raise ValueError("give either window (a rate such as 1s or 1m) or period (day, month)")
        if self.window is not None:
            if self.window < 1 or self.window > 86400 or self.window != int(self.window):
                raise ValueError("window is whole seconds from 1s to 24h (use period for quotas)")
            if self.limit > MAX_SLIDING_LIMIT:
                raise ValueError(f"a window's limit is at most {MAX_SLIDING_LIMIT}")
        if len(set(self.by)) != len(self.by):
            raise ValueError("by names a key twice")
        return self


def _unique_names(limits: tuple[LimitSettings, ...]) -> tuple[LimitSettings, ...]:
    seen: set[str] = set()
    for limit in limits:
        if limit.name in seen:
            raise ValueError(f"the limit name {limit.name!r} is used twice")
        seen.add(limit.name)
    return limits


Limits = Annotated[tuple[LimitSettings, ...], AfterValidator(_unique_names)]


class RateLimitSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    limits: Limits = Field(min_length=1, max_length=8)
    """Every limit applies; a request is admitted only when each has room, and then takes one
    from each."""
    plans: dict[Annotated[str, Field(pattern=NAME_PATTERN)], Limits] = {}
    """Limits by plan name, used instead of ``limits`` for a consumer whose metadata (or whose
    tenant's metadata) has ``plan_key: <plan>``."""
    plan_key: str = "plan"
    """The metadata key that names a consumer's plan."""
    time_zone: str = "UTC"
    """The zone whose calendar a ``period`` follows (an IANA name such as Europe/Paris)."""
    on_redis_failure: Literal["open", "closed"] = "open"
    """Redis did not answer: let the request through (``open``) or refuse it with 503."""
    lease: Literal["auto", "off"] = "auto"
    """With Redis: each gateway process takes permits a few at a time and decides the requests
    they cover without a round trip (``auto``; never more than the limit, at worst a few less),
    or asks Redis for every request (``off``: the ``RateLimit`` fields exact to the unit)."""
    ipv6_prefix: int = Field(64, ge=32, le=128)
    """IPv6 clients are counted by this prefix: one host usually has a whole /64."""
    exempt_methods: tuple[str, ...] = ()
    """Methods not counted (and not limited), such as OPTIONS for CORS preflights."""

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not a time zone (an IANA name: Europe/Paris)") from exc
        return value

    @field_validator("exempt_methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        upper = tuple(m.upper() for m in value)
        unknown = [m for m in upper if m not in HTTP_METHODS]
        if unknown:
            raise ValueError(f"unknown HTTP method {unknown[0]!r}")
        return upper

    @field_validator("plans")
    @classmethod
    def _plans(cls, value: dict[str, Limits]) -> dict[str, Limits]:
        for name, limits in value.items():
            if not limits:
                raise ValueError(f"plan {name!r} has no limits")
        return value
