"""Route matching: path templates compiled once, routes ordered by specificity.

Path templates (:class:`~portico.core.paths.PathTemplate`) match the decoded, canonical path;
one trailing ``/`` is insignificant.

The most specific route wins: more literal segments first, then fewer catch-alls, then routes that
also constrain host or headers. Methods are part of a route's identity, not a way to choose
between routes: once the most specific route matches path, host and headers, only routes with
that same path shape, hosts and header conditions may serve the request, and if none accepts its
method the answer is 405. A request never falls through to a less specific route (a catch-all,
or one without the host condition) because of its method.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

from portico.core.paths import PathTemplate

__all__ = ["HeaderLookup", "MethodNotAllowed", "NoRoute", "PathTemplate", "RouteMatcher", "Router"]

T = TypeVar("T")


class HeaderLookup(Protocol):
    def get(self, name: str, default: None = None) -> str | None: ...


def _literal_first(template: PathTemplate) -> str | None:
    """The template's first segment when it is literal, else ``None`` (a parameter)."""
    source = template.source
    end = source.find("/", 1)
    first = source[1:] if end < 0 else source[1:end]
    return None if "{" in first else first


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


INDEXED_FROM = 6
"""Routers of more templates than this look them up by first segment."""


def _first_segment(path: str) -> str:
    end = path.find("/", 1)
    return path[1:] if end < 0 else path[1:end]


class Router(Generic[T]):
    __slots__ = ("_all", "_by_first", "_matchers", "_others", "_same_path")

    def __init__(self, matchers: Sequence[RouteMatcher[T]]) -> None:
        # Python's sort is stable: equally specific routes keep the order they were written in.
        ordered = tuple(sorted(matchers, key=RouteMatcher.specificity, reverse=True))
        self._matchers = ordered
        # A template whose first segment is literal matches only paths with that first segment
        # (its pattern is ``^/<literal>`` then ``/`` or the end): a request is tried against
        # those and the templates that start with a parameter, in the same order, and a path no
        # template can match (the common case for the built-in endpoints) costs one lookup. A
        # few templates are tried in turn: that costs less than the lookup.
        self._all = tuple(range(len(ordered)))
        firsts = [_literal_first(m.template) for m in ordered]
        others = tuple(i for i, first in enumerate(firsts) if first is None)
        by_first: dict[str, tuple[int, ...]] = {}
        for first in {f for f in firsts if f is not None}:
            by_first[first] = tuple(i for i, f in enumerate(firsts) if f is None or f == first)
        self._by_first: dict[str, tuple[int, ...]] | None = (
            by_first if len(ordered) > INDEXED_FROM else None
        )
        self._others = others
        # For each matcher, the matchers of the same path shape, hosts and header conditions
        # (itself included): the only routes that may serve a request it matched first.
        groups: dict[
            tuple[str, frozenset[str], frozenset[tuple[str, str]]], list[RouteMatcher[T]]
        ] = {}
        keys = [(m.template.shape, m.hosts, frozenset(m.headers)) for m in ordered]
        for key, m in zip(keys, ordered, strict=True):
            groups.setdefault(key, []).append(m)
        self._same_path = tuple(tuple(groups[key]) for key in keys)

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
        on every request (the built-in endpoints), where a miss is the common case. A path that
        matches with another method is not a miss: it raises :class:`MethodNotAllowed`."""
        found, allowed = self._scan(method, host, path, headers)
        if found is None and allowed:
            raise MethodNotAllowed(sorted(allowed))
        return found

    def _scan(
        self, method: str, host: str, path: str, headers: HeaderLookup
    ) -> tuple[tuple[T, dict[str, str]] | None, set[str]]:
        matchers = self._matchers
        by_first = self._by_first
        if by_first is None:
            candidates = self._all
        else:
            candidates = by_first.get(_first_segment(path), self._others)
        for index in candidates:
            m = matchers[index]
            if m.hosts and host not in m.hosts:
                continue
            params = m.template.match(path)
            if params is None:
                continue
            if m.headers and any(headers.get(k) != v for k, v in m.headers):
                continue
            if not m.methods or method in m.methods:
                return (m.target, params), set()
            return self._same_path_methods(index, method, host, path, headers)
        return None, set()

    def _same_path_methods(
        self, index: int, method: str, host: str, path: str, headers: HeaderLookup
    ) -> tuple[tuple[T, dict[str, str]] | None, set[str]]:
        """The route that matched does not take ``method``: another of its kind may."""
        allowed: set[str] = set()
        for m in self._same_path[index]:
            if not m.methods or method in m.methods:
                params = m.template.match(path)
                assert params is not None  # the same shape matches the same paths
                return (m.target, params), set()
            allowed.update(m.methods)
        return None, allowed
