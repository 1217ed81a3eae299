"""The ``rewrite`` policy at request time: the path and the query that go upstream.

    policies:
      - type: rewrite
        path:
          - {regex: "^/orders/(?P<id>[^/]+)/lines$", replace: "/order-lines/{id}"}
        query: {rename: {mail: email}, remove: [debug], set: {api-version: "2"}}

The path rules work on the decoded path the route would send (after ``strip_prefix`` or
``upstream_path``), so a rule sees the same text whether the client encoded it or not, and the
result is percent-encoded again for the request line (:func:`~portico.gateway.uri.encode_path`).
A result that would leave the path's shape is refused with ``400 unsafe-rewrite`` rather than sent:
a ``.`` or ``..`` segment (a backend would walk out of the path the rule meant), an empty segment,
a control character or a backslash (which decoded capture groups cannot hold, but literal text
next to them could assemble).

The query is edited as the client encoded it: parameters the edits do not name go byte for byte;
names are compared percent-decoded (``+`` as a space), so ``%64ebug`` is ``debug``; the values the
config sets are percent-encoded, so no value can break the request line.

Compiled with mypyc (``[tool.portico.native]``): the rules are copied out of the settings into
plain tuples when the snapshot is built.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, unquote_plus

from portico.gateway import problems
from portico.gateway.exchange import Exchange, Reply
from portico.gateway.uri import encode_path
from portico.identity.context import BuildContext
from portico.policies.rewrite.settings import QueryEdits, RewriteSettings

__all__ = ["QueryRewrite", "Rewrite", "build", "unsafe_path"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


def unsafe_path(path: str) -> str:
    """Why a rewritten (decoded) path cannot go upstream, or ``""`` when it can."""
    if not path.startswith("/"):
        return "the rewritten path does not start with '/'"
    if _CONTROL.search(path) is not None:
        return "the rewritten path holds a control character or a backslash"
    segments = path.split("/")
    last = len(segments) - 1
    for index in range(1, len(segments)):
        segment = segments[index]
        if segment == "." or segment == "..":
            return "the rewritten path has a '.' or '..' segment"
        if not segment and index != last:
            return "the rewritten path has an empty segment"
    return ""


def _encode(text: str) -> str:
    return quote(text, safe="")


class QueryRewrite:
    """The query edits of :class:`~.settings.QueryEdits`, ready to apply to a raw query."""

    __slots__ = ("_add", "_remove", "_rename", "_set", "_set_names")

    def __init__(self, edits: QueryEdits) -> None:
        self._remove = frozenset(edits.remove)
        self._rename = {old: (new, _encode(new)) for old, new in edits.rename.items()}
        self._set_names = frozenset(edits.set)
        self._set = tuple(f"{_encode(k)}={_encode(v)}" for k, v in edits.set.items())
        self._add = tuple(f"{_encode(k)}={_encode(v)}" for k, v in edits.add.items())

    def apply(self, query: str) -> str:
        params: list[tuple[str, str]] = []  # (decoded name, the parameter as it goes)
        if query:
            for raw in query.split("&"):
                name, _, _ = raw.partition("=")
                params.append((unquote_plus(name, errors="replace"), raw))
        remove = self._remove
        if remove:
            params = [p for p in params if p[0] not in remove]
        rename = self._rename
        if rename:
            params = self._renamed(params)
        drop = self._set_names
        if drop:
            params = [p for p in params if p[0] not in drop]
        out = [raw for _, raw in params]
        out.extend(self._set)
        out.extend(self._add)
        return "&".join(out)

    def _renamed(self, params: list[tuple[str, str]]) -> list[tuple[str, str]]:
        rename = self._rename
        taken = {rename[name][0] for name, _ in params if name in rename}
        if not taken:
            return params
        out: list[tuple[str, str]] = []
        for name, raw in params:
            found = rename.get(name)
            if found is not None:
                new, encoded = found
                _, eq, value = raw.partition("=")
                out.append((new, encoded + eq + value))
            elif name not in taken:
                out.append((name, raw))
        return out


class Rewrite:
    __slots__ = ("_query", "_rules", "needs_body")

    def __init__(self, settings: RewriteSettings) -> None:
        self._rules = tuple((re.compile(rule.regex), rule.template()) for rule in settings.path)
        query = settings.query
        edits = query.remove or query.rename or query.set or query.add
        self._query = QueryRewrite(query) if edits else None
        self.needs_body = False

    def on_request(self, exchange: Exchange) -> Reply | None:
        rules = self._rules
        if rules:
            sent = exchange.upstream_path
            decoded = unquote(sent) if "%" in sent else sent
            path = decoded
            for regex, template in rules:
                path = regex.sub(template, path)
            if path != decoded:
                reason = unsafe_path(path)
                if reason:
                    return problems.problem(problems.UNSAFE_REWRITE, exchange.request_id, reason)
                exchange.upstream_path = encode_path(path)
        query = self._query
        if query is not None:
            exchange.query = query.apply(exchange.query)
        return None


def build(settings: RewriteSettings, context: BuildContext) -> Rewrite:
    return Rewrite(settings)
