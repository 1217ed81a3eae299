"""A JSON body read with the limits that keep a hostile one from costing more than its size.

Checked before any schema sees the value: valid UTF-8 without a byte order mark (RFC 8259
§8.1), no ``NaN`` or ``Infinity`` (not JSON), no number beyond a double, no key twice in one
object (a backend that keeps the last of two ``"amount"`` keys would act on a value the
validator never saw), and the depth, array length and string length limits of the policy.

Two readers, one result. orjson (Rust) reads first: it refuses what is not JSON (``NaN``,
a byte order mark, bad UTF-8, a number past a double) but keeps the last of two equal keys
without a word, and reads an integer past 64 bits as a float. So its value is taken only when
both are ruled out: the body has no more colons than the value has object members (every member
takes one colon: one more is a member read twice, or a colon inside a string), and no float of
the value is past 2**63. Anything else, orjson's refusals included, is read again by the
standard library's scanner with the hooks below, which decide (and word the error) as before.
Most bodies are read once, by orjson (bench/instructions.py --policy validation).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any, Final

import orjson

__all__ = ["JsonLimits", "JsonRejected", "parse_json"]

_NOT_STRUCTURE = bytes([b for b in range(256) if b not in b'[]{}"'])
_STRING = re.compile(rb'"[^"]*"')
_INNERMOST = re.compile(rb"\[\]|\{\}")


class JsonRejected(Exception):
    """The body is not JSON Portico passes on; ``limit`` names the limit it broke, if any."""

    def __init__(self, pointer: str, message: str, limit: str = "") -> None:
        super().__init__(message)
        self.pointer = pointer
        self.message = message
        self.limit = limit


class JsonLimits:
    __slots__ = ("max_array_length", "max_depth", "max_string_length")

    def __init__(self, max_depth: int, max_array_length: int, max_string_length: int) -> None:
        self.max_depth = max_depth
        self.max_array_length = max_array_length
        self.max_string_length = max_string_length


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JsonRejected("", f"the key {_quoted(key)} appears twice in one object")
            seen.add(key)
    return out


def _constant(name: str) -> Any:
    raise JsonRejected("", f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise JsonRejected("", f"the number {text[:40]} is out of range")
    return value


_DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_float)
"""Made once: ``json.loads`` with hooks builds a decoder and its C scanner on every call, which
cost a request more than parsing its body did."""


_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
_WHITESPACE = " \t\n\r"
"""JSON's whitespace (RFC 8259 §2), and no other."""


def _decode(text: str) -> Any:
    """``_DECODER.decode(text)`` without its Python-level steps (a regex for the whitespace
    either side): the C scanner on the text stripped of JSON's whitespace. Anything it does not
    read whole goes to ``decode``, for its error and position."""
    stripped = text.strip(_WHITESPACE)
    try:
        value, end = _SCAN(stripped, 0)
    except (StopIteration, json.JSONDecodeError):
        return _DECODER.decode(text)  # raises, with the position in the body as it came
    if end != len(stripped):
        return _DECODER.decode(text)
    return value


_LOADS: Final = orjson.loads
"""Bound once: compiled, ``orjson.loads`` looks the function up in the module on every call."""
_COUNT: Callable[[bytes, bytes], int] = bytes.count
"""``bytes.count`` called as a function: compiled, ``body.count(...)`` looks the method up by
name on every call, which cost more than counting a small body."""
_EXACT = 2.0**63
"""orjson reads an integer past 64 bits as a float: a float this large may be one."""


def _members(value: Any) -> int:
    """The object members in ``value`` (at every depth); -1 when a float of it is past
    :data:`_EXACT`. Iterative: the depth is the client's."""
    count = 0
    stack: list[Any] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            count += len(node)
            for item in node.values():
                if not _visit(item, stack):
                    return -1
        elif isinstance(node, list):
            for item in node:
                if not _visit(item, stack):
                    return -1
    return count


def _flat_members(value: dict[str, Any]) -> int:
    """The members of an object none of whose values is an object, an array or a float (most
    request bodies): ``len(value)``; -1 for any other, which :func:`_members` then walks."""
    for item in value.values():
        if isinstance(item, dict) or isinstance(item, list) or isinstance(item, float):  # noqa: SIM101
            return -1
    return len(value)


def _visit(item: Any, stack: list[Any]) -> bool:
    """Push a container on ``stack``; false for a float past :data:`_EXACT`. Two ``isinstance``
    calls, not one on ``dict | list``: compiled, that union is built again on every call."""
    if isinstance(item, dict) or isinstance(item, list):  # noqa: SIM101
        stack.append(item)
    elif isinstance(item, float):
        return -_EXACT < item < _EXACT
    return True


