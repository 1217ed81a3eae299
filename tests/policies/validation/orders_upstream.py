"""A real upstream implementing tests/policies/validation/orders.yaml, on an ephemeral port.

``GET /api/orders`` lists orders, ``POST /api/orders`` answers 201 with what it got, ``GET
/api/orders/{id}`` one order, except order 13, whose answer breaks the document (``qty`` is a
string), and order 500, a 500 the document does not describe: what response reporting must
notice. Anything else is a 404. Every request it got is
kept in :attr:`OrdersUpstream.received` (method, path and query, body)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ORDER = {"sku": "A-1", "qty": 2, "note": None, "tags": ["gift"]}


class OrdersUpstream:
    def __init__(self) -> None:
        self.received: list[tuple[str, str, bytes]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, payload: Any = None) -> None:
                body = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                if payload is not None:
                    self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                upstream.received.append((self.command, self.path, body))
                path = self.path.split("?", 1)[0].rstrip("/")
                if path in ("/api/orders", "/orders"):
                    if self.command in ("GET", "HEAD"):
                        self._answer(200, [ORDER])
                    else:
                        self._answer(201)
                    return
                parts = path.rsplit("/", 1)
                if parts[0] in ("/api/orders", "/orders") and parts[1].isdigit():
                    if self.command == "DELETE":
                        self._answer(204)
                    elif parts[1] == "500":
                        self._answer(500, {"error": "broken"})
                    elif parts[1] == "13":
                        self._answer(200, {**ORDER, "qty": "many"})
                    else:
                        self._answer(200, ORDER)
                    return
                self._answer(404, {"error": "not found"})

            do_GET = do_POST = do_DELETE = do_HEAD = do_PUT = do_PATCH = _serve  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
