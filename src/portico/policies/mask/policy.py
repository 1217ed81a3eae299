"""The ``mask`` policy at response time: fields of a JSON body removed or masked by path, for the
consumers that lack a scope.

    policies:
      - type: auth
        methods: [api_key]
      - type: mask
        remove: ["customer.ssn", "**.password"]
        mask: ["items[*].cost"]
        unless_scopes: [pii:read]

The body is held whole (up to ``max_body_size``; the route sends nothing before), parsed, edited
and written again, whatever the status (a 4xx or 5xx body is masked too). The document is always
written again when the policy applies, even when no path matched: what the client gets is
exactly what Python's parser read, so a duplicated member (``{"a": {"ssn": 1}, "a": {}}``), which
another parser could read the other way, or a name spelt with escapes (``"s\\u0073n"``) cannot
carry a field past the paths. A body the policy cannot read (over the limit, not valid JSON
though declared JSON, a content or transfer coding other than gzip and deflate) is refused with
``502 response-not-maskable`` unless the route says ``unreadable: pass``; a body that is not JSON
at all follows ``non_json``.

Compiled with mypyc (``[tool.portico.native]``): the paths are parsed into plain tuples when the
snapshot is built (:func:`~.settings.parse_path`).
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from typing import Any

from portico.gateway import problems
from portico.gateway.exchange import Exchange, Reply
from portico.gateway.headers import Headers
from portico.gateway.stats import LabelledCounter
from portico.identity.context import BuildContext
from portico.policies.mask.settings import (
    ANY_INDEX,
    ANY_MEMBER,
    DESCEND,
    INDEX,
    MEMBER,
    MaskSettings,
    Step,
    parse_path,
)

__all__ = ["FieldMask", "build", "is_json"]

log = logging.getLogger("portico.mask")

TOO_LARGE = "too_large"
INVALID_JSON = "invalid_json"
ENCODING = "encoding"
CONTENT_TYPE = "content_type"
PARTIAL = "partial"

_DETAILS = {
    TOO_LARGE: "The response is larger than this route's masking limit.",
    INVALID_JSON: "The response is declared JSON but is not valid JSON.",
    ENCODING: "The response uses a coding Portico cannot decode to mask it.",
    CONTENT_TYPE: "The response is not JSON, and this route masks JSON only.",
    PARTIAL: "The response is a part of a document, which cannot be checked.",
}
_STALE = ("etag", "content-md5", "digest", "content-digest", "repr-digest")
"""Fields that describe the upstream's bytes, false once the body is masked."""
_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}
"""The content codings decoded before masking (zlib's window bits for each)."""


class _Unreadable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_json(content_type: str) -> bool:
    """``application/json`` or any ``+json`` media type (RFC 6839), parameters aside."""
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _charset(content_type: str) -> str:
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return ""


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        # 1e400 would be written back as Infinity, which is not JSON.
        raise ValueError("a number out of range")
    return value


def _no_constant(text: str) -> object:
    raise ValueError(f"{text} is not JSON")


def _decode(body: bytes, coding: str, limit: int) -> bytes:
    decompressor = zlib.decompressobj(_WBITS[coding])
    try:
        out = decompressor.decompress(body, limit + 1)
    except zlib.error:
        raise _Unreadable(ENCODING) from None
    if len(out) > limit or decompressor.unconsumed_tail:
        raise _Unreadable(TOO_LARGE)
    if not decompressor.eof or decompressor.unused_data:
        raise _Unreadable(ENCODING)
    return out


