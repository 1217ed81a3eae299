"""A lease's bookkeeping: permits used and given back, its size following the process's traffic,
and the next lease asked for ahead when a quarter of one is left."""

from __future__ import annotations

from portico.policies.rate_limit.leases import MAX_WANT, REFILL_FROM, TARGET, Lease


def granted(taken: int, *, used: int = 1, window: int = 7, now: float = 100.0) -> Lease:
    lease = Lease()
    lease.grant(window, taken, remaining=500, deadline=now + 10, now=now, used=used)
    return lease


def test_a_grant_keeps_its_permits_less_the_one_the_asking_request_used() -> None:
    lease = granted(16)

    assert lease.left == 15
    assert lease.usable(100.5) and not lease.usable(110.0)  # gone at the window's end
    assert lease.take() == 500 + 14


def test_a_lease_asked_for_ahead_keeps_every_permit() -> None:
    assert granted(16, used=0).left == 16


def test_the_next_lease_is_asked_for_when_a_quarter_is_left_and_only_once() -> None:
    lease = granted(17)  # 16 left; asked for ahead at 4
    lows = []
    while lease.left > 0:
        lease.take()
        lows.append(lease.low())
        if lease.low():
            lease.pending += 1  # what the policy does: one request in flight

    assert lows.index(True) == 16 - 4 - 1
    assert lows.count(True) == 1


def test_a_small_lease_is_not_asked_for_ahead() -> None:
    lease = granted(REFILL_FROM - 1)
    while lease.left > 0:
        lease.take()
        assert not lease.low()


def test_a_grant_of_the_same_window_adds_up_and_another_window_replaces() -> None:
    lease = granted(16)
    lease.grant(7, 8, remaining=400, deadline=200.0, now=100.2, used=0)

    assert lease.left == 15 + 8 and lease.deadline == 110.0  # the earlier deadline stands

    lease.grant(8, 8, remaining=900, deadline=120.0, now=100.3, used=0)
    assert lease.left == 8 and lease.window == 8  # the old window's permits are gone


def test_a_permit_is_given_back_only_to_its_own_window() -> None:
    lease = granted(16)
    lease.left -= 1
    lease.give_back(7)
    lease.give_back(6)

    assert lease.left == 15


def test_the_size_doubles_when_spent_fast_and_halves_when_it_lasted() -> None:
    lease = granted(16)
    lease.want = 16

    assert lease.ask(100.0 + TARGET / 2) == 32
    lease.granted_at = 100.0
    assert lease.ask(100.0 + 5 * TARGET) == 16
    lease.want = MAX_WANT
    lease.granted_at = 200.0
    assert lease.ask(200.0) == MAX_WANT  # never beyond


def test_while_a_request_is_in_flight_others_ask_for_one_permit() -> None:
    lease = granted(16)
    lease.pending = 1

    assert lease.ask(100.0) == 1
