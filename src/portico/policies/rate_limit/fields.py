"""The ``RateLimit-Policy`` and ``RateLimit`` fields of draft-ietf-httpapi-ratelimit-headers-10.

Both are Structured Field Lists (RFC 9651) of quoted policy names with parameters:

    RateLimit-Policy: "burst";q=20;w=1, "daily";q=100000;w=86400
    RateLimit: "burst";r=19;t=1, "daily";r=99999;t=42519

``q`` is the quota and ``w`` its window in seconds (a month has no fixed length: its ``w`` is
left out); ``r`` is what remains and ``t`` the seconds until it grows again: for a calendar quota
the end of the period, for a sliding window the end of the current window, and for a limit that
refused the request, the time until one fits (as ``Retry-After``). The ``RateLimit-Policy`` field
is made once per limit set (:func:`.limits.policy_field`). Names are limited to ``[A-Za-z0-9_.-]``
by the settings, so they need no escaping inside the quotes.
"""

from __future__ import annotations

import math

from portico.policies.rate_limit.algorithm import RESULTS_PER_LIMIT
from portico.policies.rate_limit.limits import CompiledLimit

__all__ = ["admitted_field", "limit_field", "retry_after"]


def retry_after(wait_ms: int) -> int:
    """Whole seconds, at least 1 (``Retry-After: 0`` would invite a retry at once)."""
    return max(1, math.ceil(wait_ms / 1000))


def admitted_field(limit: CompiledLimit, remaining: int, reset_ms: int, now: float) -> str:
    """The ``RateLimit`` field of one limit that admitted the request (what :func:`limit_field`
    writes for it): ``reset_ms`` is when its window ends, unless it counts a calendar period."""
    if limit.period is not None:
        _, end = limit.period.at(now)
        reset_ms = max(0, math.ceil((end - now) * 1000))
    # Whole seconds rounded up, in integers (math.ceil of a division costs a float and a call);
    # one f-string, which compiled builds the text in one allocation (``+`` makes one each).
    seconds = (reset_ms + 999) // 1000
    texts = limit.t_texts
    if 0 <= seconds < len(texts):
        return f"{limit.field_start}{remaining}{texts[seconds]}"
    return f"{limit.field_start}{remaining};t={seconds}"


def limit_field(
    limits: tuple[CompiledLimit, ...], result: list[int], now: float
) -> tuple[str, int, CompiledLimit | None]:
    """The ``RateLimit`` field of a counting result, the wait before a retry in ms, and the
    first limit that refused the request (``None``: admitted)."""
    items: list[str] = []
    wait_most = 0
    refused: CompiledLimit | None = None
    for i, limit in enumerate(limits):
        slot = 1 + i * RESULTS_PER_LIMIT
        remaining = result[slot]
        wait = result[slot + 1]
        if limit.period is not None:
            _, end = limit.period.at(now)
            until_end = max(0, math.ceil((end - now) * 1000))
            reset = until_end
            if wait < 0:
                wait = max(1, until_end)
        else:
            reset = wait if wait > 0 else result[slot + 2]
        if wait > 0:
            if refused is None:
                refused = limit
            wait_most = max(wait_most, wait)
        items.append(f'"{limit.name}";r={remaining};t={math.ceil(reset / 1000)}')
    if result[0] == 1:
        refused = None
    return ", ".join(items), wait_most, refused
