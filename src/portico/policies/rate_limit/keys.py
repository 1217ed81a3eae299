"""What one counter is kept for: the key values of a request (consumer, tenant, route, service,
client address, a header), as one string.

Each part is tagged (``c=``, ``t=``, ``r=``, ``s=``, ``ip=``, ``h=``) so that values of different
kinds never meet in one key (a header whose value is a consumer's name is not that consumer). A
value the request lacks (no consumer before authentication, a missing header) is replaced by the
client address: an anonymous caller is then limited as an address is, never left unlimited nor
pooled with every other anonymous caller. The client address is ``exchange.client_ip``, which
the gateway resolved through ``gateway.trusted_proxies`` only: an ``X-Forwarded-For`` from any
other peer is not believed. IPv6 clients are counted by prefix (a /64 by default), since one
host may use any address of its /64, and an IPv4-mapped address counts as the IPv4 one.
"""

from __future__ import annotations

import hashlib
import ipaddress

from portico.gateway.exchange import Exchange

__all__ = ["KeyMaker", "client_key"]

_LONGEST = 128
"""Longer values (headers) are replaced by a digest: a key's size stays bounded."""


def client_key(ip: str, ipv6_prefix: int) -> str:
    """The address a counter is kept for: IPv4 as it is, IPv6 by its prefix."""
    if ":" not in ip:
        return ip
    try:
        address = ipaddress.IPv6Address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    mapped = address.ipv4_mapped
    if mapped is not None:
        return str(mapped)
    network = int(address) >> (128 - ipv6_prefix) << (128 - ipv6_prefix)
    return f"{ipaddress.IPv6Address(network)}/{ipv6_prefix}"


def _escape(value: str) -> str:
    if len(value) > _LONGEST:
        digest = hashlib.blake2b(value.encode("latin-1", "replace"), digest_size=16)
        return "#" + digest.hexdigest()
    if "|" in value or "%" in value:
        return value.replace("%", "%25").replace("|", "%7C")
    return value


MEMO_SIZE = 4096
"""Keys of single-part limits kept per value (a consumer's, an address's); past it, the memo
starts again (the values are the clients')."""


class KeyMaker:
    """The counter keys of one limit: its counter prefix, then its key values in the order its
    ``by`` lists them."""

    __slots__ = (
        "_fixed",
        "_headers",
        "_kinds",
        "_memo",
        "_prefix",
        "_route",
        "_service",
        "ipv6_prefix",
    )

    def __init__(
        self, parts: tuple[str, ...], route: str, service: str, ipv6_prefix: int, prefix: str = ""
    ) -> None:
        self._kinds = tuple(p if not p.startswith("header:") else "header" for p in parts)
        self._headers = tuple(p[len("header:") :] if p.startswith("header:") else "" for p in parts)
        self._route = "r=" + _escape(route)
        self._service = "s=" + _escape(service)
        self._prefix = prefix
        self.ipv6_prefix = ipv6_prefix
        self._fixed = ""
        """The key of a limit by route or service alone: the same for every request."""
        if len(parts) == 1 and parts[0] in ("route", "service"):
            self._fixed = prefix + (self._route if parts[0] == "route" else self._service)
        self._memo: dict[str, str] = {}
        """Value -> key, for a limit by consumer or tenant alone (a request without one is
        counted by its address, which is not kept here)."""

    def key(self, exchange: Exchange) -> str:
        """The counter key of ``exchange`` for this limit."""
        if self._fixed:
            return self._fixed
        kinds = self._kinds
        if len(kinds) == 1:  # the common case: one part, no joining
            kind = kinds[0]
            identity = exchange.identity
            if identity is not None and (kind == "consumer" or kind == "tenant"):
                value = identity.consumer if kind == "consumer" else identity.tenant
                if value:
                    # The identity is shared by the requests of a credential: its value's hash
                    # is computed once, and the key is not built again.
                    memo = self._memo
                    known = memo.get(value)
                    if known is None:
                        if len(memo) >= MEMO_SIZE:
                            memo.clear()
                        known = memo[value] = self._prefix + self._part(exchange, kind, "")
                    return known
            return self._prefix + self._part(exchange, kind, self._headers[0])
        return self._prefix + "|".join(
            [self._part(exchange, kinds[i], self._headers[i]) for i in range(len(kinds))]
        )

    def _part(self, exchange: Exchange, kind: str, header: str) -> str:
        if kind == "route":
            return self._route
        if kind == "service":
            return self._service
        value: str | None = None
        tag = ""
        identity = exchange.identity
        if kind == "consumer":
            value = identity.consumer if identity is not None else None
            tag = "c="
        elif kind == "tenant":
            value = identity.tenant if identity is not None else None
            tag = "t="
        elif kind == "header":
            found = exchange.headers.get_all(header)
            # Every field of that name, as one value (RFC 9110 §5.3): a client that repeats
            # the header gets a key of its own, not the first value's.
            value = ",".join([v.strip() for v in found]) if found else None
            tag = "h="
        if value:
            return tag + _escape(value)
        return "ip=" + client_key(exchange.client_ip, self.ipv6_prefix)
