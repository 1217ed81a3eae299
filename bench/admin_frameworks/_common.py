"""What both admin API candidates share: the data, the token check and the page they answer.

The endpoint is the admin API's typical read: ``GET /admin/v1/consumers?limit=50`` with an
``Authorization: Bearer`` admin token. The token is checked as Portico checks one (its id looked
up, the SHA-256 of the whole token compared in constant time), then a page of 50 of 500 consumers,
sorted by name, is answered as JSON with a next cursor. Only the framework differs between the
candidates: each declares the response with its own typed models (pydantic for FastAPI, msgspec
for Litestar, as each documents), and each runs under the same uvicorn (uvloop, httptools).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
from dataclasses import dataclass

HOST = "127.0.0.1"
TOKEN = "padm_bench00001_" + "s" * 43
"""The one valid token of the benchmark (what wrk sends)."""
LIMIT = 50
MAX_LIMIT = 200


@dataclass(frozen=True, slots=True)
class Consumer:
    tenant: str
    name: str
    scopes: tuple[str, ...]
    metadata: dict[str, str]


CONSUMERS = sorted(
    (
        Consumer(
            tenant=f"tenant{n % 7}",
            name=f"consumer{n:04d}",
            scopes=("orders:read", "orders:write"),
            metadata={"team": f"team{n % 13}", "tier": "gold" if n % 3 else "silver"},
        )
        for n in range(500)
    ),
    key=lambda c: (c.tenant, c.name),
)
_TOKENS = {"bench00001": hashlib.sha256(TOKEN.encode()).hexdigest()}


def authorized(header: str | None) -> bool:
    """The bearer token's id looked up and its digest compared, as Portico's admin tokens."""
    if header is None or header[:7].lower() != "bearer ":
        return False
    token = header[7:].strip()
    _, _, rest = token.partition("_")
    token_id = rest.partition("_")[0]
    expected = _TOKENS.get(token_id, "-" * 64)
    return hmac.compare_digest(hashlib.sha256(token.encode()).hexdigest(), expected)


def page(cursor: str | None, limit: int) -> tuple[list[Consumer], str | None]:
    start = int(base64.urlsafe_b64decode(cursor).decode()) if cursor else 0
    items = CONSUMERS[start : start + limit]
    following = start + limit
    more = following < len(CONSUMERS)
    return items, base64.urlsafe_b64encode(str(following).encode()).decode() if more else None


def port() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    return int(parser.parse_args().port)


def serve(app: object, port: int) -> None:
    import uvicorn

    uvicorn.run(
        app,  # type: ignore[arg-type]
        host=HOST,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="off",
    )
