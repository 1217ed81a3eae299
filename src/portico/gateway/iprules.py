"""Allow and deny lists of client addresses (CIDR, IPv4 and IPv6).

Deny wins over allow; an empty allow list allows every address not denied. The client address is
the one resolved through ``gateway.trusted_proxies``, so a client cannot choose it by sending
``X-Forwarded-For`` unless it comes through a trusted proxy.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from portico.config.model import IPRules
from portico.core.net import Network, parse_network


@dataclass(frozen=True, slots=True)
class CompiledIPRules:
    allow: tuple[Network, ...]
    deny: tuple[Network, ...]

    @classmethod
    def compile(cls, rules: IPRules) -> CompiledIPRules | None:
        if not rules.allow and not rules.deny:
            return None
        return cls(
            tuple(parse_network(c) for c in rules.allow),
            tuple(parse_network(c) for c in rules.deny),
        )

    def permits(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in net for net in self.deny):
            return False
        return not self.allow or any(address in net for net in self.allow)
