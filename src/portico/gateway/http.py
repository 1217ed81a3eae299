"""Small HTTP/1.1 helpers shared by the client and upstream sides."""

from __future__ import annotations

import random
from http import HTTPStatus

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_STATUS_LINES: dict[int, str] = {}
# Request and span ids need to be unique, not secret: a PRNG is enough and much cheaper than
# os.urandom on the per-request path. SystemRandom seeds it from the OS.
_random = random.Random(random.SystemRandom().getrandbits(128))


def status_line(status: int) -> str:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
        _STATUS_LINES[status] = line
    return line


def new_id(nbytes: int = 16) -> str:
    return f"{_random.getrandbits(nbytes * 8):0{nbytes * 2}x}"
