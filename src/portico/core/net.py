"""Networks of client and proxy addresses, as ``gateway.trusted_proxies`` and IP rules list them."""

from __future__ import annotations

import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str) -> Network:
    """A network in CIDR notation, or a single address (a /32 or /128 network); host bits may be
    set (``10.1.2.3/8`` is ``10.0.0.0/8``). :class:`ValueError` for anything else."""
    return ipaddress.ip_network(text, strict=False)
