"""Which endpoints receive an event: its type against their type filters, its fields against their
payload filters (docs/webhooks.md, "Subscriptions").

A payload filter is a mapping of dotted field paths (``data.total``, ``type``) to a value (equal)
or to conditions, all of which must hold::

    {"data.total": {"gte": 100}, "data.country": {"in": ["FR", "DE"]}, "data.test": false}

Operators: ``eq``, ``ne``, ``gt``, ``gte``, ``lt``, ``lte``, ``in``, ``nin``, ``exists``,
``contains`` (a string containing a string, or an array containing a value), ``prefix``. A filter
is compiled once (:func:`compile_filter`), which reports every mistake in it, and then run on each
event. A missing field satisfies only ``exists: false``, ``ne`` and ``nin``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "FilterError",
    "PayloadFilter",
    "compile_filter",
    "field_value",
    "type_matches",
]

_MISSING = object()


class FilterError(ValueError):
    """A payload filter that cannot be compiled; ``problems`` lists each mistake as
    ``(path within the filter, message)``."""

    def __init__(self, problems: list[tuple[tuple[str, ...], str]]) -> None:
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems


def type_matches(filters: Sequence[str], event_type: str) -> bool:
    """Whether ``event_type`` is one of ``filters``: a name, ``prefix.*`` or ``*``."""
    for item in filters:
        if item == "*" or item == event_type:
            return True
        if item.endswith(".*") and event_type.startswith(item[:-1]):
            return True
    return False


def field_value(document: Any, path: str) -> Any:
    """The value at a dotted ``path`` of ``document`` (``data.items.0.sku``), or ``_MISSING``."""
    value = document
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part, _MISSING)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def is_missing(value: Any) -> bool:
    return value is _MISSING


Test = Callable[[Any], bool]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _comparable(left: Any, right: Any) -> bool:
    return (_number(left) and _number(right)) or (isinstance(left, str) and isinstance(right, str))


def _same(left: Any, right: Any) -> bool:
    # JSON's true is not 1: Python's True == 1 must not make a filter on a flag match a count.
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left is right
    return bool(left == right)


def _operator(name: str, operand: Any, where: tuple[str, ...]) -> Test:
    if name == "eq":
        return lambda value: value is not _MISSING and _same(value, operand)
    if name == "ne":
        return lambda value: value is _MISSING or not _same(value, operand)
    if name in ("gt", "gte", "lt", "lte"):
        if not (_number(operand) or isinstance(operand, str)):
            raise FilterError([(where, f"{name} compares with a number or a string")])
        compare: dict[str, Callable[[Any, Any], bool]] = {
            "gt": lambda a, b: a > b,
            "gte": lambda a, b: a >= b,
            "lt": lambda a, b: a < b,
            "lte": lambda a, b: a <= b,
        }
        check = compare[name]
        return lambda value: _comparable(value, operand) and check(value, operand)
    if name in ("in", "nin"):
        if not isinstance(operand, list):
            raise FilterError([(where, f"{name} takes an array of values")])
        choices = list(operand)
        if name == "in":
            return lambda value: value is not _MISSING and any(_same(value, c) for c in choices)
        return lambda value: value is _MISSING or not any(_same(value, c) for c in choices)
    if name == "exists":
        if not isinstance(operand, bool):
            raise FilterError([(where, "exists takes true or false")])
        return lambda value: (value is not _MISSING) is operand
    if name == "contains":
        return lambda value: (
            (isinstance(value, str) and isinstance(operand, str) and operand in value)
            or (isinstance(value, list) and any(_same(item, operand) for item in value))
        )
    if name == "prefix":
        if not isinstance(operand, str):
            raise FilterError([(where, "prefix takes a string")])
        return lambda value: isinstance(value, str) and value.startswith(operand)
    raise FilterError(
        [
            (
                where,
                f"unknown operator {name!r}: use eq, ne, gt, gte, lt, lte, in, nin, exists, "
                "contains or prefix",
            )
        ]
    )


class PayloadFilter:
    """A compiled payload filter; ``matches(envelope)`` with ``{"type", "timestamp", "data"}``."""

    __slots__ = ("_tests", "source")

    def __init__(self, tests: list[tuple[str, list[Test]]], source: Mapping[str, Any]) -> None:
        self._tests = tests
        self.source = source

    def matches(self, envelope: Mapping[str, Any]) -> bool:
        for path, tests in self._tests:
            value = field_value(envelope, path)
            for test in tests:
                if not test(value):
                    return False
        return True


def compile_filter(source: Any) -> PayloadFilter:
    """Compile a payload filter, or raise :class:`FilterError` naming every mistake."""
    if not isinstance(source, Mapping):
        raise FilterError([((), "a payload filter is an object of field paths to conditions")])
    problems: list[tuple[tuple[str, ...], str]] = []
    compiled: list[tuple[str, list[Test]]] = []
    for path, condition in source.items():
        if not isinstance(path, str) or not path or any(not part for part in path.split(".")):
            problems.append(((str(path),), f"{path!r} is not a dotted field path (data.total)"))
            continue
        tests: list[Test] = []
        if isinstance(condition, Mapping) and condition:
            for name, operand in condition.items():
                try:
                    tests.append(_operator(str(name), operand, (path, str(name))))
                except FilterError as exc:
                    problems.extend(exc.problems)
        else:
            tests.append(_operator("eq", condition, (path,)))
        compiled.append((path, tests))
    if problems:
        raise FilterError(problems)
    return PayloadFilter(compiled, source)
