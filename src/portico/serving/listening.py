"""Opening a listener, and the one line that says why it could not be opened."""

from __future__ import annotations

import errno
import socket
from collections.abc import Awaitable, Callable

from portico.config.model import Listen
from portico.core.errors import PorticoError
from portico.core.net import host_port

__all__ = ["CannotListen", "listening"]


class CannotListen(PorticoError):
    """A listener could not be opened on its address."""

    def __init__(self, setting: str, host: str, port: int, error: OSError) -> None:
        self.setting = setting
        self.address = host_port(host, port)
        self.error = error
        super().__init__(f"cannot listen on {self.address} ({setting}): {_why_not(host, error)}")


def _why_not(host: str, error: OSError) -> str:
    """The likely cause of a failed bind and what to do about it."""
    elsewhere = "choose another address in the config or with `portico serve --listen HOST:PORT`"
    if isinstance(error, socket.gaierror):
        return f"the host name {host!r} does not resolve; use an IP address, or {elsewhere}"
    if error.errno == errno.EADDRINUSE:
        return (
            "the address is already in use, by another program or another Portico; stop it "
            f"(`ss -ltnp` names it), or {elsewhere}"
        )
    if error.errno == errno.EACCES:
        return (
            "permission denied: ports below 1024 need privileges; use a port from 1024 up "
            "behind a load balancer, or grant CAP_NET_BIND_SERVICE"
        )
    if error.errno == errno.EADDRNOTAVAIL:
        return (
            f"{host} is not an address of this machine; use 127.0.0.1, 0.0.0.0 (every "
            f"interface) or one of its addresses, or {elsewhere}"
        )
    return f"{error.strerror or error}; {elsewhere}"


async def listening(setting: str, listen: Listen, start: Callable[[], Awaitable[None]]) -> None:
    """Run ``start``; an OS error is :class:`CannotListen`, naming ``setting``."""
    try:
        await start()
    except OSError as exc:
        raise CannotListen(setting, listen.host, listen.port, exc) from exc