class FieldMask:
    __slots__ = (
        "_fold",
        "_mask",
        "_masked_responses",
        "_pass_non_json",
        "_pass_unreadable",
        "_refusals",
        "_remove",
        "_replacement",
        "_route",
        "_unchecked_responses",
        "_unless",
        "needs_body",
        "response_body_limit",
    )

    def __init__(
        self,
        settings: MaskSettings,
        route: str,
        masked: LabelledCounter | None,
        refused: LabelledCounter | None,
        unchecked: LabelledCounter | None,
    ) -> None:
        self._remove = tuple(parse_path(path) for path in settings.remove)
        self._mask = tuple(parse_path(path) for path in settings.mask)
        if settings.ignore_case:
            self._remove = tuple(self._folded(steps) for steps in self._remove)
            self._mask = tuple(self._folded(steps) for steps in self._mask)
        self._fold = settings.ignore_case
        self._replacement: Any = settings.replacement
        self._unless = frozenset(settings.unless_scopes)
        self._pass_unreadable = settings.unreadable == "pass"
        self._pass_non_json = settings.non_json == "pass"
        self._route = route
        # Where the responses are counted; ``None``: not counted.
        self._masked_responses = masked
        self._refusals = refused
        self._unchecked_responses = unchecked
        self.response_body_limit = settings.max_body_size
        self.needs_body = False

    @staticmethod
    def _folded(steps: tuple[Step, ...]) -> tuple[Step, ...]:
        return tuple((kind, name.casefold(), index) for kind, name, index in steps)

    def on_request(self, exchange: Exchange) -> Reply | None:
        # A range of a document can be valid JSON on its own (the string value of a field the
        # paths name): the upstream is asked for whole documents only.
        exchange.headers.remove("range", "if-range")
        return None

    def on_response_body(
        self, exchange: Exchange, status: int, headers: Headers, body: bytes | None
    ) -> bytes | Reply | None:
        unless = self._unless
        identity = exchange.identity
        if unless and identity is not None and unless <= identity.scopes:
            return None  # a consumer granted the scopes sees the body as it came
        try:
            if status == 206:
                raise _Unreadable(PARTIAL)
            return self._masked(headers, body)
        except _Unreadable as unreadable:
            return self._cannot_check(exchange, unreadable.reason)

    def _masked(self, headers: Headers, body: bytes | None) -> bytes | None:
        if body is None:
            raise _Unreadable(TOO_LARGE)
        types = headers.get_all("content-type")
        if not body:
            return None  # nothing to leak
        if len(types) != 1 or not is_json(types[0]):
            raise _Unreadable(CONTENT_TYPE)
        for coding in headers.get_all("transfer-encoding"):
            for name in coding.split(","):
                if name.strip().lower() not in ("chunked", ""):
                    raise _Unreadable(ENCODING)
        codings = [
            name.strip().lower()
            for value in headers.get_all("content-encoding")
            for name in value.split(",")
            if name.strip().lower() not in ("identity", "")
        ]
        if codings:
            if len(codings) != 1 or codings[0] not in _WBITS:
                raise _Unreadable(ENCODING)
            body = _decode(body, codings[0], self.response_body_limit)
        try:
            document = json.loads(body, parse_float=_finite, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            # ValueError covers UnicodeDecodeError: bytes that are not UTF-8, -16 or -32.
            raise _Unreadable(INVALID_JSON) from None
        try:
            for steps in self._remove:
                document = self._apply(document, steps, 0, True)
            for steps in self._mask:
                document = self._apply(document, steps, 0, False)
        except RecursionError:
            raise _Unreadable(INVALID_JSON) from None
        try:
            masked = self._written(document)
        except RecursionError:  # as deep as the parser allowed, from deeper in the stack
            raise _Unreadable(INVALID_JSON) from None
        if codings:
            headers.remove("content-encoding")
        headers.remove(*_STALE)
        charset = _charset(types[0])
        if charset and charset not in ("utf-8", "utf8"):
            headers.set("content-type", types[0].partition(";")[0].strip() + "; charset=utf-8")
        counted = self._masked_responses
        if counted is not None:
            counted.inc((self._route,))
        return masked

    @staticmethod
    def _written(document: Any) -> bytes:
        try:
            return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate the document escaped: keep it escaped
            return json.dumps(document, separators=(",", ":")).encode("ascii")

    def _cannot_check(self, exchange: Exchange, reason: str) -> Reply | None:
        if self._pass_non_json if reason == CONTENT_TYPE else self._pass_unreadable:
            unchecked = self._unchecked_responses
            if unchecked is not None:
                unchecked.inc((self._route, reason))
            return None
        refused = self._refusals
        if refused is not None:
            refused.inc((self._route, reason))
        log.warning(
            "request %s: route %s: response not maskable (%s), refused",
            exchange.request_id,
            self._route,
            reason,
        )
        return problems.problem(
            problems.RESPONSE_NOT_MASKABLE, exchange.request_id, _DETAILS[reason]
        )

    def _names(self, node: dict[str, Any], name: str) -> list[str]:
        if not self._fold:
            return [name] if name in node else []
        return [key for key in node if key.casefold() == name]

    def _apply(self, node: Any, steps: tuple[Step, ...], at: int, remove: bool) -> Any:
        """Apply the path ``steps[at:]`` under ``node``; the node, or its replacement when the
        path names the node itself (never: a path has at least one step)."""
        kind, name, index = steps[at]
        last = at == len(steps) - 1
        if kind == DESCEND:
            self._apply(node, steps, at + 1, remove)  # zero steps down
            # One step down, then the same: the children as they are after the edit above, so
            # a masked value is not searched.
            if isinstance(node, dict):
                for child in list(node.values()):
                    self._apply(child, steps, at, remove)
            elif isinstance(node, list):
                for child in list(node):
                    self._apply(child, steps, at, remove)
            return node
        if isinstance(node, dict):
            if kind == MEMBER:
                keys = self._names(node, name)
            elif kind == ANY_MEMBER:
                keys = list(node)
            else:
                return node
            for key in keys:
                if not last:
                    self._apply(node[key], steps, at + 1, remove)
                elif remove:
                    del node[key]
                else:
                    node[key] = self._replacement
        elif isinstance(node, list):
            if kind == INDEX:
                if index >= len(node):
                    return node
                if not last:
                    self._apply(node[index], steps, at + 1, remove)
                elif remove:
                    del node[index]
                else:
                    node[index] = self._replacement
            elif kind == ANY_INDEX:
                if not last:
                    for child in node:
                        self._apply(child, steps, at + 1, remove)
                elif remove:
                    node.clear()
                else:
                    node[:] = [self._replacement] * len(node)
        return node


def build(settings: MaskSettings, context: BuildContext) -> FieldMask:
    stats = context.extensions.stats
    masked = stats.counter(
        "portico_masked_responses",
        "Response bodies a route's mask policy checked and sent with its fields removed or masked.",
        ("route",),
    )
    refused = stats.counter(
        "portico_mask_refusals",
        "Responses a mask policy could not check and replaced by 502 response-not-maskable, "
        "by reason: too_large, invalid_json, encoding, partial, content_type.",
        ("route", "reason"),
    )
    unchecked = stats.counter(
        "portico_mask_unchecked_responses",
        "Responses a mask policy could not check and let through as configured "
        "(unreadable: pass, non_json: pass), by reason.",
        ("route", "reason"),
    )
    if not stats.enabled:
        return FieldMask(settings, context.route_name, None, None, None)
    return FieldMask(settings, context.route_name, masked, refused, unchecked)
