"""Every admin API exchange has a request id: the client's ``X-Request-ID`` when it is
well-formed (the gateway's rule, :data:`~portico.core.http.REQUEST_ID_PATTERN`), else a new one.
It is answered in ``X-Request-ID``, put in every problem document and audit entry, and logged.

A pure ASGI middleware (as Starlette's own), so that it wraps every answer, the framework's
errors included.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portico.core.http import REQUEST_ID_PATTERN
from portico.gateway.http import new_id

__all__ = ["HEADER", "RequestIds", "request_id_of"]

HEADER = "x-request-id"
_STATE_KEY = "portico_request_id"


def request_id_of(request: Request) -> str:
    """The request id of ``request`` (one is made if the middleware did not run)."""
    found = request.scope.setdefault("state", {}).get(_STATE_KEY)
    if isinstance(found, str):
        return found
    made = new_id()
    request.scope["state"][_STATE_KEY] = made
    return made


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = [value for name, value in scope["headers"] if name == HEADER.encode()]
        text = given[0].decode("latin-1") if len(given) == 1 else ""
        request_id = text if REQUEST_ID_PATTERN.match(text) else new_id()
        scope.setdefault("state", {})[_STATE_KEY] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if HEADER not in headers:
                    headers[HEADER] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)
