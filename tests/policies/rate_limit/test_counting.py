"""The counting script behaves the same in the process and in a real Redis (its Lua twin), takes
every limit or none, and announces waits that are exact; calendar periods follow the zone's
clock (23- and 25-hour days, months of any length)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from tests.support.redis import RedisServer, redis_for_session

from portico.policies.rate_limit.algorithm import (
    COUNT,
    RESULTS_PER_LIMIT,
    sliding_state,
    sliding_used,
    sliding_wait,
)
from portico.policies.rate_limit.periods import CalendarPeriod
from portico.shared.memory import MemoryState
from portico.shared.redis import RedisState
from portico.shared.state import SharedState

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with redis_for_session() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
async def state(request: pytest.FixtureRequest) -> AsyncIterator[SharedState]:
    if request.param == "memory":
        yield MemoryState()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    server.flush()
    redis = RedisState(server.url, timeout=5.0, key_prefix="test:")
    yield redis
    await redis.close()


HOUR = ["0", "3", "3600000", "0", "1"]
DAY = ["1", "5", "20261202", "90000000", "1"]
# The result: [admitted, then per limit: remaining, wait_ms, reset_ms, granted, window].
SECOND = 1 + RESULTS_PER_LIMIT
"""Where the second limit's slots start."""


async def test_both_backends_admit_and_count_alike(state: SharedState) -> None:
    results = [await state.run(COUNT, ["burst", "daily"], [*HOUR, *DAY]) for _ in range(5)]
    assert [r[0] for r in results] == [1, 1, 1, 0, 0]
    # Remaining per limit: the burst spends, the daily quota keeps what refusals did not take.
    assert [(r[1], r[SECOND]) for r in results] == [(2, 4), (1, 3), (0, 2), (0, 2), (0, 2)]
    assert results[3][2] > 0  # a wait for the burst
    assert results[3][SECOND + 1] == 0  # the daily quota had room: no wait of its own
    assert [(r[4], r[SECOND + 3]) for r in results] == [(1, 1)] * 3 + [(0, 0)] * 2
    assert results[0][SECOND + 4] == 20261202  # the period the permit belongs to


async def test_a_refusal_by_one_limit_takes_nothing_from_the_others(state: SharedState) -> None:
    tight = ["1", "1", "20261202", "90000000", "1"]
    roomy = ["0", "100", "3600000", "0", "1"]
    first = await state.run(COUNT, ["quota", "rate"], [*tight, *roomy])
    assert first[0] == 1 and first[SECOND] == 99
    for _ in range(20):
        refused = await state.run(COUNT, ["quota", "rate"], [*tight, *roomy])
        assert refused[0] == 0 and refused[2] == -1
    assert refused[SECOND] == 99 and refused[SECOND + 3] == 0


async def test_a_new_period_starts_from_zero(state: SharedState) -> None:
    day = ["1", "1", "20261202", "90000000", "1"]
    assert (await state.run(COUNT, ["q"], day))[0] == 1
    assert (await state.run(COUNT, ["q"], day))[0] == 0
    next_day = ["1", "1", "20261203", "90000000", "1"]
    assert (await state.run(COUNT, ["q"], next_day))[0] == 1


async def test_concurrent_requests_never_exceed_the_limit(state: SharedState) -> None:
    results = await asyncio.gather(
        *(state.run(COUNT, ["c"], ["0", "50", "3600000", "0", "1"]) for _ in range(300))
    )
    assert sum(r[0] for r in results) == 50
    assert sorted(r[1] for r in results if r[0]) == list(range(50))


