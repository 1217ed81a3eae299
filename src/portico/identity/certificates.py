"""X.509 names as people write them in ``portico.yaml``: RFC 4514 distinguished names.

Shared by identity's config checks (a consumer's ``certificates`` entries) and the ``mtls``
method (which compares a client certificate's subject with them).
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

__all__ = ["distinguished_name"]

# Attribute types OpenSSL prints that cryptography's RFC 4514 parser does not know by name.
_ATTRIBUTE_TYPES = {
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
}


def distinguished_name(text: str) -> x509.Name:
    """Parse an RFC 4514 distinguished name, leniently as people write them: attribute types in
    any case (``cn=billing``) and spaces around ``,``, ``+`` and ``=`` (``CN = billing, O = Acme``).
    ``ValueError`` if it is not a valid name."""
    parts: list[str] = []
    token: list[str] = []
    in_type = True
    i = 0
    while i < len(text):
        char = text[i]
        if in_type:
            if char == "=":
                parts.append("".join(token).strip().upper() + "=")
                token, in_type = [], False
            else:
                token.append(char)
        elif char == "\\":
            token.append(text[i : i + 2])  # an escape, kept whole so its space is never trimmed
            i += 1
        elif char in ",+":
            parts.append(_trim(token) + char)
            token, in_type = [], True
        else:
            token.append(char)
        i += 1
    if in_type:
        raise ValueError("expected TYPE=value pairs separated by commas")
    parts.append(_trim(token))
    return x509.Name.from_rfc4514_string("".join(parts), _ATTRIBUTE_TYPES)


def _trim(token: list[str]) -> str:
    # Unescaped spaces around a value are separators' padding; escaped ones ("\ ") are data.
    start, end = 0, len(token)
    while start < end and token[start] == " ":
        start += 1
    while end > start and token[end - 1] == " ":
        end -= 1
    return "".join(token[start:end])
