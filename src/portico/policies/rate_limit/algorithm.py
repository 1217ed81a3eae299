"""The counting itself: every limit of one request checked and taken in one atomic step.

Two kinds of counter, one key each (O(1) memory and time per key):

- a **sliding-window counter** for a rate (``limit`` per ``window``): the count of the current
  fixed window plus the previous window's count weighted by how much of it still overlaps the
  sliding window, ``floor(previous * (window - elapsed) / window) + current``. It is exact at the
  window edges (at the start of a window the estimate is the whole previous window, at its end
  the current one), never lets ``2 x limit`` through across an edge as a fixed window does, and
  needs two integers per key where an exact log needs one timestamp per request.
- a **calendar counter** for a quota (``limit`` per day or month in a time zone): the count of
  the period, as a billing plan counts it. The period (a number such as 20261202) is worked out
  by the gateway, which knows the time zone; Redis does not.

A request is admitted only when every one of its limits has room; then, and only then, each
counter takes one. A refused request takes nothing, so a client over its limit recovers as soon
as its rate drops. The step is a :class:`~portico.shared.state.Script`: Lua in Redis (with
Redis's clock, which every process shares) and the same arithmetic in Python for one process.

Arguments, four per limit, in ``KEYS`` order: ``kind`` (0 sliding, 1 calendar), ``limit``,
``span`` (the window in ms; the period number), ``ttl_ms`` (how long a calendar counter is kept).
Result: ``[admitted, then per limit: remaining, wait_ms, reset_ms]``; ``wait_ms`` is how long
until a request would fit (0 when it fits now, -1 for "at the end of the period"), ``reset_ms``
the time left in the current sliding window (0 for a calendar limit: the gateway knows its end).

All arithmetic is on integers below 2**53, so Lua's doubles and Python's ints agree to the unit
(settings bound ``limit`` and ``window``): the two implementations are tested against each other.
"""

from __future__ import annotations

from collections.abc import Sequence

from portico.shared.state import Script, Table

__all__ = ["CALENDAR", "COUNT", "SLIDING", "calendar_state", "sliding_state", "sliding_wait"]

SLIDING = 0
CALENDAR = 1
ARGS_PER_LIMIT = 4


def sliding_state(raw: bytes | None, index: int) -> tuple[int, int]:
    """``(previous, current)`` counts for window ``index`` from a stored ``"index current
    previous"``: a value two windows old counts for nothing."""
    if raw is None:
        return 0, 0
    parts = raw.split()
    stored, current, previous = int(parts[0]), int(parts[1]), int(parts[2])
    if stored == index:
        return previous, current
    if stored == index - 1:
        return current, 0
    return 0, 0


def calendar_state(raw: bytes | None, period: int) -> int:
    """The count of ``period`` from a stored ``"period count"``."""
    if raw is None:
        return 0
    parts = raw.split()
    stored, count = int(parts[0]), int(parts[1])
    return count if stored == period else 0


def sliding_used(previous: int, current: int, elapsed: int, window: int) -> int:
    return previous * (window - elapsed) // window + current


def sliding_wait(previous: int, current: int, elapsed: int, window: int, limit: int) -> int:
    """Milliseconds until one more request fits in a sliding window (0: it fits now)."""
    room = limit - current - 1
    if room >= 0:
        if previous == 0:
            return 0
        # The weighted previous count must fall to `room` or below: previous * left < (room + 1)
        # * window, with `left` the milliseconds left in this window.
        left_max = ((room + 1) * window - 1) // previous
        wait = window - elapsed - left_max
        if wait <= 0:
            return 0
        if wait < window - elapsed:
            return wait
    # Not in this window: in the next one, this window's count is the previous one.
    if current == 0:
        return window - elapsed
    left_max = (limit * window - 1) // current
    return window - elapsed + max(0, window - left_max)


