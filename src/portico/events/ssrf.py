"""The SSRF guard: where Portico may send a webhook.

Anyone who can register an endpoint chooses a URL that Portico's workers will POST to, from
inside the operator's network. The guard refuses what would turn that into a way in:

* at registration, :meth:`Destinations.check_url`: ``https`` only (``http`` only where the
  operator declared a development mode), a host, no user information, a valid port, and an IP
  literal host checked as an address at once;
* at delivery, for every attempt and after DNS, :meth:`Destinations.check_address` on each
  address the name resolves to: loopback, private (RFC 1918, CGNAT's shared space, IPv6 ULA),
  link-local, multicast, unspecified, reserved and broadcast addresses and the cloud metadata
  services are refused, and so is an IPv6 address that embeds a refused IPv4 address
  (IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64, 6to4). The sender then connects to the
  address it checked, never to a second answer of the resolver (DNS rebinding).

An operator allowlist (``allow_networks``) opens networks the webhooks must reach, e.g. a
receiver on the internal network. A metadata address stays refused even then, unless the
allowlist names that address itself (a /32 or /128 entry): opening 169.254.0.0/16 or
100.64.0.0/10 for some service must not open the credentials of the machine.

:class:`RefusedDestination` carries a stable :attr:`~RefusedDestination.reason`
(:data:`REFUSAL_REASONS`), which the delivery log records as the attempt's error class.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Final, NamedTuple, Protocol
from urllib.parse import SplitResult, urlsplit

from portico.core.errors import PorticoError
from portico.core.net import Network, parse_network

__all__ = [
    "REFUSAL_REASONS",
    "Destination",
    "Destinations",
    "RefusedDestination",
    "Resolver",
    "embedded_ipv4",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

REFUSAL_REASONS: Final = frozenset(
    {
        "invalid-url",
        "scheme-not-allowed",
        "userinfo-not-allowed",
        "bad-port",
        "unresolvable",
        "loopback-address",
        "private-address",
        "link-local-address",
        "metadata-address",
        "multicast-address",
        "unspecified-address",
        "reserved-address",
    }
)
"""What :attr:`RefusedDestination.reason` may be:

