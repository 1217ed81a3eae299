"""HTTP constants that both the config and the gateway use."""

from __future__ import annotations

HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
"""The methods a route may name and the gateway relays (RFC 9110 §9 and PATCH, RFC 5789)."""

REALM = "portico"
"""The ``realm`` of every ``WWW-Authenticate`` challenge Portico sends (RFC 9110 §11.5)."""
