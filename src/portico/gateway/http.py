"""Small HTTP/1.1 helpers shared by the client and upstream sides."""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from http import HTTPStatus

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_STATUS_LINES: dict[int, str] = {}
_STATUS_LINE_BYTES: dict[int, bytes] = {}


class _Ids:
    """Random hex digits for request, trace and span ids, drawn a few kilobytes at a time.

    Ids need to be unique, not secret: a PRNG seeded from the OS is enough, and taking a slice
    of a pre-drawn string costs far less per request than drawing and formatting each id.
    """

    __slots__ = ("_digits", "_position", "_random")

    def __init__(self) -> None:
        self._random = random.Random()
        self._digits = ""
        self._position = 0
        self.reseed()

    def reseed(self) -> None:
        # Also after a fork: a child must not repeat its parent's ids.
        self._random.seed(os.urandom(32))
        self._digits = ""
        self._position = 0

    def take(self, count: int) -> str:
        start = self._position
        end = start + count
        if end > len(self._digits):
            self._digits = self._random.randbytes(max(2048, count)).hex()
            start, end = 0, count
        self._position = end
        return self._digits[start:end]


_ids = _Ids()
os.register_at_fork(after_in_child=_ids.reseed)


def status_line(status: int) -> str:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
        _STATUS_LINES[status] = line
    return line


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
"""The interim answer to ``Expect: 100-continue`` (RFC 9110 §10.1.1)."""


def head_lines(status: int, headers: Iterable[tuple[str, str]]) -> list[str]:
    """The status line and the fields of a response head Portico writes itself, as text lines;
    the caller adds its framing fields and the empty line."""
    lines = [status_line(status)]
    for name, value in headers:
        lines.append(f"{name}: {value}\r\n")
    return lines


def status_line_bytes(status: int) -> bytes:
    line = _STATUS_LINE_BYTES.get(status)
    if line is None:
        line = _STATUS_LINE_BYTES[status] = status_line(status).encode("latin-1")
    return line


def new_id(nbytes: int = 16) -> str:
    """``nbytes`` random bytes as lower-case hex (32 digits by default)."""
    return _ids.take(nbytes * 2)