* ``invalid-url``: not an absolute URL with a host (or a host that is no valid name);
* ``scheme-not-allowed``: not ``https`` (nor ``http`` where that is allowed);
* ``userinfo-not-allowed``: ``user:password@`` in the URL (credentials belong in no webhook URL,
  and ``https://trusted@evil`` misleads whoever reads it);
* ``bad-port``: a port outside 1-65535;
* ``unresolvable``: the name has no address (at delivery time);
* ``loopback-address``, ``private-address`` (RFC 1918, 100.64.0.0/10, fc00::/7),
  ``link-local-address``, ``metadata-address`` (169.254.169.254 and the other cloud metadata
  services), ``multicast-address``, ``unspecified-address`` (0.0.0.0, ::),
  ``reserved-address`` (broadcast, documentation, benchmarking, reserved, and every other
  address that is not globally reachable).
"""

_METADATA: Final = frozenset(
    ipaddress.ip_address(text)
    for text in (
        "169.254.169.254",  # AWS, Azure, GCP, OpenStack, DigitalOcean... instance metadata
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "fd00:ec2::254",  # AWS instance metadata over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)
_SHARED_SPACE: Final = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598, carrier-grade NAT
_UNIQUE_LOCAL: Final = ipaddress.ip_network("fc00::/7")
_NAT64: Final = (
    ipaddress.ip_network("64:ff9b::/96"),  # RFC 6052 well-known prefix
    ipaddress.ip_network("64:ff9b:1::/48"),  # RFC 8215 local-use prefix
)
_TRANSLATED: Final = ipaddress.ip_network("::ffff:0:0:0/96")  # RFC 2765 IPv4-translated
_COMPATIBLE: Final = ipaddress.ip_network("::/96")  # RFC 4291 IPv4-compatible (deprecated)
# A host as a URL may write it: a name of letters, digits, '-', '_' and dots (IDNs arrive
# already in their A-label form, xn--), or an IP literal (IPv6 in brackets).
_HOST_NAME = re.compile(
    r"(?=.{1,253}\.?\Z)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?"
)
# What inet_aton would take as an IPv4 address in a shorter or numeric spelling (127.1,
# 2130706433, 0x7f.0.0.1, 0177.0.0.1): the resolver would turn it into an address, but such a
# URL is written to hide one.
_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}\.?", re.I)


_DEFAULT_PORTS: Final = {"https": 443, "http": 80}
_PARSED_URLS: Final = 4096


class Destination(NamedTuple):
    """A webhook URL as :meth:`Destinations.destination` parsed and accepted it."""

    scheme: str
    """``https`` or ``http``, lower-case."""
    host: str
    """A name, or an IP address without brackets."""
    port: int
    target: str
    """The path and query, as sent in the request line (``/`` when the URL has no path)."""


class RefusedDestination(PorticoError):
    """A webhook destination the SSRF guard refuses; :attr:`reason` is one of
    :data:`REFUSAL_REASONS`, the message says which URL part or address and why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Resolver(Protocol):
    """Turns a host name into the addresses the sender may connect to (checked before use)."""

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses of ``host`` as text, in the order to try them; an empty list, or
        ``OSError`` (``socket.gaierror``), when it has none."""
        ...


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and leads to, if any: IPv4-mapped
    (``::ffff:a.b.c.d``), IPv4-translated (``::ffff:0:a.b.c.d``), IPv4-compatible
    (``::a.b.c.d``), NAT64 (``64:ff9b::a.b.c.d``, ``64:ff9b:1::/48``) and 6to4
    (``2002:AABB:CCDD::``)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    value = int(address)
    if address in _TRANSLATED or any(address in prefix for prefix in _NAT64):
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if address in _COMPATIBLE and value > 1:  # :: and ::1 are themselves, not IPv4
        return ipaddress.IPv4Address(value)
    return None


def _refusal(address: Address) -> tuple[str, str] | None:
    """Why ``address`` (judged as itself) may not be a destination, or ``None``."""
    if address in _METADATA:
        return "metadata-address", "a cloud metadata service"
    if address.is_unspecified:
        return "unspecified-address", "the unspecified address"
    if address.is_loopback:
        return "loopback-address", "a loopback address"
    if address.is_link_local:
        return "link-local-address", "a link-local address"
    if address.is_multicast:
        return "multicast-address", "a multicast address"
    if address in _SHARED_SPACE:
        return "private-address", "a shared (carrier-grade NAT) address"
    if address in _UNIQUE_LOCAL or any(address in network for network in _RFC1918):
        return "private-address", "a private address"
    if not address.is_global:
        return "reserved-address", "a reserved, broadcast or special-purpose address"
    return None


_RFC1918: Final = tuple(
    ipaddress.ip_network(text) for text in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)


class Destinations:
    """The rules for webhook destinations of one deployment: whether plain ``http`` is allowed
    (a declared development mode), and the networks the operator opens."""

    __slots__ = ("_allowed", "_parsed", "allow_http")

    def __init__(self, allow_http: bool = False, allow_networks: Sequence[str] = ()) -> None:
        """``allow_networks``: CIDR networks (or single addresses) that webhooks may reach even
        though they are not public; ``ValueError`` naming an entry that is not one."""
        if isinstance(allow_networks, str):
            raise TypeError("allow_networks is a sequence of networks, not one string")
        allowed: list[Network] = []
        for entry in allow_networks:
            try:
                allowed.append(parse_network(entry))
            except ValueError:
                raise ValueError(f"not a network in CIDR notation: {entry!r}") from None
        self.allow_http = allow_http
        self._allowed = tuple(allowed)
        # The URLs accepted so far: a delivery reads the same few endpoints' URLs again and again.
        self._parsed: dict[str, Destination] = {}

    def check_url(self, url: str) -> None:
        """Refuse (:class:`RefusedDestination`) a URL that may never be a webhook destination,
        whatever its name resolves to: at registration, so that the owner hears of it at once.
        The addresses are checked again at every delivery (:meth:`check_address`)."""
        self.destination(url)

    def destination(self, url: str) -> Destination:
        """The parts of a URL :meth:`check_url` accepts, as the sender uses them: the URL is
        parsed once, here, so that what is checked is what is connected to."""
        known = self._parsed.get(url)
        if known is not None:
            return known
        found = self._parse(url)
        if len(self._parsed) >= _PARSED_URLS:
            self._parsed.clear()
        self._parsed[url] = found
        return found

    def _parse(self, url: str) -> Destination:
        if not url.isascii() or any(char <= " " or char == "\x7f" for char in url):
            raise RefusedDestination(
                "invalid-url",
                "a webhook URL is ASCII without spaces or control characters "
                "(percent-encode the path; an internationalized name in its xn-- form)",
            )
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            if "port" in str(exc).lower():
                raise RefusedDestination("bad-port", "a webhook URL's port is 1 to 65535") from None
            raise RefusedDestination("invalid-url", "the URL's host is not valid") from None
        scheme = parts.scheme.lower()
        allowed = ("https", "http") if self.allow_http else ("https",)
        if scheme not in allowed:
            hint = "" if self.allow_http else " (http only in a declared development mode)"
            raise RefusedDestination(
                "scheme-not-allowed",
                f"a webhook URL must use {' or '.join(allowed)}, not {scheme or 'no scheme'!r}"
                + hint,
            )
        if "@" in parts.netloc:
            raise RefusedDestination(
                "userinfo-not-allowed", "a webhook URL may not hold a user name or password"
            )
        if (port is not None and not 1 <= port <= 65535) or parts.netloc.endswith(":"):
            raise RefusedDestination("bad-port", "a webhook URL's port is 1 to 65535")
        host = _host_of(parts)
        if host is None:
            raise RefusedDestination("invalid-url", "a webhook URL needs a host name or address")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        found = Destination(scheme, host, port or _DEFAULT_PORTS[scheme], target)
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            if _NUMERIC_HOST.fullmatch(host):
                raise RefusedDestination(
                    "invalid-url", "an IPv4 address is written as four decimal numbers"
                ) from None
            if not _HOST_NAME.fullmatch(host):
                raise RefusedDestination(
                    "invalid-url", "the URL's host is not a valid name"
                ) from None
            return found
        self.check_address(str(literal))
        return found

    def check_address(self, ip: str) -> None:
        """Refuse (:class:`RefusedDestination`) an address a webhook may not be sent to, unless an
        ``allow_networks`` entry holds it; called on every address, after DNS, at every attempt.
        An IPv6 address that carries an IPv4 address is judged as that IPv4 address too."""
        try:
            address = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            raise RefusedDestination("unresolvable", "the resolver gave no valid address") from None
        judged: Address = address
        if isinstance(address, ipaddress.IPv6Address):
            # The packets reach the IPv4 address it carries: that is the one to judge.
            judged = embedded_ipv4(address) or address
        refused = _refusal(judged)
        if refused is None:
            return
        reason, what = refused
        exact = reason == "metadata-address"
        if self._allows(judged, exact=exact) or self._allows(address, exact=exact):
            return
        shown = str(address) if judged is address else f"{address} (IPv4 {judged})"
        raise RefusedDestination(reason, f"{shown} is {what}: webhooks may not go there")

    def _allows(self, address: Address, *, exact: bool) -> bool:
        for network in self._allowed:
            if network.version != address.version or address not in network:
                continue
            if not exact or network.num_addresses == 1:
                return True
        return False


def _host_of(parts: SplitResult) -> str | None:
    """The host of the URL without brackets, or ``None`` when there is none."""
    netloc = parts.netloc.rpartition("@")[2]
    if netloc.startswith("["):
        inside, bracket, _ = netloc[1:].partition("]")
        return inside if bracket and inside else None
    host = netloc.rpartition(":")[0] if ":" in netloc else netloc
    return host or None
