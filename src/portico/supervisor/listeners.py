"""The listening sockets of ``serve --workers``, bound once by the supervisor.

Every gateway process inherits the same socket, so they share one accept queue: an idle
process takes the next connection, a process that dies loses only the connections it had
accepted, and the port is bound once (port 0 gives every process the same free port, and a port
in use is one error before anything starts). docs/workers.md says why this and not
``SO_REUSEPORT``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from portico.config.model import Listen, PorticoConfig
from portico.serving import CannotListen

__all__ = ["BACKLOG", "Listeners", "bind", "bind_all"]

BACKLOG = 2048
"""As the single-process gateway's: connections the kernel queues before a process accepts."""


@dataclass(frozen=True, slots=True)
class Listeners:
    plain: socket.socket
    tls: socket.socket | None

    def close(self) -> None:
        self.plain.close()
        if self.tls is not None:
            self.tls.close()


def bind_all(config: PorticoConfig) -> Listeners:
    """``gateway.listen`` and ``gateway.tls.listen``; :class:`CannotListen` names the one that
    failed."""
    plain = bind("gateway.listen", config.gateway.listen)
    tls = config.gateway.tls
    try:
        secure = None if tls is None else bind("gateway.tls.listen", tls.listen)
    except CannotListen:
        plain.close()
        raise
    return Listeners(plain, secure)


def bind(setting: str, listen: Listen) -> socket.socket:
    """A listening TCP socket on the first address ``listen.host`` resolves to, set up as
    asyncio's ``create_server`` sets up its own (address reuse; IPv6 only on an IPv6 socket)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            listen.host or None, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        raise CannotListen(setting, listen.host, listen.port, exc) from exc
    return sock