def _read_fast(body: bytes) -> tuple[bool, Any]:
    """``(True, value)`` when orjson's reading of ``body`` is the standard library's (see the
    module's docstring), else ``(False, None)``."""
    try:
        value = _LOADS(body)
    except orjson.JSONDecodeError:
        return False, None
    if isinstance(value, dict) or isinstance(value, list):  # noqa: SIM101
        members = _flat_members(value) if isinstance(value, dict) else -1
        if members < 0:
            members = _members(value)
        if members < 0 or members != _COUNT(body, b":"):
            return False, None
    elif isinstance(value, float) and not -_EXACT < value < _EXACT:
        return False, None
    return True, value


def parse_json(body: bytes, limits: JsonLimits) -> Any:
    """The value of ``body``; raises :class:`JsonRejected`."""
    read, value = _read_fast(body)
    if read:
        return _within_limits(value, body, len(body), limits)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonRejected("", f"the body is not valid UTF-8 (at byte {exc.start})") from None
    if text.startswith("\ufeff"):
        raise JsonRejected("", "the body starts with a byte order mark, which JSON does not have")
    try:
        value = _decode(text)
    except json.JSONDecodeError as exc:
        raise JsonRejected(
            "", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise JsonRejected(
            "", f"nested deeper than {limits.max_depth} levels", "max_depth"
        ) from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise JsonRejected("", f"not valid JSON: {str(exc)[:120]}") from None
    return _within_limits(value, body, len(text), limits)


def _within_limits(value: Any, body: bytes, length: int, limits: JsonLimits) -> Any:
    """``value``, read from ``body`` of ``length`` characters, if it keeps the limits."""
    if _deeper_than(body, limits.max_depth):
        raise JsonRejected("", f"nested deeper than {limits.max_depth} levels", "max_depth")
    # A string over the limit needs that many characters, an array over it two per item: a
    # body shorter than both cannot break them, and is not walked (most bodies are).
    if length > limits.max_string_length or length > 2 * limits.max_array_length:
        _check_limits(value, limits)
    return value


def _deeper_than(body: bytes, depth: int) -> bool:
    """Whether valid JSON ``body`` nests arrays and objects more than ``depth`` levels. Done
    on its brackets alone, with C-level bytes operations rather than a walk over every value:
    escaped backslashes and quotes taken out (``\\`` pairs first, as a reader meets them); the
    bytes cut down to brackets and quotes; strings taken out; then the innermost pairs, once per
    level.
    """
    if len(body) <= 2 * depth or body.count(b"[") + body.count(b"{") <= depth:
        return False  # deeper than depth takes depth + 1 openings and as many closings
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = unescaped.translate(None, _NOT_STRUCTURE)
    # Two quotes side by side close one string and open the next, or make an empty one: either
    # way nothing between them is outside a string. Most strings go so, without a regex.
    brackets = _STRING.sub(b"", structure.replace(b'""', b""))
    for _ in range(depth):
        if not brackets:
            return False
        brackets = _INNERMOST.sub(b"", brackets)
    return bool(brackets)


def _check_limits(value: Any, limits: JsonLimits) -> None:
    if isinstance(value, str):
        if len(value) > limits.max_string_length:
            raise _too_long("", limits)
        return
    if not (isinstance(value, dict) or isinstance(value, list)):  # noqa: SIM101
        return
    # Iterative: the depth being checked is the attacker's.
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        node, depth, pointer = stack.pop()
        if depth > limits.max_depth:
            raise JsonRejected(
                pointer, f"nested deeper than {limits.max_depth} levels", "max_depth"
            )
        if isinstance(node, dict):
            for key, item in node.items():
                if len(key) > limits.max_string_length:
                    raise _too_long(pointer, limits)
                if isinstance(item, str):
                    if len(item) > limits.max_string_length:
                        raise _too_long(f"{pointer}/{_escape(key)}", limits)
                elif isinstance(item, dict) or isinstance(item, list):  # noqa: SIM101
                    stack.append((item, depth + 1, f"{pointer}/{_escape(key)}"))
        else:
            if len(node) > limits.max_array_length:
                raise JsonRejected(
                    pointer,
                    f"an array of more than {limits.max_array_length} items",
                    "max_array_length",
                )
            for index, item in enumerate(node):
                if isinstance(item, str):
                    if len(item) > limits.max_string_length:
                        raise _too_long(f"{pointer}/{index}", limits)
                elif isinstance(item, dict) or isinstance(item, list):  # noqa: SIM101
                    stack.append((item, depth + 1, f"{pointer}/{index}"))


def _too_long(pointer: str, limits: JsonLimits) -> JsonRejected:
    return JsonRejected(
        pointer,
        f"a string of more than {limits.max_string_length} characters",
        "max_string_length",
    )


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _quoted(key: str) -> str:
    return json.dumps(key[:80])
