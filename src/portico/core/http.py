"""HTTP constants that both the config and the gateway use."""

from __future__ import annotations

import re

HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
"""The methods a route may name and the gateway relays (RFC 9110 §9 and PATCH, RFC 5789)."""

REALM = "portico"
"""The ``realm`` of every ``WWW-Authenticate`` challenge Portico sends (RFC 9110 §11.5)."""

REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,200}$")
"""A request id a client may send (``X-Request-ID``) and Portico keeps: anything else is
replaced by a generated one, so that a log line or a problem document never carries a client's
control characters or an unbounded value."""
