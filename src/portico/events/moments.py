"""Moments as the webhooks APIs and commands take them (``since``, ``until``): an ISO 8601
date-time with its offset (``2026-01-31T12:00:00Z``), or a Unix time in seconds
(``1769860800``). A date-time without an offset is refused: it would be read in the server's
zone, which the caller does not know."""

from __future__ import annotations

import math
import re
from datetime import datetime

__all__ = ["InvalidMoment", "parse_moment"]

_EPOCH = re.compile(r"^\d{1,12}(\.\d{1,9})?$")
_ISO = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:?\d{2})$"
)

MOMENT_HELP = "an ISO 8601 date-time with its offset (2026-01-31T12:00:00Z) or a Unix time"


class InvalidMoment(ValueError):
    """Not a moment :func:`parse_moment` takes; the message says what is."""


def parse_moment(text: str) -> float:
    """The Unix time (seconds) of ``text``."""
    value = text.strip()
    if _EPOCH.match(value):
        return float(value)
    if _ISO.match(value):
        try:
            moment = datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
        except ValueError:
            pass
        else:
            stamp = moment.timestamp()
            if math.isfinite(stamp):
                return stamp
    raise InvalidMoment(f"{text!r} is not {MOMENT_HELP}")
