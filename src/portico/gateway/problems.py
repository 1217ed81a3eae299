"""RFC 9457 problem details: the one format of every error Portico itself produces.

Each :class:`ProblemType` has a stable ``type`` URI (documented in ``docs/errors.md``), a status and
a title. Responses carry the ``request_id`` and never internal detail such as upstream addresses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from portico.gateway.exchange import Reply
from portico.gateway.headers import Headers

PROBLEM_BASE = "https://portico.dev/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"


@dataclass(frozen=True, slots=True)
class ProblemType:
    slug: str
    status: int
    title: str

    @property
    def uri(self) -> str:
        return PROBLEM_BASE + self.slug


BAD_REQUEST = ProblemType("bad-request", 400, "Malformed HTTP request")
UPGRADE_NOT_ALLOWED = ProblemType(
    "upgrade-not-allowed", 400, "This route does not accept protocol upgrades"
)
IDEMPOTENCY_KEY_MISSING = ProblemType(
    "idempotency-key-missing", 400, "This request needs an Idempotency-Key"
)
IDEMPOTENCY_KEY_INVALID = ProblemType(
    "idempotency-key-invalid", 400, "The Idempotency-Key is not a valid key"
)
UNAUTHORIZED = ProblemType("unauthorized", 401, "Authentication required")
INVALID_CREDENTIALS = ProblemType("invalid-credentials", 401, "The credentials are not valid")
FORBIDDEN = ProblemType("forbidden", 403, "Access to this route is not allowed")
INSUFFICIENT_SCOPE = ProblemType(
    "insufficient-scope", 403, "The credentials do not grant the scope this route needs"
)
IP_FORBIDDEN = ProblemType("ip-forbidden", 403, "Requests from this address are not allowed")
CORS_PREFLIGHT_REFUSED = ProblemType(
    "cors-preflight-refused", 403, "This cross-origin request is not allowed"
)
UNSAFE_REWRITE = ProblemType(
    "unsafe-rewrite", 400, "The request cannot be rewritten safely for the upstream"
)
ROUTE_NOT_FOUND = ProblemType("route-not-found", 404, "No route matches this request")
METHOD_NOT_ALLOWED = ProblemType("method-not-allowed", 405, "Method not allowed on this route")
ROUTE_SUNSET = ProblemType("route-sunset", 410, "This route has been retired")
VALIDATION_FAILED = ProblemType(
    "validation-failed", 400, "The request does not match the API document"
)
JSON_LIMIT_EXCEEDED = ProblemType(
    "json-limit-exceeded", 400, "The JSON body is past a limit of this route"
)
OPERATION_NOT_FOUND = ProblemType(
    "operation-not-found", 404, "The API document describes no operation at this path"
)
UNSUPPORTED_MEDIA_TYPE = ProblemType(
    "unsupported-media-type", 415, "The operation does not take this content type"
)
REQUEST_TIMEOUT = ProblemType("request-timeout", 408, "The request was not received in time")
IDEMPOTENCY_KEY_IN_FLIGHT = ProblemType(
    "idempotency-key-in-flight", 409, "A request with this Idempotency-Key is still in progress"
)
REQUEST_TOO_LARGE = ProblemType("request-too-large", 413, "Request body too large")
URI_TOO_LONG = ProblemType("uri-too-long", 414, "The request target is too long")
RATE_LIMITED = ProblemType("rate-limited", 429, "Too many requests: a rate limit or quota is spent")
IDEMPOTENCY_KEY_REUSED = ProblemType(
    "idempotency-key-reused",
    422,
    "This Idempotency-Key was used for a different request",
)
HEADERS_TOO_LARGE = ProblemType(
    "request-header-fields-too-large", 431, "Request header fields too large"
)
INTERNAL_ERROR = ProblemType("internal-error", 500, "Internal gateway error")
RESPONSE_NOT_MASKABLE = ProblemType(
    "response-not-maskable", 502, "The upstream response could not be checked for masked fields"
)
NOT_IMPLEMENTED = ProblemType(
    "transfer-coding-not-implemented", 501, "The request uses a transfer coding Portico cannot read"
)
UPSTREAM_UNAVAILABLE = ProblemType("upstream-unavailable", 502, "The upstream service failed")
SHARED_STATE_UNAVAILABLE = ProblemType(
    "shared-state-unavailable", 503, "A policy's shared state (Redis) did not answer"
)
CONCURRENCY_LIMIT_EXCEEDED = ProblemType(
    "concurrency-limit-exceeded", 503, "The service has too many requests in progress"
)
NO_HEALTHY_UPSTREAM = ProblemType(
    "no-healthy-upstream", 503, "No healthy upstream target is available"
)
UPSTREAM_TIMEOUT = ProblemType(
    "upstream-timeout", 504, "The upstream service did not answer in time"
)
NOT_CACHED = ProblemType(
    "not-cached", 504, "The request asked for a stored response only, and none is stored"
)
VERSION_NOT_SUPPORTED = ProblemType(
    "http-version-not-supported", 505, "Only HTTP/1.0 and HTTP/1.1 are served on this listener"
)

ALL_TYPES: tuple[ProblemType, ...] = (
    BAD_REQUEST,
    UPGRADE_NOT_ALLOWED,
    IDEMPOTENCY_KEY_MISSING,
    IDEMPOTENCY_KEY_INVALID,
    UNAUTHORIZED,
    INVALID_CREDENTIALS,
    FORBIDDEN,
    INSUFFICIENT_SCOPE,
    IP_FORBIDDEN,
    CORS_PREFLIGHT_REFUSED,
    UNSAFE_REWRITE,
    ROUTE_NOT_FOUND,
    METHOD_NOT_ALLOWED,
    ROUTE_SUNSET,
    VALIDATION_FAILED,
    JSON_LIMIT_EXCEEDED,
    OPERATION_NOT_FOUND,
    UNSUPPORTED_MEDIA_TYPE,
    REQUEST_TIMEOUT,
    IDEMPOTENCY_KEY_IN_FLIGHT,
    REQUEST_TOO_LARGE,
    URI_TOO_LONG,
    RATE_LIMITED,
    IDEMPOTENCY_KEY_REUSED,
    HEADERS_TOO_LARGE,
    INTERNAL_ERROR,
    NOT_IMPLEMENTED,
    UPSTREAM_UNAVAILABLE,
    RESPONSE_NOT_MASKABLE,
    CONCURRENCY_LIMIT_EXCEEDED,
    NO_HEALTHY_UPSTREAM,
    UPSTREAM_TIMEOUT,
    NOT_CACHED,
    VERSION_NOT_SUPPORTED,
)


def problem(
    kind: ProblemType,
    request_id: str,
    detail: str | None = None,
    *,
    headers: Headers | None = None,
    **extensions: Any,
) -> Reply:
    """A complete problem+json :class:`Reply`.

    ``extensions`` become extra members of the problem object (RFC 9457 §3.2).
    """
    body: dict[str, Any] = {"type": kind.uri, "title": kind.title, "status": kind.status}
    if detail:
        body["detail"] = detail
    body["request_id"] = request_id
    body.update(extensions)
    out = headers.copy() if headers else Headers()
    out.set("content-type", PROBLEM_CONTENT_TYPE)
    out.set("cache-control", "no-store")
    return Reply(kind.status, out, json.dumps(body, separators=(",", ":")).encode(), kind.uri)


def too_large(request_id: str, limit: int) -> Reply:
    """413 for a request body over ``limit`` bytes: the detail says the limit as the config
    writes it (``1MiB``), and the ``max_body_size`` member gives it in bytes for programs."""
    detail = f"the request body is limited to {byte_size(limit)} here"
    return problem(REQUEST_TOO_LARGE, request_id, detail, max_body_size=limit)


def byte_size(n: int) -> str:
    """``1MiB``, ``64KiB``, ``1.5GiB``, ``900 bytes``: the binary units of the config's sizes."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{n} bytes" if n != 1 else "1 byte"