async def test_a_lease_takes_at_most_a_sixteenth_of_the_room_left(state: SharedState) -> None:
    grants = []
    for _ in range(40):
        result = await state.run(COUNT, ["l"], ["0", "1000", "3600000", "0", "100"])
        assert result[0] == 1
        grants.append(result[4])
        assert result[1] == 1000 - sum(grants)  # what is left for every process
    assert grants[0] == 62  # 1000 // 16: a process never holds a large part of the limit
    assert all(g == min(100, max(1, (1000 - sum(grants[:i])) // 16)) for i, g in enumerate(grants))
    assert grants[-1] >= 1 and sorted(grants, reverse=True) == grants


async def test_concurrent_leases_never_grant_more_than_the_limit(state: SharedState) -> None:
    results = await asyncio.gather(
        *(state.run(COUNT, ["c"], ["0", "50", "3600000", "0", "8"]) for _ in range(300))
    )
    assert sum(r[4] for r in results) == 50
    assert all(r[0] == (r[4] > 0) for r in results)


async def test_a_limit_left_out_is_neither_checked_nor_counted(state: SharedState) -> None:
    spent = ["1", "1", "20261202", "90000000", "1"]
    assert (await state.run(COUNT, ["q"], spent))[0] == 1
    assert (await state.run(COUNT, ["q"], spent))[0] == 0
    # want 0: the process holds a permit of this limit already; only the other one is asked.
    left_out = ["1", "1", "20261202", "90000000", "0"]
    roomy = ["0", "10", "3600000", "0", "1"]
    result = await state.run(COUNT, ["q", "r"], [*left_out, *roomy])
    assert result[0] == 1 and result[1:SECOND] == [0, 0, 0, 0, 0]
    assert result[SECOND] == 9


def _fits(case: tuple[int, int, int, int, int], after: int) -> bool:
    previous, current, elapsed, window, limit = case
    at = elapsed + after
    if at < window:
        return sliding_used(previous, current, at, window) + 1 <= limit
    # In the next window (this one's count weighted), nothing more counted meanwhile.
    return sliding_used(current, 0, at - window, window) + 1 <= limit


def test_the_announced_wait_is_the_first_moment_a_request_fits() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        window = rng.choice([1000, 60000, 3600000])
        limit = rng.randint(1, 200)
        previous = rng.randint(0, limit)
        current = rng.randint(0, limit)
        elapsed = rng.randint(0, window - 1)

        case = (previous, current, elapsed, window, limit)
        wait = sliding_wait(*case)
        if _fits(case, 0):
            assert wait == 0
            continue
        assert _fits(case, wait), (case, wait)
        assert not _fits(case, wait - 1), (case, wait)


def test_a_stored_window_older_than_the_previous_counts_for_nothing() -> None:
    assert sliding_state(b"10 4 7", 10) == (7, 4)
    assert sliding_state(b"10 4 7", 11) == (4, 0)
    assert sliding_state(b"10 4 7", 12) == (0, 0)
    assert sliding_state(None, 3) == (0, 0)


def _at(zone: str, *parts: int) -> float:
    return datetime(*parts, tzinfo=ZoneInfo(zone)).timestamp()  # type: ignore[misc]


def test_a_day_follows_the_zones_clock_across_daylight_saving() -> None:
    paris = CalendarPeriod("day", ZoneInfo("Europe/Paris"))
    start, end = paris.bounds(_at("Europe/Paris", 2026, 3, 29, 12))
    assert end - start == 23 * 3600
    start, end = paris.bounds(_at("Europe/Paris", 2026, 10, 25, 12))
    assert end - start == 25 * 3600
    number, end = paris.at(_at("Europe/Paris", 2026, 12, 2, 23, 59, 59))
    assert number == 20261202 and end == _at("Europe/Paris", 2026, 12, 3)
    # The same instant is still the 2nd in New York... and already the 3rd in Tokyo.
    instant = _at("Europe/Paris", 2026, 12, 2, 20)
    assert CalendarPeriod("day", ZoneInfo("America/New_York")).at(instant)[0] == 20261202
    assert CalendarPeriod("day", ZoneInfo("Asia/Tokyo")).at(instant)[0] == 20261203


def test_a_month_ends_at_the_first_of_the_next_in_the_zone() -> None:
    month = CalendarPeriod("month", ZoneInfo("Europe/Paris"))
    number, end = month.at(_at("Europe/Paris", 2026, 12, 31, 23, 30))
    assert number == 202612 and end == _at("Europe/Paris", 2027, 1, 1)
    number, end = month.at(_at("Europe/Paris", 2027, 2, 10))
    assert number == 202702 and end == _at("Europe/Paris", 2027, 3, 1)
