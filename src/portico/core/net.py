"""Networks of client and proxy addresses, as ``gateway.trusted_proxies`` and IP rules list them."""

from __future__ import annotations

import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str) -> Network:
    """A network in CIDR notation, or a single address (a /32 or /128 network); host bits may be
    set (``10.1.2.3/8`` is ``10.0.0.0/8``). :class:`ValueError` for anything else."""
    return ipaddress.ip_network(text, strict=False)


def host_port(host: str, port: int) -> str:
    """``host:port`` as a URL writes it (RFC 3986 §3.2.2): an IPv6 address in brackets, so that
    ``http://[::1]:8080`` is printed rather than ``http://::1:8080``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
