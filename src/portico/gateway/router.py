"""Route matching: path templates compiled once, routes ordered by specificity.

A path template is made of ``/``-separated segments; a segment is a literal, ``{name}`` (exactly
one non-empty segment) or, as the last segment only, ``{name:path}`` (the rest of the path, which
may be empty or contain slashes). The most specific route wins: more literal segments first, then
fewer catch-alls, then routes that also constrain host, headers or methods.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar
from urllib.parse import quote, unquote

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}")
_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)(?::(path))?\}$")

T = TypeVar("T")


class HeaderLookup(Protocol):
    def get(self, name: str, default: None = None) -> str | None: ...


@dataclass(frozen=True, slots=True)
class PathTemplate:
    source: str
    regex: re.Pattern[str]
    names: tuple[str, ...]
    literal_segments: int
    literal_chars: int
    catch_all: bool

    @classmethod
    def parse(cls, template: str) -> PathTemplate:
        if not template.startswith("/"):
            raise ValueError("a path template must start with /")
        segments = template[1:].split("/")
        pattern = ["^"]
        names: list[str] = []
        literal_segments = literal_chars = 0
        catch_all = False
        for index, segment in enumerate(segments):
            pattern.append("/")
            if "{" in segment or "}" in segment:
                m = _PARAM.match(segment)
                if m is None:
                    raise ValueError(
                        f"segment {segment!r} is not a literal, {{name}} or {{name:path}}"
                    )
                name, converter = m.group(1), m.group(2)
                if name in names:
                    raise ValueError(f"parameter {name!r} appears twice")
                names.append(name)
                if converter == "path":
                    if index != len(segments) - 1:
                        raise ValueError(f"{{{name}:path}} must be the last segment")
                    catch_all = True
                    pattern.append(f"(?P<{name}>.*)")
                else:
                    pattern.append(f"(?P<{name}>[^/]+)")
            else:
                literal_segments += 1 if segment else 0
                literal_chars += len(segment)
                pattern.append(re.escape(segment))
        pattern.append("$")
        return cls(
            template,
            re.compile("".join(pattern)),
            tuple(names),
            literal_segments,
            literal_chars,
            catch_all,
        )

    def match(self, path: str) -> dict[str, str] | None:
        m = self.regex.match(path)
        if m is None:
            return None
        return {
            name: unquote(value) if "%" in value else value for name, value in m.groupdict().items()
        }

    def expand(self, params: dict[str, str]) -> str:
        """Fill ``{name}`` / ``{name:path}`` placeholders (used for upstream path rewrites).

        Values are the decoded parameters; they are percent-encoded again, so a decoded ``/``,
        space or CR LF can neither change the path's shape nor break the request line.
        """

        def fill(m: re.Match[str]) -> str:
            value = params.get(m.group(1), "")
            return quote(value, safe="/" if m.group(2) else "")

        return _PLACEHOLDER.sub(fill, self.source)


class RouteMatcher(Generic[T]):
    """The match part of one route; ``target`` is what the router returns for it.

    A plain class rather than a generic dataclass: mypyc compiles this module, and it cannot
    build a generic slotted dataclass.
    """

    __slots__ = ("headers", "hosts", "methods", "target", "template")

    def __init__(
        self,
        template: PathTemplate,
        methods: frozenset[str],
        hosts: frozenset[str],
        headers: tuple[tuple[str, str], ...],
        target: T,
    ) -> None:
        self.template = template
        self.methods = methods
        self.hosts = hosts
        self.headers = headers
        self.target = target

    def specificity(self) -> tuple[int, ...]:
        t = self.template
        return (
            t.literal_segments,
            0 if t.catch_all else 1,
            -len(t.names),
            t.literal_chars,
            1 if self.hosts else 0,
            len(self.headers),
            1 if self.methods else 0,
        )


class NoRoute(Exception):
    """No route matches the path (404)."""


class MethodNotAllowed(Exception):
    """Routes match the path, but none accepts the method (405)."""

    def __init__(self, allowed: Sequence[str]) -> None:
        super().__init__("method not allowed")
        self.allowed = tuple(sorted(allowed))


class Router(Generic[T]):
    __slots__ = ("_matchers",)

    def __init__(self, matchers: Sequence[RouteMatcher[T]]) -> None:
        # Python's sort is stable: equally specific routes keep the order they were written in.
        self._matchers = tuple(sorted(matchers, key=RouteMatcher.specificity, reverse=True))

    def match(
        self, method: str, host: str, path: str, headers: HeaderLookup
    ) -> tuple[T, dict[str, str]]:
        """The most specific match; raises :class:`NoRoute` or :class:`MethodNotAllowed`."""
        found, allowed = self._scan(method, host, path, headers)
        if found is not None:
            return found
        if allowed:
            raise MethodNotAllowed(sorted(allowed))
        raise NoRoute()

    def find(
        self, method: str, host: str, path: str, headers: HeaderLookup
    ) -> tuple[T, dict[str, str]] | None:
        """Like :meth:`match`, with ``None`` for no match: for a router consulted before another
        on every request (the built-in endpoints), where a miss is the common case."""
        return self._scan(method, host, path, headers)[0]

    def _scan(
        self, method: str, host: str, path: str, headers: HeaderLookup
    ) -> tuple[tuple[T, dict[str, str]] | None, set[str]]:
        allowed: set[str] = set()
        for m in self._matchers:
            if m.hosts and host not in m.hosts:
                continue
            params = m.template.match(path)
            if params is None:
                continue
            if m.headers and any(headers.get(k) != v for k, v in m.headers):
                continue
            if m.methods and method not in m.methods:
                allowed.update(m.methods)
                continue
            return (m.target, params), allowed
        return None, allowed


def normalize_path(path: str) -> str:
    """Remove dot segments (RFC 3986 §5.2.4), including percent-encoded dots, and empty segments.

    Applied before matching, so ``/v1/orders/../admin`` cannot escape a route's prefix, and the
    normalised path is what goes upstream.
    """
    if "." not in path and "//" not in path and "%" not in path:
        return path
    raw = path.split("/")
    out: list[str] = []
    for segment in raw[1:]:
        decoded = segment.replace("%2e", ".").replace("%2E", ".")
        if decoded == "..":
            if out:
                out.pop()
        elif decoded in (".", ""):
            continue
        else:
            out.append(segment)
    trailing = "/" if raw[-1] in ("", ".", "..") and out else ""
    return "/" + "/".join(out) + trailing
