"""The admin API reads request bodies of at most :data:`MAX_BODY` bytes: its bodies are a few
fields, and FastAPI reads a body before any dependency (the token check) runs, so without a limit
anyone who reaches the port could make it hold a large one. Refused with 413 by
``Content-Length``, or while a chunked body streams."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portico.admin.problems import AdminProblem, problem_response
from portico.admin.request_ids import request_id_of
from portico.gateway import problems

__all__ = ["MAX_BODY", "BodyLimit"]

MAX_BODY = 64 * 1024


class BodyLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > MAX_BODY):
                # Answered here: outside the application, its error handlers do not run.
                refusal = _too_large()
                response = problem_response(
                    refusal.kind, request_id_of(Request(scope)), refusal.detail
                )
                await response(scope, receive, send)
                return
        seen = 0

        # Raised inside the application (while it reads the body): its handlers answer it.
        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > MAX_BODY:
                    raise _too_large()
            return message

        await self.app(scope, limited, send)


def _too_large() -> AdminProblem:
    return AdminProblem(
        problems.REQUEST_TOO_LARGE, f"the admin API takes bodies of at most {MAX_BODY} bytes"
    )
