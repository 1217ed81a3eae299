"""Verifying the signatures of webhooks Portico receives from third parties.

Two families cover the senders met in practice:

* Standard Webhooks (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``): the
  :class:`~portico.events.signing.Verifier` of :mod:`portico.events.signing`;
* an HMAC of the body (and often a timestamp) in a header of the sender's own:
  :class:`HmacScheme`, configured by header name, hash (sha1, sha256, sha512), encoding (hex or
  base64), a prefix (``sha256=``) and the signed content's template (``{body}``,
  ``{timestamp}.{body}``...). The timestamp comes from a header of its own, or, with the
  signatures, from ``key=value`` parts of one header (Stripe's
  ``Stripe-Signature: t=…,v1=…,v1=…``). Presets: :meth:`HmacScheme.github`,
  :meth:`HmacScheme.stripe`.

Both answer :class:`InboundScheme`'s ``verify(headers, body, now)`` and raise
:class:`~portico.events.signing.SignatureRejected` with one of its reasons. Comparisons are in
constant time; the body is the raw bytes received, never re-serialized JSON.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from typing import Final, Literal, Protocol

from portico.events.signing import (
    DEFAULT_TOLERANCE,
    MAX_SIGNATURES,
    Headers,
    SignatureRejected,
    Verifier,
    check_timestamp,
    fields,
)

__all__ = ["HmacScheme", "InboundScheme", "SignatureRejected", "Verifier"]

Algorithm = Literal["sha1", "sha256", "sha512"]
Encoding = Literal["hex", "base64"]

_DIGESTS: Final = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}
_HEX: Final = re.compile(r"[0-9A-Fa-f]+")
_BASE64: Final = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_PLACEHOLDER: Final = re.compile(r"\{([a-z]*)\}")


class InboundScheme(Protocol):
    """How an inbound webhook's signature is checked: return, or raise
    :class:`~portico.events.signing.SignatureRejected`."""

    def verify(self, headers: Headers, body: bytes, now: float) -> None: ...


class HmacScheme:
    """An HMAC signature of the sender's own design.

    ``header``: the field holding the signature(s), any case. ``prefix``: what precedes each
    signature (``sha256=``); a signature without it is not one. ``template``: the signed content,
    ``{body}`` exactly once and ``{timestamp}`` at most once, the rest literal. The timestamp is
    read from ``timestamp_header``, or, when ``signature_key`` is set, the header is a list of
    ``key=value`` parts separated by commas: the signatures are the values of ``signature_key``
    (any number) and the timestamp that of ``timestamp_key``. A scheme with a timestamp refuses
    one more than ``tolerance`` seconds from the receiver's clock.
    """

    __slots__ = (
        "_after",
        "_before",
        "_hmac",
        "encoding",
        "header",
        "prefix",
        "signature_key",
        "timestamp_header",
        "timestamp_key",
        "tolerance",
    )

    def __init__(
        self,
        secret: str | bytes,
        *,
        header: str,
        algorithm: Algorithm = "sha256",
        encoding: Encoding = "hex",
        prefix: str = "",
        template: str = "{body}",
        timestamp_header: str | None = None,
        signature_key: str | None = None,
        timestamp_key: str | None = None,
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> None:
        """``ValueError`` for a combination that cannot work (see the class)."""
        key = secret.encode() if isinstance(secret, str) else secret
        if not key:
            raise ValueError("the secret is empty")
        if algorithm not in _DIGESTS:
            raise ValueError(f"algorithm is one of {', '.join(_DIGESTS)}")
        if encoding not in ("hex", "base64"):
            raise ValueError("encoding is hex or base64")
        if timestamp_key is not None and signature_key is None:
            raise ValueError("timestamp_key reads a key=value header: set signature_key too")
        if timestamp_key is not None and timestamp_header is not None:
            raise ValueError("the timestamp comes from timestamp_header or timestamp_key, not both")
        if tolerance < 0:
            raise ValueError("tolerance is a non-negative number of seconds")
        has_timestamp = timestamp_header is not None or timestamp_key is not None
        names = _PLACEHOLDER.findall(template)
        if names.count("body") != 1 or names.count("timestamp") > 1:
            raise ValueError("the template holds {body} once and {timestamp} at most once")
        if set(names) - {"body", "timestamp"} or template.count("{") != len(names):
            raise ValueError("the template's only placeholders are {body} and {timestamp}")
        if ("timestamp" in names) != has_timestamp:
            raise ValueError(
                "{timestamp} in the template needs a timestamp source, and a timestamp source "
                "needs {timestamp} in the template (else it is not signed)"
            )
        before, _, after = template.partition("{body}")
        # The literals before and after the body, each split where the timestamp goes.
        self._before = before.split("{timestamp}")
        self._after = after.split("{timestamp}")
        self._hmac = hmac.new(key, digestmod=_DIGESTS[algorithm])
        self.header = header.lower()
        self.encoding = encoding
        self.prefix = prefix
        self.timestamp_header = timestamp_header.lower() if timestamp_header else None
        self.signature_key = signature_key
        self.timestamp_key = timestamp_key
        self.tolerance = tolerance

    @classmethod
    def github(cls, secret: str | bytes) -> HmacScheme:
        """GitHub's ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`` (no timestamp:
        GitHub's deliveries carry none that is signed)."""
        return cls(secret, header="x-hub-signature-256", prefix="sha256=")

    @classmethod
    def stripe(cls, secret: str | bytes, *, tolerance: float = DEFAULT_TOLERANCE) -> HmacScheme:
        """Stripe's ``Stripe-Signature: t=<unix time>,v1=<hex>[,v1=<hex>...]``, HMAC-SHA256 of
        ``{t}.{body}`` keyed with the endpoint secret's text (``whsec_…`` as a whole)."""
        return cls(
            secret,
            header="stripe-signature",
            template="{timestamp}.{body}",
            signature_key="v1",
            timestamp_key="t",
            tolerance=tolerance,
        )

    def verify(self, headers: Headers, body: bytes, now: float) -> None:
        """Return when one signature in the header is the HMAC of the signed content (and the
        timestamp, if the scheme has one, is recent); raise
        :class:`~portico.events.signing.SignatureRejected` otherwise."""
        names = [self.header] + ([self.timestamp_header] if self.timestamp_header else [])
        found = fields(headers, names)
        value = found.get(self.header, "").strip()
        timestamp = found.get(self.timestamp_header, "") if self.timestamp_header else None
        if self.signature_key is not None:
            signatures, timestamp_part = self._parts(value)
            if self.timestamp_key is not None:
                timestamp = timestamp_part
        else:
            signatures = [value] if value else []
        if not signatures or timestamp == "":
            raise SignatureRejected("missing-headers")
        if timestamp is not None:
            check_timestamp(timestamp, now, self.tolerance)
        expected = self._digest(body, timestamp or "")
        matched = False
        for signature in signatures[:MAX_SIGNATURES]:
            given = self._decode(signature)
            if given is not None:
                matched |= hmac.compare_digest(expected, given)
        if not matched:
            raise SignatureRejected("no-matching-signature")

    def _parts(self, value: str) -> tuple[list[str], str]:
        """The signatures and the timestamp of a ``key=value,key=value`` header; a repeated
        timestamp is refused (which one was signed is not ours to pick)."""
        signatures: list[str] = []
        timestamp = ""
        for part in value.split(","):
            key, equals, item = part.strip().partition("=")
            if not equals:
                continue
            if key == self.signature_key:
                signatures.append(item)
            elif key == self.timestamp_key:
                if timestamp:
                    raise SignatureRejected("duplicate-headers")
                timestamp = item
        return signatures, timestamp

    def _digest(self, body: bytes, timestamp: str) -> bytes:
        state = self._hmac.copy()
        state.update(timestamp.join(self._before).encode())
        state.update(body)
        state.update(timestamp.join(self._after).encode())
        return state.digest()

    def _decode(self, signature: str) -> bytes | None:
        """The bytes of one signature as the scheme writes it; ``None`` when it is not."""
        if not signature.startswith(self.prefix):
            return None
        text = signature[len(self.prefix) :]
        if self.encoding == "hex":
            return bytes.fromhex(text) if _HEX.fullmatch(text) and len(text) % 2 == 0 else None
        if not _BASE64.fullmatch(text):
            return None
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error:
            return None
