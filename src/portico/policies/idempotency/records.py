"""The records of idempotency keys in the shared state, and the atomic steps on them.

One key holds either a lock (``L``, the request's fingerprint, a token of the request holding
it), while the first request is in flight, or the stored response (``R``, the fingerprint, the
response as JSON). Every step is a :class:`~portico.shared.state.Script`, so that two gateway
processes never both take a key, and a request whose lock expired never overwrites the record
of the one that took the key after it. Records are ASCII (the body in base64): scripts take
their arguments as text.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

from portico.shared.state import Script, Table

__all__ = ["BEGIN", "FINISH", "RELEASE", "StoredAnswer", "decode_answer", "encode_answer"]

ACQUIRED = 0
IN_FLIGHT = 1
MISMATCH = 2
STORED = 3
FINGERPRINT_LENGTH = 64
"""A SHA-256 in hex."""


def _begin(table: Table, keys: Sequence[str], args: Sequence[str], now: float) -> list[int]:
    value = table.get(keys[0])
    if value is None:
        table.set(keys[0], args[0].encode(), int(args[1]) / 1000)
        return [ACQUIRED]
    if value[1 : 1 + FINGERPRINT_LENGTH] != args[2].encode():
        return [MISMATCH]
    return [IN_FLIGHT] if value[:1] == b"L" else [STORED]


BEGIN = Script(
    "idempotency-begin",
    """
local value = redis.call('GET', KEYS[1])
if not value then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {0}
end
if string.sub(value, 2, 65) ~= ARGV[3] then return {2} end
if string.sub(value, 1, 1) == 'L' then return {1} end
return {3}
""",
    _begin,
)
"""KEYS: the record. ARGV: the lock, its time to live in ms, the fingerprint. Returns
ACQUIRED (the lock is set), IN_FLIGHT, MISMATCH (another payload) or STORED (same payload)."""


def _finish(table: Table, keys: Sequence[str], args: Sequence[str], now: float) -> list[int]:
    if table.get(keys[0]) != args[0].encode():
        return [0]
    table.set(keys[0], args[1].encode(), int(args[2]) / 1000)
    return [1]


FINISH = Script(
    "idempotency-finish",
    """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0} end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return {1}
""",
    _finish,
)
"""KEYS: the record. ARGV: our lock, the stored response, its retention in ms. Stores only
while the lock is still ours; returns 1 when stored."""


def _release(table: Table, keys: Sequence[str], args: Sequence[str], now: float) -> list[int]:
    if table.get(keys[0]) != args[0].encode():
        return [0]
    table.delete(keys[0])
    return [1]


RELEASE = Script(
    "idempotency-release",
    """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0} end
redis.call('DEL', KEYS[1])
return {1}
""",
    _release,
)
"""KEYS: the record. ARGV: our lock. Frees the key (nothing stored) if the lock is ours."""


class StoredAnswer:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def encode_answer(fingerprint: str, answer: StoredAnswer) -> str:
    head = {
        "s": answer.status,
        "h": answer.headers,
        "b": base64.b64encode(answer.body).decode("ascii"),
    }
    return "R" + fingerprint + json.dumps(head, separators=(",", ":"))


def decode_answer(value: bytes) -> StoredAnswer | None:
    if value[:1] != b"R":
        return None
    try:
        head = json.loads(value[1 + FINGERPRINT_LENGTH :])
        return StoredAnswer(
            int(head["s"]),
            [(str(k), str(v)) for k, v in head["h"]],
            base64.b64decode(head["b"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
