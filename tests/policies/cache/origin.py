"""An upstream whose responses a test shapes from the query, and which counts what reaches it.

``GET /any/path?h=Cache-Control:max-age%3D60&h=Vary:Accept-Language&status=404&size=10``
answers ``status`` with the ``h`` fields and a JSON body: ``n`` (how many requests this server
had), the method, target, the identity and origin fields it received, and ``size`` bytes of
padding. HEAD gets the same head without the body.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["Origin"]


class Origin:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                self._answer(body=True)

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                self.rfile.read(length)
                self._answer(body=True)

            def do_PUT(self) -> None:
                self.do_POST()

            def do_PATCH(self) -> None:
                self.do_POST()

            def do_DELETE(self) -> None:
                self.do_POST()

            def do_PURGE(self) -> None:  # a method Portico does not know
                self.do_POST()

            def _answer(self, body: bool) -> None:
                fields = {k.lower(): v for k, v in self.headers.items()}
                with origin._lock:
                    origin.requests.append((self.command, self.path, fields))
                    n = len(origin.requests)
                query = parse_qs(urlsplit(self.path).query)
                status = int(query.get("status", ["200"])[0])
                payload: dict[str, Any] = {
                    "n": n,
                    "method": self.command,
                    "target": self.path,
                    "consumer": fields.get("x-portico-consumer"),
                    "host": fields.get("host"),
                    "x_forwarded_host": fields.get("x-forwarded-host"),
                    "language": fields.get("accept-language"),
                    "padding": "x" * int(query.get("size", ["0"])[0]),
                }
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for item in query.get("h", []):
                    name, _, value = item.partition(":")
                    self.send_header(name, value)
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
