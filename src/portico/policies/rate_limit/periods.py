"""Calendar periods (a day, a month) in a time zone, as billing plans count quotas.

The period that holds an instant is worked out once and kept until the instant passes its end, so
a request costs one comparison; the time zone database (``zoneinfo``) is read only when a period
ends. Days follow the zone's clock: a day with a daylight-saving change lasts 23 or 25 hours.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo

__all__ = ["CalendarPeriod"]


class CalendarPeriod:
    """``day`` or ``month`` in ``zone``: :meth:`at` gives the period's number and its end."""

    __slots__ = ("_end", "_number", "_start", "kind", "zone")

    def __init__(self, kind: str, zone: tzinfo) -> None:
        if kind not in ("day", "month"):
            raise ValueError(f"unknown calendar period {kind!r}")
        self.kind = kind
        self.zone = zone
        self._start = 0.0
        self._end = 0.0
        self._number = 0

    def at(self, now: float) -> tuple[int, float]:
        """``(number, end)``: ``20261202`` (a day) or ``202612`` (a month), and the Unix time at
        which the period ends."""
        if not self._start <= now < self._end:
            self._compute(now)
        return self._number, self._end

    def bounds(self, now: float) -> tuple[float, float]:
        """The start and end of the period holding ``now`` (Unix times)."""
        self.at(now)
        return self._start, self._end

    def _compute(self, now: float) -> None:
        local = datetime.fromtimestamp(now, self.zone)
        if self.kind == "day":
            start = datetime(local.year, local.month, local.day, tzinfo=self.zone)
            following = start.date() + timedelta(days=1)
            end = datetime(following.year, following.month, following.day, tzinfo=self.zone)
            number = local.year * 10000 + local.month * 100 + local.day
        else:
            start = datetime(local.year, local.month, 1, tzinfo=self.zone)
            after = datetime(local.year + local.month // 12, local.month % 12 + 1, 1)
            end = after.replace(tzinfo=self.zone)
            number = local.year * 100 + local.month
        self._start = start.timestamp()
        self._end = end.timestamp()
        self._number = number
