"""What the consumer API reads from a request: its JSON body (strictly), the bodies' shapes
(pydantic, each error as ``{pointer, message}``), and the query's paging and time ranges.

Everything refused here is a :class:`~portico.events.problems.EventsProblem` of the gateway's
``validation-failed`` (400) or ``unsupported-media-type`` (415), raised before the store is read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from portico.config.events import TYPE_FILTER_PATTERN
from portico.events.problems import EventsProblem, pointer_errors
from portico.gateway import problems
from portico.gateway.headers import Headers

__all__ = [
    "EndpointChanges",
    "EndpointCreate",
    "PublishBody",
    "RedeliverBody",
    "RotateBody",
    "json_body",
    "model_of",
    "page_of",
    "query_of",
    "time_of",
]

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
MAX_OVERLAP = 30 * 86400.0
"""The longest rotation overlap a consumer may ask for (a month)."""

M = TypeVar("M", bound=BaseModel)
TypeFilter = Annotated[str, StringConstraints(pattern=TYPE_FILTER_PATTERN, max_length=200)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Ordering(_Body):
    key: str = Field("endpoint", pattern=r"^(endpoint|data(\.[A-Za-z0-9_-]+)+)$", max_length=200)


class EndpointCreate(_Body):
    url: str = Field(min_length=1, max_length=2000)
    description: str | None = Field(None, max_length=4000)
    types: list[TypeFilter] = Field(["*"], min_length=1, max_length=100)
    filter: dict[str, Any] | None = None
    rate_limit: float | None = Field(None, gt=0, le=100_000)
    concurrency: int | None = Field(None, ge=1, le=10_000)
    ordering: Ordering | None = None


class EndpointChanges(_Body):
    """A PATCH: the fields given change, the others stay; ``null`` clears an optional one."""

    url: str | None = Field(None, min_length=1, max_length=2000)
    description: str | None = Field(None, max_length=4000)
    types: list[TypeFilter] | None = Field(None, min_length=1, max_length=100)
    filter: dict[str, Any] | None = None
    rate_limit: float | None = Field(None, gt=0, le=100_000)
    concurrency: int | None = Field(None, ge=1, le=10_000)
    ordering: Ordering | None = None


class PublishBody(_Body):
    type: str = Field(min_length=1, max_length=200)
    data: Any
    id: str | None = Field(None, min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")
    """The publisher's own id of the event: its idempotency key."""


class RotateBody(_Body):
    overlap: float | None = Field(None, ge=0, le=MAX_OVERLAP)


class RedeliverBody(_Body):
    since: str | float | None = None
    until: str | float | None = None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} appears twice in one object")
        out[key] = value
    return out


def _invalid(errors: list[tuple[str, str]], detail: str) -> EventsProblem:
    return EventsProblem(problems.VALIDATION_FAILED, detail, errors=pointer_errors(errors))


def json_body(headers: Headers, body: bytes, *, optional: bool = False) -> Any:
    """The request's JSON body: ``application/json`` (or ``…+json``) in UTF-8, one value, no
    key twice in an object, no ``NaN``. An empty body is ``{}`` when ``optional``."""
    if not body and optional:
        return {}
    media = (headers.get("content-type") or "").partition(";")
    kind = media[0].strip().lower()
    charset = media[2].strip().lower()
    if not (
        kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))
    ):
        raise EventsProblem(
            problems.UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON: Content-Type: application/json",
            headers=[("accept-post", "application/json"), ("accept-patch", "application/json")],
        )
    if charset and charset.replace(" ", "") not in ("charset=utf-8", 'charset="utf-8"'):
        raise EventsProblem(problems.UNSUPPORTED_MEDIA_TYPE, "JSON is read in UTF-8 only")
    try:
        text = body.decode("utf-8")
        if text.startswith("\ufeff"):
            raise ValueError("a byte order mark is not JSON")
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else "not JSON"
        raise _invalid([("", message)], "the body is not valid JSON") from None


def _pointer(location: tuple[int | str, ...]) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in location)


def model_of(model: type[M], document: Any) -> M:
    """``document`` as ``model``; every error with its JSON Pointer into the body."""
    if not isinstance(document, dict):
        raise _invalid([("", "the body must be a JSON object")], "the body must be a JSON object")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        errors = [
            (_pointer(tuple(e["loc"])), e["msg"])
            for e in exc.errors(include_url=False, include_input=False)
        ]
        raise _invalid(errors, "the body does not have the expected shape") from None


def query_of(query: str) -> dict[str, str]:
    """The query's parameters; one given twice is refused (which one was meant is not ours to
    choose)."""
    out: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=32, strict_parsing=False)
    except ValueError:
        raise _invalid([("/query", "too many parameters")], "the query is not valid") from None
    for name, value in pairs:
        if name in out:
            raise _invalid([(f"/query/{name}", "given twice")], "the query is not valid")
        out[name] = value
    return out


def page_of(params: Mapping[str, str]) -> tuple[str | None, int]:
    """``cursor`` and ``limit`` (1 to 200, 50 by default), as the admin API's lists take them."""
    text = params.get("limit")
    limit = DEFAULT_LIMIT
    if text is not None:
        if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
            raise _invalid(
                [("/query/limit", f"an integer from 1 to {MAX_LIMIT}")], "the query is not valid"
            )
        limit = int(text)
    cursor = params.get("cursor") or None
    return cursor, limit


def time_of(value: str | float | None, where: str) -> float | None:
    """An instant given as ISO 8601 (UTC when it names no offset) or as epoch seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _invalid([(where, "a time: ISO 8601 or epoch seconds")], "a time is not valid")
    if isinstance(value, int | float):
        number = float(value)
    else:
        try:
            number = float(value)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                raise _invalid(
                    [(where, "a time: ISO 8601 or epoch seconds")], "a time is not valid"
                ) from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.timestamp()
    if not math.isfinite(number) or not 0 <= number < 1e11:
        raise _invalid([(where, "a time: ISO 8601 or epoch seconds")], "a time is not valid")
    return number
