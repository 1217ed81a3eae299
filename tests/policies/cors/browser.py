"""What a browser decides from Portico's answers: the Fetch standard's CORS checks, written as
the standard words them (https://fetch.spec.whatwg.org/, "CORS check", "CORS-preflight fetch",
"CORS-safelisted response-header name"), so a test asks the question a browser asks instead of
comparing header strings.

Header values are the raw ``(name, value)`` pairs of a response: a field sent twice is combined
as Fetch's "get" does (``a, b``), which is how a duplicated ``Access-Control-Allow-Origin``
fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Fields = Sequence[tuple[str, str]]

SAFELISTED_METHODS = frozenset({"GET", "HEAD", "POST"})
SAFELISTED_RESPONSE_FIELDS = frozenset(
    {
        "cache-control",
        "content-language",
        "content-length",
        "content-type",
        "expires",
        "last-modified",
        "pragma",
    }
)


def get(fields: Fields, name: str) -> str | None:
    """Fetch's "get": the values of every field called ``name``, joined by ``, ``."""
    values = [value for key, value in fields if key.lower() == name.lower()]
    return ", ".join(values) if values else None


def _list(fields: Fields, name: str) -> list[str] | None:
    """Fetch's "extract header list values" for a #token list; ``None`` on a parse failure."""
    value = get(fields, name)
    if value is None:
        return []
    items = [item.strip() for item in value.split(",")]
    if any(not item for item in items):
        return None
    return items


def cors_check(origin: str, include_credentials: bool, fields: Fields) -> bool:
    """Fetch §4.10, CORS check: may the script that sent ``origin`` read this response?"""
    allowed = get(fields, "access-control-allow-origin")
    if allowed is None:
        return False
    if not include_credentials and allowed == "*":
        return True
    if origin != allowed:
        return False
    if not include_credentials:
        return True
    return get(fields, "access-control-allow-credentials") == "true"


def preflight_passes(
    origin: str,
    method: str,
    unsafe_fields: Iterable[str],
    include_credentials: bool,
    status: int,
    fields: Fields,
) -> bool:
    """Fetch §4.8, CORS-preflight fetch, step 7: does the preflight's response let the browser
    send the actual request (``method`` with the non-safelisted request fields
    ``unsafe_fields``)?"""
    if not (cors_check(origin, include_credentials, fields) and 200 <= status <= 299):
        return False
    methods = _list(fields, "access-control-allow-methods")
    names = _list(fields, "access-control-allow-headers")
    if methods is None or names is None:
        return False
    if not methods:
        methods = [method]  # the "use-CORS-preflight flag" case: the request's own method
    if (
        method not in methods
        and method not in SAFELISTED_METHODS
        and (include_credentials or "*" not in methods)
    ):
        return False
    lowered = {name.lower() for name in names}
    for name in unsafe_fields:
        name = name.lower()
        if name == "authorization" and name not in lowered:
            return False  # '*' never covers Authorization
        if name not in lowered and (include_credentials or "*" not in names):
            return False
    return True


def readable_fields(include_credentials: bool, fields: Fields) -> set[str]:
    """The response field names a script may read (Fetch's CORS-filtered response)."""
    exposed = _list(fields, "access-control-expose-headers") or []
    present = {key.lower() for key, _ in fields}
    if not include_credentials and "*" in exposed:
        return present
    allowed = SAFELISTED_RESPONSE_FIELDS | {name.lower() for name in exposed}
    return present & allowed
