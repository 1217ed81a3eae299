"""An ordered, case-insensitive list of HTTP header fields.

Names are stored lower-cased (HTTP field names are case-insensitive, RFC 9110 §5.1) and values as
``str`` decoded as Latin-1, so every byte round-trips. The list keeps order and repeats, which a
proxy must preserve.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class Headers:
    __slots__ = ("items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self.items: list[tuple[str, str]] = list(items)

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for key, value in self.items:
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.items if key == name]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        name = name.lower()
        return any(key == name for key, _ in self.items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def set(self, name: str, value: str) -> None:
        """Replace every field called ``name`` with one field."""
        name = name.lower()
        self.items = [(k, v) for k, v in self.items if k != name]
        self.items.append((name, value))

    def add(self, name: str, value: str) -> None:
        self.items.append((name.lower(), value))

    def remove(self, *names: str) -> None:
        # A list, not a set: a few names compared by length and bytes cost less than hashing
        # every field name of a response (fresh strings, their hash not cached yet).
        drop = [n.lower() for n in names]
        for key, _ in self.items:
            if key in drop:
                self.items = [(k, v) for k, v in self.items if k not in drop]
                return
        # Nothing to remove: the list is left as it is (the proxy then knows that only
        # appended fields are new, and relays the upstream's own as they came).

    def copy(self) -> Headers:
        return Headers(self.items)

    def __repr__(self) -> str:
        return f"Headers({self.items!r})"


def decoded(fields: Iterable[tuple[bytes, bytes]]) -> Headers:
    """Fields as they came off the wire, as text (Latin-1: every byte round-trips)."""
    return Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in fields])
