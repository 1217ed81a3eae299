"""Standard Webhooks 1.0.0 signatures: the secrets, signing what Portico sends, verifying.

A webhook carries three fields (the spec's "Webhook headers"): ``webhook-id`` (the message's id,
the same on every attempt: the receiver's idempotency key), ``webhook-timestamp`` (the attempt's
Unix time in seconds) and ``webhook-signature``, a space-separated list of signatures over
``{webhook-id}.{webhook-timestamp}.{body}``. Each signature is its scheme, a comma and base64:

* ``v1``: HMAC-SHA256 with a shared secret, written ``whsec_`` + base64 of 24 to 64 random bytes;
* ``v1a``: Ed25519, signed with a secret key written ``whsk_`` + base64 and verified with its
  public key, ``whpk_`` + base64 of its 32 bytes. A ``whsk_`` is the 64 bytes of the key pair
  (the 32-byte seed, then the public key), as libsodium and Svix's server keep it; the 32-byte
  seed alone is accepted too.

More than one signature is how a secret is rotated without downtime: during the overlap the
sender signs with the old and the new secret, and a receiver accepts the message when one of them
verifies with a secret it holds (:func:`webhook_headers`, :class:`Verifier`).

:class:`Signer` is on the delivery path: its key is decoded once, and an HMAC signature costs one
copy of a keyed hash state and the hash of the content.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "DEFAULT_TOLERANCE",
    "REJECTION_REASONS",
    "InvalidSecret",
    "SignatureRejected",
    "Signer",
    "Verifier",
    "generate_secret",
    "generate_signing_key",
    "public_key_of",
    "webhook_headers",
]

SYMMETRIC_PREFIX: Final = "whsec_"
SECRET_KEY_PREFIX: Final = "whsk_"  # noqa: S105 (a prefix, not a secret)
PUBLIC_KEY_PREFIX: Final = "whpk_"
HMAC_SCHEME: Final = "v1"
ED25519_SCHEME: Final = "v1a"
SECRET_BYTES: Final = 32
"""Random bytes of a generated ``whsec_`` secret (the spec allows 24 to 64)."""
MIN_SECRET_BYTES: Final = 24
MAX_SECRET_BYTES: Final = 64
DEFAULT_TOLERANCE: Final = 300.0
"""Seconds a ``webhook-timestamp`` may be behind or ahead of the receiver's clock (the spec's
and the reference libraries' five minutes)."""
MAX_SIGNATURES: Final = 32
"""Signatures of one header that a :class:`Verifier` looks at: a sender rotating keys sends two or
three; checking thousands of Ed25519 signatures would let one request cost seconds."""

ID_FIELD: Final = "webhook-id"
TIMESTAMP_FIELD: Final = "webhook-timestamp"
SIGNATURE_FIELD: Final = "webhook-signature"

REJECTION_REASONS: Final = frozenset(
    {
        "missing-headers",
        "duplicate-headers",
        "bad-timestamp",
        "timestamp-out-of-window",
        "no-matching-signature",
    }
)
"""What :attr:`SignatureRejected.reason` may be:

* ``missing-headers``: a field the scheme reads is absent or empty;
* ``duplicate-headers``: a field the scheme reads came more than once (only when the headers are
  given as pairs, see :class:`Verifier`);
* ``bad-timestamp``: the timestamp is not a plain number of seconds;
* ``timestamp-out-of-window``: it is further from the receiver's clock than the tolerance, in
  either direction (a replay, or a clock far off);
* ``no-matching-signature``: no signature verifies with any of the receiver's secrets (a wrong
  secret, a changed body, id or timestamp, an unknown scheme, a malformed signature).
"""

_DESCRIPTIONS: Final = {
    "missing-headers": "a signature field is missing or empty",
    "duplicate-headers": "a signature field is repeated",
    "bad-timestamp": "the timestamp is not a number of seconds",
    "timestamp-out-of-window": "the timestamp is outside the accepted window",
    "no-matching-signature": "no signature matches the configured secrets",
}

# An id goes into the signed content before the first ".", and into a header field: printable
# ASCII without "." or space (the spec: the id must not contain the delimiter).
_MESSAGE_ID = re.compile(r"[!-\-/-~]{1,256}")
# A timestamp as a sender writes it: ASCII digits, nothing else (int() would also take "+1",
# " 1", "1_000" and non-ASCII digits, none of which a signer produced).
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")

