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

Arguments, five per limit, in ``KEYS`` order: ``kind`` (0 sliding, 1 calendar), ``limit``,
``span`` (the window in ms; the period number), ``ttl_ms`` (how long a calendar counter is kept),
``want``: how many permits to take at once (1 for this request alone; more for a **lease**, the
permits a gateway process keeps to admit its next requests without asking Redis, see
:mod:`.leases`; 0 to leave the limit out: the process already holds a permit of it). A limit with
room grants ``min(want, max(1, room // LEASE_SHARE))``: never more than a sixteenth of what is
left, so as the limit nears its end the grants shrink to one and every process counts exactly.

Result: ``[admitted, then per limit: remaining, wait_ms, reset_ms, granted, window]``;
``remaining`` is what is left after the grant (before it, when the request was refused),
``wait_ms`` how long until a request would fit (0 when it fits now, -1 for "at the end of the
period"), ``reset_ms`` the time left in the current sliding window (0 for a calendar limit: the
gateway knows its end), ``granted`` the permits taken (0 when refused), ``window`` the index of the
sliding window or the period number the permits belong to. A left-out limit's slots are all 0.

All arithmetic is on integers below 2**53, so Lua's doubles and Python's ints agree to the unit
(settings bound ``limit`` and ``window``): the two implementations are tested against each other.
"""

from __future__ import annotations

from collections.abc import Sequence

from portico.shared.state import Script, Table

__all__ = [
    "ARGS_PER_LIMIT",
    "CALENDAR",
    "COUNT",
    "LEASE_SHARE",
    "RESULTS_PER_LIMIT",
    "SLIDING",
    "calendar_state",
    "sliding_state",
    "sliding_wait",
]

SLIDING = 0
CALENDAR = 1
ARGS_PER_LIMIT = 5
RESULTS_PER_LIMIT = 5
LEASE_SHARE = 16
"""A grant is at most this fraction of the room left: processes sharing a limit near its end
each hold a few permits, never a large part of the limit."""


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


def grant(room: int, want: int) -> int:
    """The permits a limit with ``room`` left gives to a process that wants ``want``."""
    return min(want, max(1, room // LEASE_SHARE))


def _count(table: Table, keys: Sequence[str], args: Sequence[str], now: float) -> list[int]:
    now_ms = int(now * 1000)
    out = [1]
    writes: list[tuple[str, int, int, int, int, float]] = []
    rooms: list[int] = []
    for i, key in enumerate(keys):
        base = i * ARGS_PER_LIMIT
        want = int(args[base + 4])
        if want == 0:
            out.extend((0, 0, 0, 0, 0))
            rooms.append(0)
            continue
        kind = int(args[base])
        limit = int(args[base + 1])
        span = int(args[base + 2])
        raw = table.get(key)
        if kind == SLIDING:
            index = now_ms // span
            elapsed = now_ms - index * span
            previous, current = sliding_state(raw, index)
            room = limit - sliding_used(previous, current, elapsed, span)
            rooms.append(room)
            if room >= 1:
                taken = grant(room, want)
                out.extend((room - taken, 0, span - elapsed, taken, index))
                writes.append((key, kind, index, current + taken, previous, 2 * span / 1000))
            else:
                out[0] = 0
                wait = sliding_wait(previous, current, elapsed, span, limit)
                out.extend((max(0, room), wait, span - elapsed, 0, index))
        else:
            count = calendar_state(raw, span)
            room = limit - count
            rooms.append(room)
            if room >= 1:
                taken = grant(room, want)
                out.extend((room - taken, 0, 0, taken, span))
                ttl = int(args[base + 3]) / 1000
                writes.append((key, kind, span, count + taken, 0, ttl))
            else:
                out[0] = 0
                out.extend((max(0, room), -1, 0, 0, span))
    if out[0] == 1:
        for key, kind, window, count, previous, ttl in writes:
            if kind == SLIDING:
                table.set(key, f"{window} {count} {previous}".encode(), ttl)
            else:
                table.set(key, f"{window} {count}".encode(), ttl)
    else:
        # Refused: nothing was taken, so what remains is what was there before this request.
        for i in range(len(keys)):
            slot = 1 + i * RESULTS_PER_LIMIT
            if out[slot + 3] > 0:
                out[slot] = rooms[i]
                out[slot + 3] = 0
    return out


_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {1}
local writes = {}
local rooms = {}
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
local function grant(room, want)
  return math.min(want, math.max(1, math.floor(room / LEASE_SHARE)))
end
for i = 1, #KEYS do
  local base = (i - 1) * 5
  local want = tonumber(ARGV[base + 5])
  if want == 0 then
    for _ = 1, 5 do table.insert(out, 0) end
    table.insert(rooms, 0)
  else
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
      local room = limit - (math.floor(previous * (span - elapsed) / span) + current)
      table.insert(rooms, room)
      if room >= 1 then
        local taken = grant(room, want)
        for _, v in ipairs({room - taken, 0, span - elapsed, taken, index}) do
          table.insert(out, v)
        end
        local value = index .. ' ' .. (current + taken) .. ' ' .. previous
        table.insert(writes, {KEYS[i], value, 2 * span})
      else
        out[1] = 0
        local wait = wait_sliding(previous, current, elapsed, span, limit)
        for _, v in ipairs({math.max(0, room), wait, span - elapsed, 0, index}) do
          table.insert(out, v)
        end
      end
    else
      local count = 0
      if raw then
        local s, c = string.match(raw, '^(%d+) (%d+)$')
        if tonumber(s) == span then count = tonumber(c) end
      end
      local room = limit - count
      table.insert(rooms, room)
      if room >= 1 then
        local taken = grant(room, want)
        for _, v in ipairs({room - taken, 0, 0, taken, span}) do table.insert(out, v) end
        table.insert(writes, {KEYS[i], span .. ' ' .. (count + taken), tonumber(ARGV[base + 4])})
      else
        out[1] = 0
        for _, v in ipairs({math.max(0, room), -1, 0, 0, span}) do table.insert(out, v) end
      end
    end
  end
end
if out[1] == 1 then
  for _, w in ipairs(writes) do
    redis.call('SET', w[1], w[2], 'PX', math.max(1, math.floor(w[3])))
  end
else
  for i = 1, #KEYS do
    local slot = 2 + (i - 1) * 5
    if out[slot + 3] > 0 then
      out[slot] = rooms[i]
      out[slot + 3] = 0
    end
  end
end
return out
""".replace("LEASE_SHARE", str(LEASE_SHARE))

COUNT = Script("rate-limit", lua=_LUA, python=_count)
"""Check every limit of a request and take one from each, or from none."""
