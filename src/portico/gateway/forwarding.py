"""The header fields a proxy must remove, add or rewrite on the way upstream.

- Hop-by-hop fields (RFC 9110 §7.6.1) are removed. (The fields the client's ``Connection`` names
  were removed before the policies ran, so none that a policy sets can be removed that way.)
- ``X-Forwarded-For/Proto/Host`` and ``Forwarded`` (RFC 7239) are set. Incoming ones are kept only
  when the TCP peer is a trusted proxy; otherwise a client could forge its address.
- ``X-Portico-*`` fields are Portico's own (trusted identity); a client's are always dropped.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from portico.core.net import Network

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
        "host",  # set per target
    }
)
FORWARDING = frozenset(
    {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "forwarded"}
)
IDENTITY_PREFIX = "x-portico-"


def is_trusted(ip: str, networks: Sequence[Network]) -> bool:
    if not networks:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in net for net in networks)


def client_ip_from_chain(
    peer_ip: str, forwarded_for: str | None, networks: Sequence[Network]
) -> str:
    """The first address from the right of X-Forwarded-For that is not a trusted proxy."""
    if not forwarded_for:
        return peer_ip
    chain = [part.strip() for part in forwarded_for.split(",") if part.strip()]
    for candidate in reversed(chain):
        if not is_trusted(candidate, networks):
            try:
                return str(ipaddress.ip_address(candidate))
            except ValueError:
                return peer_ip
    return chain[0] if chain else peer_ip


def connection_tokens(value: str | None) -> frozenset[str]:
    if not value:
        return frozenset()
    return frozenset(t.strip().lower() for t in value.split(",") if t.strip())


def _forwarded_node(ip: str) -> str:
    return f'"[{ip}]"' if ":" in ip else ip


def upstream_headers(
    items: list[tuple[str, str]],
    *,
    peer_ip: str,
    peer_trusted: bool,
    scheme: str,
    host_header: str,
    upgrade: str | None,
    replaced: frozenset[str] = frozenset(),
) -> list[tuple[str, str]]:
    """The client's fields as they go upstream (without Host, which depends on the target).

    ``replaced`` names fields the gateway sets itself (the request id, ``traceparent``): the
    client's are left out so the upstream gets exactly one.
    """
    out: list[tuple[str, str]] = []
    xff: str | None = None
    xfp: str | None = None
    xfh: str | None = None
    forwarded: str | None = None
    for name, value in items:
        if name in HOP_BY_HOP:
            continue
        if name in FORWARDING:
            if peer_trusted:
                if name == "x-forwarded-for":
                    xff = f"{xff}, {value}" if xff else value
                elif name == "x-forwarded-proto":
                    xfp = value
                elif name == "x-forwarded-host":
                    xfh = value
                elif name == "forwarded":
                    forwarded = f"{forwarded}, {value}" if forwarded else value
            continue
        if name in replaced:
            continue
        out.append((name, value))
    out.append(("x-forwarded-for", f"{xff}, {peer_ip}" if xff else peer_ip))
    out.append(("x-forwarded-proto", xfp or scheme))
    out.append(("x-forwarded-host", xfh or host_header))
    node = f'for={_forwarded_node(peer_ip)};host="{host_header}";proto={scheme}'
    out.append(("forwarded", f"{forwarded}, {node}" if forwarded else node))
    if upgrade is not None:
        out.append(("connection", "upgrade"))
        out.append(("upgrade", upgrade))
    return out


def client_location(
    location: str, *, target_origin: str, base_path: str, prefix: str, client_origin: str
) -> str | None:
    """A ``Location`` the upstream sent, as the client must follow it through the gateway, or
    ``None`` to relay it as it is (as nginx's ``proxy_redirect default`` does, and more).

    An absolute URL on the target's own origin gets the client's origin instead; that URL and a
    path-absolute reference (``/orders/42``) get the path mapped back: the target's base path
    removed, the route's ``strip_prefix`` put back. Anything else (another host, a relative
    reference, a path outside the target's base path) is left alone.
    """
    if location.startswith("/") and not location.startswith("//"):
        rest, origin = location, ""
    elif location[: len(target_origin)].lower() == target_origin:
        rest, origin = location[len(target_origin) :], client_origin
        if rest and rest[0] not in "/?#":
            return None  # another port that merely starts with the same digits
        if not rest.startswith("/"):
            rest = "/" + rest
    else:
        return None
    if base_path:
        after = rest[len(base_path) :]
        if not rest.startswith(base_path) or (after and after[0] not in "/?#"):
            return None
        rest = after if after.startswith("/") else "/" + after
    return origin + prefix + rest


def client_locations(
    fields: list[tuple[bytes, bytes]],
    *,
    target_origin: str,
    base_path: str,
    prefix: str,
    client_origin: str,
) -> list[tuple[bytes, bytes]]:
    """A response's fields with each ``Location`` as the client must follow it
    (:func:`client_location`)."""
    out: list[tuple[bytes, bytes]] = []
    for name, value in fields:
        if name == b"location":
            mapped = client_location(
                value.decode("latin-1"),
                target_origin=target_origin,
                base_path=base_path,
                prefix=prefix,
                client_origin=client_origin,
            )
            if mapped is not None:
                value = mapped.encode("latin-1")
        out.append((name, value))
    return out