Headers = Mapping[str, str] | Sequence[tuple[str, str]]
"""Request fields with lower-case names: a mapping (one value a name), or the pairs as received,
so that a repeated field can be refused."""


class InvalidSecret(ValueError):
    """A secret or key that is not one of the Standard Webhooks forms, or not usable where it was
    given. The message says which form was expected; it never repeats the text."""


class SignatureRejected(Exception):
    """A webhook whose signature does not verify. ``reason`` is one of :data:`REJECTION_REASONS`,
    stable for logs, metrics and the problem a receiver answers with."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}: {_DESCRIPTIONS.get(reason, 'rejected')}")
        self.reason = reason


def _decode(text: str, prefix: str, what: str) -> bytes:
    """The bytes of ``prefix`` + base64 (standard alphabet, padding optional, as the reference
    libraries accept it); :class:`InvalidSecret` naming ``what`` otherwise."""
    body = text.strip()[len(prefix) :]
    if not _BASE64.fullmatch(body) or not body:
        raise InvalidSecret(f"not a valid {what}: expected {prefix} followed by base64")
    try:
        return base64.b64decode(body.rstrip("=") + "=" * (-len(body.rstrip("=")) % 4))
    except binascii.Error:
        raise InvalidSecret(f"not a valid {what}: expected {prefix} followed by base64") from None


def _hmac_key(text: str) -> bytes:
    key = _decode(text, SYMMETRIC_PREFIX, "webhook secret")
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise InvalidSecret(
            f"a {SYMMETRIC_PREFIX} webhook secret must hold {MIN_SECRET_BYTES} to "
            f"{MAX_SECRET_BYTES} bytes (it holds {len(key)})"
        )
    return key


def _private_key(text: str) -> Ed25519PrivateKey:
    raw = _decode(text, SECRET_KEY_PREFIX, "webhook signing key")
    if len(raw) not in (32, 64):
        raise InvalidSecret(
            f"a {SECRET_KEY_PREFIX} signing key must hold an Ed25519 key pair "
            f"(64 bytes) or its seed (32 bytes), not {len(raw)} bytes"
        )
    key = Ed25519PrivateKey.from_private_bytes(raw[:32])
    if len(raw) == 64 and raw[32:] != _raw_public(key.public_key()):
        raise InvalidSecret(
            f"the {SECRET_KEY_PREFIX} signing key's public half does not belong to its seed"
        )
    return key


def _public_key(text: str) -> Ed25519PublicKey:
    raw = _decode(text, PUBLIC_KEY_PREFIX, "webhook public key")
    if len(raw) != 32:
        raise InvalidSecret(
            f"a {PUBLIC_KEY_PREFIX} public key must hold 32 bytes, not {len(raw)} bytes"
        )
    return Ed25519PublicKey.from_public_bytes(raw)


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def generate_secret() -> str:
    """A new symmetric secret, ``whsec_`` + base64 of 32 random bytes: what an endpoint is given
    when it is created or its secret rotated, for ``v1`` (HMAC-SHA256) signatures."""
    return SYMMETRIC_PREFIX + _b64(secrets.token_bytes(SECRET_BYTES))


def generate_signing_key() -> str:
    """A new Ed25519 signing key, ``whsk_`` + base64 of the key pair (seed, then public key), for
    ``v1a`` signatures; the receiver is given :func:`public_key_of` it and never this."""
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes_raw()
    return SECRET_KEY_PREFIX + _b64(seed + _raw_public(key.public_key()))


def public_key_of(secret_key: str) -> str:
    """The ``whpk_`` public key of a ``whsk_`` signing key: what a receiver verifies ``v1a``
    signatures with (it can publish it; it cannot sign with it)."""
    if not secret_key.strip().startswith(SECRET_KEY_PREFIX):
        raise InvalidSecret(f"expected a {SECRET_KEY_PREFIX} signing key")
    return PUBLIC_KEY_PREFIX + _b64(_raw_public(_private_key(secret_key).public_key()))


def _check_message(msg_id: str, timestamp: int) -> None:
    if not _MESSAGE_ID.fullmatch(msg_id):
        raise ValueError(
            "a webhook id is 1 to 256 printable ASCII characters without '.' or spaces"
        )
    if timestamp < 0:
        raise ValueError("a webhook timestamp is a non-negative number of seconds")


class Signer:
    """Signs webhooks with one secret: HMAC-SHA256 (``v1``) for a ``whsec_`` secret, Ed25519
    (``v1a``) for a ``whsk_`` key. Made once per secret and reused: the key is decoded here, and
    :meth:`sign` only hashes."""

    __slots__ = ("_hmac", "_private", "scheme")

    def __init__(
        self, *, hmac_key: bytes | None = None, private_key: Ed25519PrivateKey | None = None
    ) -> None:
        """Prefer :meth:`from_secret`; exactly one of the two keys."""
        if (hmac_key is None) == (private_key is None):
            raise ValueError("a Signer holds exactly one key")
        self._hmac = hmac.new(hmac_key, digestmod=hashlib.sha256) if hmac_key is not None else None
        self._private = private_key
        self.scheme: str = HMAC_SCHEME if hmac_key is not None else ED25519_SCHEME
        """``v1`` or ``v1a``: the label of this signer's signatures."""

    @classmethod
    def from_secret(cls, text: str) -> Signer:
        """The signer of a ``whsec_`` secret or a ``whsk_`` key; :class:`InvalidSecret` for
        anything else (a ``whpk_`` public key cannot sign; a bare base64 string has no scheme)."""
        cleaned = text.strip()
        if cleaned.startswith(SYMMETRIC_PREFIX):
            return cls(hmac_key=_hmac_key(cleaned))
        if cleaned.startswith(SECRET_KEY_PREFIX):
            return cls(private_key=_private_key(cleaned))
        if cleaned.startswith(PUBLIC_KEY_PREFIX):
            raise InvalidSecret(
                f"a {PUBLIC_KEY_PREFIX} public key verifies signatures and cannot sign: "
                f"give the {SECRET_KEY_PREFIX} signing key"
            )
        raise InvalidSecret(
            f"not a webhook secret: expected {SYMMETRIC_PREFIX}… (HMAC) or "
            f"{SECRET_KEY_PREFIX}… (Ed25519)"
        )

    def sign(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The signature of one attempt, e.g. ``v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=``,
        over ``{msg_id}.{timestamp}.{body}``. ``ValueError`` for an id the signed content could
        not hold unambiguously (empty, with '.', spaces or control characters)."""
        _check_message(msg_id, timestamp)
        head = f"{msg_id}.{timestamp}.".encode("ascii")
        if self._hmac is not None:
            state = self._hmac.copy()
            state.update(head)
            state.update(body)
            return "v1," + _b64(state.digest())
        assert self._private is not None
        return "v1a," + _b64(self._private.sign(head + body))


def webhook_headers(
    msg_id: str, timestamp: int, body: bytes, signers: Sequence[Signer]
) -> list[tuple[str, str]]:
    """The three Standard Webhooks fields of one attempt, in this order: ``webhook-id``,
    ``webhook-timestamp``, ``webhook-signature`` (every signer's signature, space-separated: during
    a rotation the old and the new secret both sign, and the receiver needs one to match)."""
    if not signers:
        raise ValueError("a webhook needs at least one signer")
    signature = " ".join(signer.sign(msg_id, timestamp, body) for signer in signers)
    return [
        (ID_FIELD, msg_id),
        (TIMESTAMP_FIELD, str(timestamp)),
        (SIGNATURE_FIELD, signature),
    ]


def fields(headers: Headers, names: Iterable[str]) -> dict[str, str]:
    """The values of ``names`` (lower-case) in ``headers``. Given as pairs, a name that comes more
    than once is refused (``duplicate-headers``): which copy a sender meant is not ours to pick.
    Absent names are left out."""
    wanted = set(names)
    if isinstance(headers, Mapping):
        return {name: headers[name] for name in wanted if name in headers}
    found: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if key in wanted:
            if key in found:
                raise SignatureRejected("duplicate-headers")
            found[key] = value
    return found


def check_timestamp(text: str, now: float, tolerance: float) -> None:
    """``bad-timestamp`` unless ``text`` is plain ASCII digits; ``timestamp-out-of-window`` when it
    is more than ``tolerance`` seconds away from ``now``, before or after."""
    if not _TIMESTAMP.fullmatch(text):
        raise SignatureRejected("bad-timestamp")
    if abs(now - int(text)) > tolerance:
        raise SignatureRejected("timestamp-out-of-window")


class Verifier:
    """Verifies Standard Webhooks signatures as a receiver does: for Portico's inbound webhooks
    from a Standard Webhooks sender, and for anyone checking what Portico sends.

    It holds the receiver's secrets: ``whsec_`` secrets (``v1``) and ``whpk_`` public keys
    (``v1a``); a ``whsk_`` signing key is refused (a receiver has no business holding it). Several
    secrets are how a receiver rotates: a message verifies when any signature in its header
    matches any secret of the signature's scheme. A signature labelled with the other scheme, or
    an unknown one, never matches.
    """

    __slots__ = ("_hmac_keys", "_public_keys", "tolerance")

    def __init__(self, secrets: Sequence[str], *, tolerance: float = DEFAULT_TOLERANCE) -> None:
        """``secrets``: ``whsec_`` and ``whpk_`` values (at least one); ``tolerance``: the seconds
        the timestamp may be off the receiver's clock, either way. :class:`InvalidSecret` for a
        value of another form."""
        if isinstance(secrets, str):
            raise TypeError("secrets is a sequence of secrets, not one string")
        if not secrets:
            raise InvalidSecret("a verifier needs at least one secret or public key")
        if tolerance < 0:
            raise ValueError("tolerance is a non-negative number of seconds")
        hmac_keys: list[hmac.HMAC] = []
        public_keys: list[Ed25519PublicKey] = []
        for text in secrets:
            cleaned = text.strip()
            if cleaned.startswith(SYMMETRIC_PREFIX):
                hmac_keys.append(hmac.new(_hmac_key(cleaned), digestmod=hashlib.sha256))
            elif cleaned.startswith(PUBLIC_KEY_PREFIX):
                public_keys.append(_public_key(cleaned))
            elif cleaned.startswith(SECRET_KEY_PREFIX):
                raise InvalidSecret(
                    f"a receiver verifies with the {PUBLIC_KEY_PREFIX} public key, not the "
                    f"{SECRET_KEY_PREFIX} signing key"
                )
            else:
                raise InvalidSecret(
                    f"not a webhook secret: expected {SYMMETRIC_PREFIX}… (HMAC) or "
                    f"{PUBLIC_KEY_PREFIX}… (Ed25519 public key)"
                )
        self._hmac_keys = tuple(hmac_keys)
        self._public_keys = tuple(public_keys)
        self.tolerance = tolerance

    def verify(self, headers: Headers, body: bytes, now: float) -> None:
        """Return when the webhook is authentic and recent; raise :class:`SignatureRejected`
        otherwise. ``headers``: the request's fields with lower-case names (a mapping, or the pairs
        as received so that repeated fields are refused); ``body``: the raw body, byte for byte
        as received; ``now``: the receiver's clock, Unix seconds."""
        found = fields(headers, (ID_FIELD, TIMESTAMP_FIELD, SIGNATURE_FIELD))
        msg_id = found.get(ID_FIELD, "")
        timestamp = found.get(TIMESTAMP_FIELD, "")
        header = found.get(SIGNATURE_FIELD, "")
        if not (msg_id and timestamp and header):
            raise SignatureRejected("missing-headers")
        check_timestamp(timestamp, now, self.tolerance)
        # The id and the timestamp as received (the timestamp is ASCII digits by now): what the
        # sender signed is the text it sent, leading zeros included.
        content = f"{msg_id}.{timestamp}.".encode() + body
        expected: list[bytes] | None = None
        for entry in header.split(" ")[:MAX_SIGNATURES]:
            scheme, comma, encoded = entry.partition(",")
            if not comma or not _BASE64.fullmatch(encoded):
                continue
            try:
                signature = base64.b64decode(encoded, validate=True)
            except binascii.Error:
                continue
            if scheme == HMAC_SCHEME and self._hmac_keys:
                if expected is None:
                    expected = []
                    for key in self._hmac_keys:
                        state = key.copy()
                        state.update(content)
                        expected.append(state.digest())
                # Every key compared, in constant time each: no early exit tells which matched.
                matched = False
                for digest in expected:
                    matched |= hmac.compare_digest(digest, signature)
                if matched:
                    return
            elif scheme == ED25519_SCHEME and len(signature) == 64:
                for public in self._public_keys:
                    try:
                        public.verify(signature, content)
                    except InvalidSignature:
                        continue
                    return
        raise SignatureRejected("no-matching-signature")
