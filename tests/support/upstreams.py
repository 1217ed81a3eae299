"""Small real upstream servers for gateway tests, on 127.0.0.1 ephemeral ports.

:class:`Upstream` is a deliberately plain HTTP/1.1 server (one thread per connection, blocking
sockets) so a test controls every byte it sends: keep-alive, chunked and close-delimited bodies,
connections dropped mid-response. What it does depends on the request path:

=============================== ==============================================================
``/health``                     200 while :attr:`Upstream.healthy`, else 503 (not counted)
``/status/{code}``              that status, with a small JSON body
``/slow?head=S&body=S``         waits ``head`` seconds before the head and ``body`` seconds
                                between the two halves of the body
``/bytes/{n}?framing=F``        ``n`` bytes of :func:`pattern` data, generated on the fly;
                                ``F`` is ``length`` (default), ``chunked``, ``close``
                                (an HTTP/1.0 response delimited by closing the connection) or
                                ``coded`` (``Transfer-Encoding: gzip``, until the close)
``/hold``                        answers only once :meth:`Upstream.release_held` is called
``/no-read``                    like ``/hold``, without reading the request body first
``/drop?after=N``               announces 2N+1 bytes, sends N, then closes the connection
``/upload``                     reads the body on the fly; answers ``{"length", "crc32"}``
``/headers?set=Name:%20value``  a 200 with each ``set`` field in the response head
``/garbage``                    a response that is not HTTP
anything else                   echo: method, path, query, headers and body as JSON
=============================== ==============================================================

:attr:`Upstream.mode` makes every request (but ``/health``) misbehave: ``"drop"`` reads the
request and closes without answering, ``"status"`` answers :attr:`Upstream.forced_status`.
Given an ``ssl`` server context, an :class:`Upstream` speaks HTTPS, and records the SNI of each
handshake, the client certificates it was shown and the handshakes it refused.
:class:`WebSocketEcho` is a WebSocket echo server built on the ``websockets`` library.
"""

from __future__ import annotations

import contextlib
import io
import json
import select
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.sync.server import Server, ServerConnection
from websockets.sync.server import serve as ws_serve

