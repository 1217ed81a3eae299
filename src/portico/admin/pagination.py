"""Lists of the admin API: cursor pagination, sorting on documented fields, and ``ETag``.

A list answers ``{"items": [...], "next_cursor": ..., "next": ...}`` and, when there is more,
``Link: <next>; rel="next"``. The cursor is opaque to clients: base64url of the sort order and
the sort key of the last item given, so that a page follows on from the last item whatever was
added or removed since (keyset pagination, not offsets). A cursor is only good with the sort it
was made for; anything else is a validation error on ``/query/cursor``.

``sort`` names one documented field, ``-field`` for descending; the entity's id breaks ties, so
the order is total.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

from pydantic import BaseModel
from starlette.requests import Request

from portico.admin.problems import PRECONDITION_FAILED, AdminProblem
from portico.gateway import problems

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "Page",
    "check_if_match",
    "cursor_after",
    "cursor_key",
    "etag_of",
    "invalid",
    "next_link",
    "not_modified",
    "paginate",
    "parse_sort",
]

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

T = TypeVar("T")
Key = tuple[Any, ...]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None
    """Give it as ``cursor`` for the next page; ``null`` on the last page."""
    next: str | None
    """The URL of the next page (the same as the ``Link`` field's ``rel="next"``)."""


def invalid(pointer: str, message: str) -> AdminProblem:
    """A validation error on one place of the request, as every validation error is answered."""
    return AdminProblem(
        problems.VALIDATION_FAILED, message, errors=[{"pointer": pointer, "message": message}]
    )


def parse_sort(text: str, fields: Sequence[str]) -> tuple[str, bool]:
    """``(field, descending)`` of ``sort``; refused unless the field is one of ``fields``."""
    descending = text.startswith("-")
    field = text[1:] if descending else text
    if field not in fields:
        allowed = ", ".join(fields)
        raise invalid("/query/sort", f"sort by one of {allowed} (- before it: descending)")
    return field, descending


def _encode(sort: str, key: Key) -> str:
    raw = json.dumps({"s": sort, "k": list(key)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode(cursor: str, sort: str) -> Key:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        found = json.loads(raw)
        if not isinstance(found, dict) or not isinstance(found.get("k"), list):
            raise ValueError("not a cursor")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid("/query/cursor", "not a cursor this API gave") from None
    if found.get("s") != sort:
        raise invalid("/query/cursor", "the cursor was given for another sort order")
    return tuple(found["k"])


def _comparable(key: Key) -> Key:
    # None sorts first, and never beside a str or an int it cannot be compared with.
    return tuple((value is not None, value if value is not None else "") for value in key)


def paginate(
    items: Sequence[T],
    key: Callable[[T], Key],
    *,
    sort: str,
    descending: bool,
    cursor: str | None,
    limit: int,
) -> tuple[list[T], str | None]:
    """One page of ``items`` (all of them in memory) in the order of ``key`` (its last member
    the id), after ``cursor``; and the cursor of the next page, if there is one."""
    ordered = sorted(items, key=lambda item: _comparable(key(item)), reverse=descending)
    if cursor is not None:
        after = _comparable(_decode(cursor, sort))
        ordered = [
            item
            for item in ordered
            if (_comparable(key(item)) < after if descending else _comparable(key(item)) > after)
        ]
    chosen = ordered[:limit]
    more = len(ordered) > limit
    return chosen, (_encode(sort, key(chosen[-1])) if more and chosen else None)


def cursor_after(sort: str, key: Key) -> str:
    """The cursor of the page after the item of sort key ``key`` (for lists paged in SQL)."""
    return _encode(sort, key)


def cursor_key(cursor: str, sort: str) -> Key:
    """The sort key a cursor was made after (for lists paged in SQL)."""
    return _decode(cursor, sort)


def next_link(request: Request, next_cursor: str | None) -> str | None:
    """The URL of the next page: this request's, with ``cursor`` replaced."""
    if next_cursor is None:
        return None
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
    params.append(("cursor", next_cursor))
    return f"{request.url.path}?{urlencode(params)}"


def etag_of(representation: Any) -> str:
    """A strong ``ETag`` of an entity's representation (JSON-like, or a pydantic model)."""
    if isinstance(representation, BaseModel):
        representation = representation.model_dump(mode="json")
    canonical = json.dumps(representation, sort_keys=True, separators=(",", ":"), default=str)
    return '"' + hashlib.sha256(canonical.encode()).hexdigest()[:32] + '"'


def check_if_match(if_match: str | None, current: str) -> None:
    """Refuse with 412 when ``If-Match`` names no version that is ``current`` (strong
    comparison, RFC 9110 §13.1.1); no ``If-Match``: no condition."""
    if if_match is None:
        return
    wanted = [tag.strip() for tag in if_match.split(",")]
    if "*" in wanted or current in wanted:
        return
    raise AdminProblem(
        PRECONDITION_FAILED,
        "the entity changed since it was read: read it again (its ETag), then retry",
        headers={"etag": current},
    )


def not_modified(if_none_match: str | None, current: str) -> bool:
    """Whether ``If-None-Match`` names ``current`` (weak comparison, RFC 9110 §13.1.2)."""
    if if_none_match is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or current in tags