def _count(table: Table, keys: Sequence[str], args: Sequence[str], now: float) -> list[int]:
    now_ms = int(now * 1000)
    out = [1]
    writes: list[tuple[str, bytes, float]] = []
    for i, key in enumerate(keys):
        base = i * ARGS_PER_LIMIT
        kind = int(args[base])
        limit = int(args[base + 1])
        span = int(args[base + 2])
        raw = table.get(key)
        if kind == SLIDING:
            index = now_ms // span
            elapsed = now_ms - index * span
            previous, current = sliding_state(raw, index)
            used = sliding_used(previous, current, elapsed, span)
            if used + 1 <= limit:
                out.extend((limit - used - 1, 0, span - elapsed))
                value = f"{index} {current + 1} {previous}".encode()
                writes.append((key, value, 2 * span / 1000))
            else:
                out[0] = 0
                wait = sliding_wait(previous, current, elapsed, span, limit)
                out.extend((max(0, limit - used), wait, span - elapsed))
        else:
            count = calendar_state(raw, span)
            if count + 1 <= limit:
                out.extend((limit - count - 1, 0, 0))
                writes.append((key, f"{span} {count + 1}".encode(), int(args[base + 3]) / 1000))
            else:
                out[0] = 0
                out.extend((max(0, limit - count), -1, 0))
    if out[0] == 1:
        for key, value, ttl in writes:
            table.set(key, value, ttl)
    else:
        # Refused: nothing was taken, so what remains is what was there before this request.
        for i in range(len(keys)):
            slot = 1 + i * 3
            if out[slot + 1] == 0:
                out[slot] += 1
    return out


_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {1}
local writes = {}
local function wait_sliding(previous, current, elapsed, window, limit)
  local room = limit - current - 1
  if room >= 0 then
    if previous == 0 then return 0 end
    local left_max = math.floor(((room + 1) * window - 1) / previous)
    local wait = window - elapsed - left_max
    if wait <= 0 then return 0 end
    if wait < window - elapsed then return wait end
  end
  if current == 0 then return window - elapsed end
  local left_max = math.floor((limit * window - 1) / current)
  return window - elapsed + math.max(0, window - left_max)
end
for i = 1, #KEYS do
  local base = (i - 1) * 4
  local kind = tonumber(ARGV[base + 1])
  local limit = tonumber(ARGV[base + 2])
  local span = tonumber(ARGV[base + 3])
  local raw = redis.call('GET', KEYS[i])
  if kind == 0 then
    local index = math.floor(now / span)
    local elapsed = now - index * span
    local previous, current = 0, 0
    if raw then
      local s, c, p = string.match(raw, '^(%d+) (%d+) (%d+)$')
      s, c, p = tonumber(s), tonumber(c), tonumber(p)
      if s == index then previous, current = p, c
      elseif s == index - 1 then previous = c end
    end
    local used = math.floor(previous * (span - elapsed) / span) + current
    if used + 1 <= limit then
      table.insert(out, limit - used - 1); table.insert(out, 0); table.insert(out, span - elapsed)
      table.insert(writes, {KEYS[i], index .. ' ' .. (current + 1) .. ' ' .. previous, 2 * span})
    else
      out[1] = 0
      table.insert(out, math.max(0, limit - used))
      table.insert(out, wait_sliding(previous, current, elapsed, span, limit))
      table.insert(out, span - elapsed)
    end
  else
    local count = 0
    if raw then
      local s, c = string.match(raw, '^(%d+) (%d+)$')
      if tonumber(s) == span then count = tonumber(c) end
    end
    if count + 1 <= limit then
      table.insert(out, limit - count - 1); table.insert(out, 0); table.insert(out, 0)
      table.insert(writes, {KEYS[i], span .. ' ' .. (count + 1), tonumber(ARGV[base + 4])})
    else
      out[1] = 0
      table.insert(out, math.max(0, limit - count)); table.insert(out, -1); table.insert(out, 0)
    end
  end
end
if out[1] == 1 then
  for _, w in ipairs(writes) do
    redis.call('SET', w[1], w[2], 'PX', math.max(1, math.floor(w[3])))
  end
else
  for i = 1, #KEYS do
    local slot = 2 + (i - 1) * 3
    if out[slot + 1] == 0 then out[slot] = out[slot] + 1 end
  end
end
return out
"""

COUNT = Script("rate-limit", lua=_LUA, python=_count)
"""Check every limit of a request and take one from each, or from none."""