Mode = Literal["normal", "drop", "status"]
BLOCK = 64 * 1024
_FILLER = bytes(range(256)) * (BLOCK // 256)


def pattern(size: int) -> Iterator[bytes]:
    """Deterministic, non-periodic test data: each 64 KiB block starts with its index.

    A lost, duplicated or reordered block changes the checksum, unlike a repeated constant.
    """
    index = 0
    left = size
    while left > 0:
        block = index.to_bytes(8, "big") + _FILLER[8:]
        if left < BLOCK:
            block = block[:left]
        yield block
        left -= len(block)
        index += 1


def pattern_crc32(size: int) -> int:
    crc = 0
    for block in pattern(size):
        crc = zlib.crc32(block, crc)
    return crc


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the upstream saw it."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body_length: int

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


class _Closed(Exception):
    """The peer closed the connection, or the server is shutting down."""


class Upstream:
    """A threaded HTTP/1.1 test server; see the module docstring for its paths."""

    def __init__(self, name: str = "upstream", tls: ssl.SSLContext | None = None) -> None:
        """``tls``: a server context of its own (its ``sni_callback`` is set here)."""
        self.name = name
        self.tls = tls
        self.server_names: list[str | None] = []
        """The SNI of each TLS handshake, ``None`` when the client sent none."""
        self.client_subjects: list[str | None] = []
        """The commonName of the client certificate of each accepted handshake, if any."""
        self.refused_handshakes: list[str] = []
        """Why each refused (or failed) TLS handshake failed, as OpenSSL put it."""
        if tls is not None:
            tls.sni_callback = self._sni
        self.healthy = True
        self.mode: Mode = "normal"
        self.forced_status = 503
        self.received: list[Received] = []
        self.health_probes = 0
        self.accepted = 0
        """TCP connections accepted (health probes included)."""
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._released = threading.Event()
        self._connections: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name=f"{name}-accept", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def url_for(self, host: str) -> str:
        """The URL naming this server by ``host`` (``localhost``) instead of its address."""
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def handshakes(self) -> int:
        """TLS handshakes accepted."""
        with self._lock:
            return len(self.client_subjects)

    def _sni(self, _: ssl.SSLObject, name: str | None, __: ssl.SSLContext) -> None:
        with self._lock:
            self.server_names.append(name)

    @property
    def count(self) -> int:
        """Requests received, health probes excluded."""
        with self._lock:
            return len(self.received)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.received]

    def release_held(self) -> None:
        """Let requests to ``/hold`` (waiting now or later) be answered."""
        self._released.set()

    def close(self) -> None:
        self._stopping.set()
        self._released.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    # -- connections ---------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._connections.add(conn)
                self.accepted += 1
            threading.Thread(
                target=self._serve_connection, args=(conn,), name=f"{self.name}-conn", daemon=True
            ).start()

    def _serve_connection(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            secured = self._handshake(conn)
            if secured is None:
                return
            conn = secured
        rfile = cast(io.BufferedReader, conn.makefile("rb", buffering=BLOCK))
        try:
            while not self._stopping.is_set():
                if not self._serve_one(conn, rfile):
                    break
        except (_Closed, OSError):
            pass
        finally:
            with self._lock:
                self._connections.discard(conn)
            with contextlib.suppress(OSError):
                rfile.close()
                conn.close()

    def _handshake(self, conn: socket.socket) -> ssl.SSLSocket | None:
        """The TLS server side of ``conn``; ``None`` (recorded, closed) when it failed."""
        assert self.tls is not None
        conn.settimeout(10)
        try:
            secured = self.tls.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            with self._lock:
                self._connections.discard(conn)
                self.refused_handshakes.append(getattr(exc, "reason", None) or str(exc))
            conn.close()
            return None
        secured.settimeout(None)
        peer = secured.getpeercert()
        subject = None
        if peer:
            for rdn in peer.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        subject = value
        with self._lock:
            # wrap_socket took over the socket: close() must now shut the TLS one down.
            self._connections.discard(conn)
            self._connections.add(secured)
            self.client_subjects.append(subject)
        return secured

    def _serve_one(self, conn: socket.socket, rfile: io.BufferedReader) -> bool:
        """Serve one request; whether the connection may carry another."""
        line = rfile.readline(65536)
        if not line:
            return False
        method, target, version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        headers: list[tuple[str, str]] = []
        while True:
            raw = rfile.readline(65536)
            if not raw:
                raise _Closed()
            if raw in (b"\r\n", b"\n"):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers.append((name.strip(), value.strip()))
        lookup = {k.lower(): v for k, v in headers}
        keep_alive = version == "HTTP/1.1" and lookup.get("connection", "").lower() != "close"
        parts = urlsplit(target)
        path = parts.path
        query = parse_qs(parts.query)

        if path == "/health":
            _read_body(rfile, lookup, None)
            with self._lock:
                self.health_probes += 1
            status = 200 if self.healthy else 503
            _send(conn, status, b'{"healthy": %s}' % (b"true" if self.healthy else b"false"))
            return keep_alive

        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if path == "/upload":
                crc = 0
                length = 0
                for data in _body_chunks(rfile, lookup):
                    crc = zlib.crc32(data, crc)
                    length += len(data)
                self._record(method, target, headers, length)
                _send_json(conn, 200, {"length": length, "crc32": crc})
                return keep_alive

            if path == "/no-read":
                self._record(method, target, headers, 0)
                self._released.wait()
                if not self._stopping.is_set():
                    _send_json(conn, 200, {"upstream": self.name, "held": True})
                return False

            body = _read_body(rfile, lookup, 16 * 1024 * 1024)
            self._record(method, target, headers, len(body))
            if self.mode == "drop":
                return False
            if self.mode == "status":
                _send_json(conn, self.forced_status, {"upstream": self.name})
                return keep_alive
            return self._respond(conn, method, target, path, query, headers, body, keep_alive)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _record(self, method: str, target: str, headers: list[tuple[str, str]], n: int) -> None:
        with self._lock:
            self.received.append(Received(method, target, tuple(headers), n))

    def _respond(
        self,
        conn: socket.socket,
        method: str,
        target: str,
        path: str,
        query: dict[str, list[str]],
        headers: list[tuple[str, str]],
        body: bytes,
        keep_alive: bool,
    ) -> bool:
        head_only = method == "HEAD"
        if path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            if status in (204, 304):
                conn.sendall(f"HTTP/1.1 {status} Status\r\nx-status: {status}\r\n\r\n".encode())
                return keep_alive
            _send_json(conn, status, {"upstream": self.name, "status": status}, head_only)
            return keep_alive
        if path == "/slow":
            self._sleep(float(query.get("head", ["0"])[0]))
            payload = json.dumps({"upstream": self.name, "slow": True}).encode()
            half = len(payload) // 2
            conn.sendall(_head(200, len(payload), "application/json") + payload[:half])
            self._sleep(float(query.get("body", ["0"])[0]))
            conn.sendall(payload[half:])
            return keep_alive
        if path.startswith("/bytes/"):
            size = int(path.rsplit("/", 1)[1])
            framing = query.get("framing", ["length"])[0]
            if framing == "close":
                conn.sendall(b"HTTP/1.0 200 OK\r\ncontent-type: application/octet-stream\r\n\r\n")
                if not head_only:
                    for block in pattern(size):
                        conn.sendall(block)
                return False
            if framing == "coded":
                # A transfer coding other than chunked: the body runs until the connection closes
                # (RFC 9112 §6.3); the bytes are relayed as sent, the coding kept.
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
                    b"transfer-encoding: gzip\r\nconnection: close\r\n\r\n"
                )
                if not head_only:
                    for block in pattern(size):
                        conn.sendall(block)
                return False
            if framing == "chunked":
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
                    b"transfer-encoding: chunked\r\n\r\n"
                )
                if not head_only:
                    for block in pattern(size):
                        conn.sendall(b"%x\r\n%s\r\n" % (len(block), block))
                    conn.sendall(b"0\r\n\r\n")
                return keep_alive
            conn.sendall(_head(200, size, "application/octet-stream"))
            if not head_only:
                for block in pattern(size):
                    conn.sendall(block)
            return keep_alive
        if path == "/hold":
            self._hold(conn)
            _send_json(conn, 200, {"upstream": self.name, "held": True}, head_only)
            return keep_alive
        if path == "/drop":
            after = int(query.get("after", ["100"])[0])
            conn.sendall(_head(200, 2 * after + 1, "application/octet-stream") + b"x" * after)
            return False
        if path == "/garbage":
            conn.sendall(b"SPDY/9 what is this\r\n\r\n")
            return False
        if path == "/headers":
            extra = [tuple(item.split(":", 1)) for item in query.get("set", [])]
            payload = b'{"headers": true}'
            lines = [f"{name}: {value.strip()}\r\n" for name, value in extra]
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + "".join(lines).encode("latin-1")
                + b"content-length: %d\r\n\r\n" % len(payload)
                + (b"" if head_only else payload)
            )
            return keep_alive
        echo: dict[str, Any] = {
            "upstream": self.name,
            "method": method,
            "target": target,
            "path": unquote(path),
            "raw_path": path,
            "query": urlsplit(target).query,
            "headers": headers,
            "body": body.decode("latin-1"),
            "body_length": len(body),
        }
        _send_json(conn, 200, echo, head_only)
        return keep_alive

    def _hold(self, conn: socket.socket) -> None:
        """Wait for :meth:`release_held`; give up if the peer closes the connection meanwhile."""
        while not self._released.wait(0.02):
            if isinstance(conn, ssl.SSLSocket):
                continue  # no peeking into TLS records: wait for the release only
            readable, _, _ = select.select([conn], [], [], 0)
            if readable and conn.recv(1, socket.MSG_PEEK) == b"":
                raise _Closed()
        if self._stopping.is_set():
            raise _Closed()

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self._stopping.wait(seconds):
            raise _Closed()


