"""The demo's webhook receiver: a sample backend that receives the webhooks Portico sends.

It does what a receiver should (docs/receiving-webhooks.md): it verifies the Standard Webhooks
signature over the raw body, refusing a message whose signature, timestamp or fields are wrong
with 401, and answers a verified one at once with 200. It keeps the last :data:`KEPT` messages it
received, verified or refused, and shows them at ``GET /received`` (newest first), each with its
three ``webhook-*`` fields and its body exactly as received, so that a reader can verify one again
with a library of their own.

``POST /webhooks/{anything}`` is where endpoints point (``/webhooks/shop`` in the demo). The
secrets it verifies with are read when a message comes (``secrets()``): the demo's
``keys/webhook-secret.txt`` is made after the receiver starts, and a new one after a fresh start.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from portico.demo.backends import (
    App,
    Request,
    Response,
    health,
    json_response,
    method_not_allowed,
    problem,
)
from portico.events.signing import (
    ID_FIELD,
    SIGNATURE_FIELD,
    TIMESTAMP_FIELD,
    InvalidSecret,
    SignatureRejected,
    Verifier,
)

__all__ = ["KEPT", "Inbox", "receiver_app"]

KEPT = 50
"""Messages kept for ``GET /received``; older ones are forgotten."""
_FIELDS = (ID_FIELD, TIMESTAMP_FIELD, SIGNATURE_FIELD)


@dataclass(slots=True)
class Inbox:
    """What the receiver got: the last :data:`KEPT` messages, newest first."""

    secrets: Callable[[], Sequence[str]]
    messages: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=KEPT))
    received: int = 0

    def take(self, request: Request, now: float) -> Response:
        self.received += 1
        body = request.body
        entry: dict[str, Any] = {
            "path": request.path,
            "received_at": now,
            "headers": {name: request.headers.get(name) for name in _FIELDS},
            "body": body.decode("utf-8", "replace"),
        }
        try:
            Verifier(list(self.secrets())).verify(request.fields, body, now)
        except SignatureRejected as rejected:
            entry.update(verified=False, rejected=rejected.reason)
            self.messages.appendleft(entry)
            return problem(401, f"the webhook signature was refused: {rejected.reason}")
        except InvalidSecret:
            entry.update(verified=False, rejected="no-secret")
            self.messages.appendleft(entry)
            return problem(503, "the receiver has no webhook secret yet")
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        kind = payload.get("type") if isinstance(payload, dict) else None
        entry.update(verified=True, type=kind)
        self.messages.appendleft(entry)
        # Verified and kept: answer at once; a real receiver queues its work for after.
        return json_response(200, {"received": request.headers.get(ID_FIELD)})

    def listing(self) -> dict[str, Any]:
        return {"items": list(self.messages), "count": len(self.messages)}


def receiver_app(name: str, inbox: Inbox) -> App:
    """``POST /webhooks/{name}``, ``GET /received`` and ``GET /health``."""

    def app(request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        if path == "/health":
            return health(name, request)
        if path == "/received":
            if request.method not in ("GET", "HEAD"):
                return method_not_allowed("GET, HEAD")
            return json_response(200, inbox.listing())
        if path.startswith("/webhooks/") and len(path) > len("/webhooks/"):
            if request.method != "POST":
                return method_not_allowed("POST")
            return inbox.take(request, time.time())
        return problem(404, f"{name} has no resource at {request.path}")

    return app
