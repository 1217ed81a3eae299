"""Webhook receivers for the events tests and benchmarks: a real HTTP server (uvicorn, in a thread
of its own) on 127.0.0.1, whose endpoints behave as a test scripts them.

Each path is an endpoint (``/a``, ``/b``...); every request is recorded (id, timestamp, signature
header, body, arrival time) before it is answered as the path's :class:`Behaviour` says: fail the
first N attempts of each message, answer slowly, answer a fixed status with a ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn


@dataclass(frozen=True, slots=True)
class Received:
    path: str
    id: str
    timestamp: str
    signature: str
    body: bytes
    headers: dict[str, str]
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Behaviour:
    fail_first: int = 0
    """Answer 500 to the first N attempts of each message id."""
    delay: float = 0.0
    """Seconds before answering."""
    status: int = 200
    """The status once the failures are over."""
    retry_after: str | None = None
    body: bytes | None = None
    """The response body, instead of ``attempt N``."""
    seen: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.behaviours: dict[str, Behaviour] = defaultdict(Behaviour)
        self.in_flight: dict[str, int] = defaultdict(int)
        self.most_in_flight: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        self.port: int = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            log_level="error",
            access_log=False,
            lifespan="off",
            backlog=2048,
            interface="asgi3",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Receiver:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the webhook receiver did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [item for item in self.received if item.path == path]

    def wait_for(self, count: int, path: str | None = None, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                got = sum(1 for item in self.received if path is None or item.path == path)
            if got >= count:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{got} webhooks received at {path or 'all'}, not {count}")
            time.sleep(0.02)

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope["path"]
        item = Received(
            path,
            headers.get("webhook-id", ""),
            headers.get("webhook-timestamp", ""),
            headers.get("webhook-signature", ""),
            b"".join(chunks),
            headers,
            time.time(),
        )
        behaviour = self.behaviours[path]
        with self._lock:
            self.received.append(item)
            behaviour.seen[item.id] += 1
            attempt = behaviour.seen[item.id]
            self.in_flight[path] += 1
            self.most_in_flight[path] = max(self.most_in_flight[path], self.in_flight[path])
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        with self._lock:
            self.in_flight[path] -= 1
        status = 500 if attempt <= behaviour.fail_first else behaviour.status
        response_headers = [(b"content-type", b"text/plain")]
        if behaviour.retry_after is not None and status >= 400:
            response_headers.append((b"retry-after", behaviour.retry_after.encode()))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        body = behaviour.body if behaviour.body is not None else f"attempt {attempt}".encode()
        await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def running_receiver() -> Iterator[Receiver]:
    receiver = Receiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()