def _head(status: int, length: int, content_type: str) -> bytes:
    return (
        f"HTTP/1.1 {status} Status\r\ncontent-type: {content_type}\r\n"
        f"content-length: {length}\r\n\r\n"
    ).encode("latin-1")


def _send(conn: socket.socket, status: int, payload: bytes, head_only: bool = False) -> None:
    conn.sendall(_head(status, len(payload), "application/json") + (b"" if head_only else payload))


def _send_json(conn: socket.socket, status: int, data: Any, head_only: bool = False) -> None:
    _send(conn, status, json.dumps(data).encode(), head_only)


def _body_chunks(rfile: io.BufferedReader, headers: dict[str, str]) -> Iterator[bytes]:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = rfile.readline(1024)
            if not size_line:
                raise _Closed()
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while rfile.readline(65536) not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields
                return
            left = size
            while left:
                data = rfile.read(min(left, 1024 * 1024))
                if not data:
                    raise _Closed()
                left -= len(data)
                yield data
            rfile.readline(16)
        return
    left = int(headers.get("content-length", "0") or "0")
    while left:
        data = rfile.read1(min(left, 1024 * 1024))
        if not data:
            raise _Closed()
        left -= len(data)
        yield data


def _read_body(rfile: io.BufferedReader, headers: dict[str, str], limit: int | None) -> bytes:
    out = bytearray()
    for data in _body_chunks(rfile, headers):
        out += data
        if limit is not None and len(out) > limit:
            raise _Closed()
    return bytes(out)


class WebSocketEcho:
    """A WebSocket server that sends every message back; records the request paths."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self._server: Server = ws_serve(self._handle, "127.0.0.1", 0)
        self.port: int = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ws-echo", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _handle(self, connection: ServerConnection) -> None:
        request = connection.request
        if request is not None:
            self.paths.append(request.path)
            self.headers.append({k.lower(): v for k, v in request.headers.raw_items()})
        for message in connection:
            if message == "close please":
                connection.close(code=4000, reason="asked to")
                return
            connection.send(message)

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)


_HELD: list[socket.socket] = []


def refused_url() -> str:
    """The URL of a local port nothing listens on (connections to it are refused).

    The port stays bound, without listening, for the rest of the test session: a port that was
    merely free a moment ago could be taken by another process before the test connects."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _HELD.append(sock)
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


class Blackhole:
    """A port whose accept queue is full, so new connections hang until the caller times out."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._fillers: list[socket.socket] = []
        # Fill the accept queue: later SYNs are dropped and the connect never completes.
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", self.port))
            self._fillers.append(filler)
        time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        for filler in self._fillers:
            filler.close()
        self._listener.close()


def echoed_headers(response: Any) -> list[tuple[str, str]]:
    """The header fields the echo path of :class:`Upstream` received, names lower-cased, from
    an ``httpx`` response that must be a 200."""
    assert response.status_code == 200, response.text
    return [(k.lower(), v) for k, v in response.json()["headers"]]


def echoed_header(response: Any, name: str) -> list[str]:
    """Every value of one field the upstream received."""
    return [v for k, v in echoed_headers(response) if k == name]
