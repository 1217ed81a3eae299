"""A stored response as bytes in the shared state, and back.

Two kinds of value live under a request's key: ``R`` and a stored response (a JSON head line,
then the body as it is), or ``V`` and the field names the stored responses vary on (their
variants then live under keys of their own, :func:`~.key.variant`).
"""

from __future__ import annotations

import json

__all__ = ["StoredResponse", "decode", "encode", "encode_vary"]

_RESPONSE = b"R"
_VARY = b"V"


class StoredResponse:
    __slots__ = ("body", "headers", "lifetime", "shared", "status", "stored_at")

    def __init__(
        self,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        stored_at: float,
        lifetime: float,
        shared: bool,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.stored_at = stored_at
        """When it was stored, minus the ``Age`` it came with (a Unix time)."""
        self.lifetime = lifetime
        """Seconds it stays fresh after ``stored_at``."""
        self.shared = shared
        """It may answer a request with credentials Portico did not check (RFC 9111 §3.5: it
        said ``public``, ``s-maxage`` or ``must-revalidate``)."""


def encode(response: StoredResponse) -> bytes:
    head = {
        "s": response.status,
        "h": response.headers,
        "t": response.stored_at,
        "l": response.lifetime,
        "p": response.shared,
    }
    return _RESPONSE + json.dumps(head, separators=(",", ":")).encode() + b"\n" + response.body


def encode_vary(names: tuple[str, ...]) -> bytes:
    return _VARY + ",".join(names).encode("latin-1")


def decode(value: bytes) -> StoredResponse | tuple[str, ...] | None:
    """A stored response, the names of a vary record, or ``None`` for what is neither (a value
    written by another version of Portico: a miss)."""
    kind = value[:1]
    if kind == _VARY:
        text = value[1:].decode("latin-1")
        return tuple(text.split(",")) if text else ()
    if kind != _RESPONSE:
        return None
    line, sep, body = value[1:].partition(b"\n")
    if not sep:
        return None
    try:
        head = json.loads(line)
        return StoredResponse(
            int(head["s"]),
            [(str(k), str(v)) for k, v in head["h"]],
            body,
            float(head["t"]),
            float(head["l"]),
            bool(head["p"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
