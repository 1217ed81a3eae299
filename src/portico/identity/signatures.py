"""The ``signature`` method: HTTP Message Signatures (RFC 9421) with Content-Digest (RFC 9530).

A consumer signs each request with a key declared in its ``signature_keys``; the ``keyid`` of the
signature names the key, and so the consumer. A request is accepted when:

- its one signature (or the one carrying the route's ``tag``) verifies with the key's algorithm
  (``ed25519``, ``ecdsa-p256-sha256``, ``rsa-pss-sha512`` or ``hmac-sha256``), and an ``alg``
  parameter, when given, names that algorithm;
- it covers ``@method`` and the request target: ``@authority`` and ``@path`` (and ``@query`` when
  the request has a query), or ``@target-uri``; plus every header field the route lists;
- a request with content covers ``content-digest``, and the digest (sha-256 or sha-512) matches the
  body as received;
- ``created`` is at most ``max_age`` old and at most ``clock_skew`` in the future, and ``expires``,
  when given, has not passed;
- its ``nonce`` (required unless the route says otherwise) was not seen with the same key while
  the signature could still be accepted.

The signature base and the cryptography are those of the ``http-message-signatures`` library:
Portico adapts the :class:`~portico.gateway.exchange.Exchange` to the requests-like message the
library verifies. What the library leaves to its caller is written here: choosing the key (and so
the algorithm) from the unverified ``keyid`` before verifying, the coverage policy (the library
can only require a fixed list, while ``@target-uri`` may stand for the three target components),
and replay protection.

Nonces are remembered in the memory of the process (:class:`NonceStore`), or, when the config
has a ``redis`` section, in Redis (``SET NX`` with the nonce's remaining life as its expiry), so
that a replay sent to another gateway process or machine is refused too. A Redis that does not
answer refuses the signature (fail closed: accepting it would reopen the window for replays),
with a warning in the log.
"""

from __future__ import annotations

import datetime
import heapq
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import http_sf
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from http_message_signatures import (
    HTTPMessageSignaturesException,
    HTTPMessageVerifier,
    MappingKeyResolver,
    VerificationKey,
    algorithms,
)

from portico.config.model import PorticoConfig, SignatureKey
from portico.core.http import REALM
from portico.gateway.exchange import Exchange, Identity
from portico.identity.authn import AuthResult, Rejected
from portico.identity.method_settings import SignatureSettings
from portico.shared.state import SharedState, SharedStateUnavailable

if TYPE_CHECKING:
    from portico.identity.authn import MethodSettings
    from portico.identity.context import BuildContext
    from portico.identity.state import IdentityState

__all__ = [
    "DEFAULT_NONCE_CAPACITY",
    "NonceStore",
    "NonceStoreFull",
    "SignatureAuthenticator",
    "SignatureSettings",
    "SignerKey",
    "build_authenticator",
    "signer_keys",
]

log = logging.getLogger("portico.auth.signature")

CHALLENGE = f'Signature realm="{REALM}"'
INVALID_SIGNATURE = f'Signature realm="{REALM}", error="invalid_signature"'
LABEL = "sig1"
"""The label Portico's ``Accept-Signature`` proposes; a client may sign under any label."""
DEFAULT_NONCE_CAPACITY = 200_000
MAX_NONCE_LENGTH = 256

ALGORITHMS: Mapping[str, type[algorithms.HTTPSignatureAlgorithm]] = {
    "ed25519": algorithms.ED25519,
    "ecdsa-p256-sha256": algorithms.ECDSA_P256_SHA256,
    "rsa-pss-sha512": algorithms.RSA_PSS_SHA512,
    "hmac-sha256": algorithms.HMAC_SHA256,
}

# Fields a route cannot require to be covered: the signature's own.


class _Refused(Exception):
    """Why a signature is not accepted (for the log; the client only gets the challenge)."""


class NonceStoreFull(Exception):
    """Every slot holds a nonce that could still be replayed; nothing may be forgotten early."""


class NonceStore:
    """Nonces seen recently, each kept until the signature carrying it can no longer be accepted.

    Bounded: when ``capacity`` nonces are all still live, :meth:`remember` raises
    :class:`NonceStoreFull` rather than forget one (forgetting would allow its replay). Only
    requests whose signature verified get here, so only holders of a key can fill it.
    """

    def __init__(
        self, capacity: int = DEFAULT_NONCE_CAPACITY, clock: Callable[[], float] = time.time
    ):
        self.capacity = capacity
        self._clock = clock
        self._until: dict[tuple[str, str], float] = {}
        self._expiry: list[tuple[float, tuple[str, str]]] = []
        # Gateways run on one event loop, but tests and tools may share a store across threads.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._until)

    def remember(self, keyid: str, nonce: str, until: float) -> bool:
        """Record ``nonce`` for ``keyid`` until ``until`` (epoch seconds); ``False`` when it was
        already recorded and has not expired (a replay)."""
        key = (keyid, nonce)
        with self._lock:
            now = self._clock()
            self._forget_expired(now)
            seen = self._until.get(key)
            if seen is not None and seen > now:
                return False
            if len(self._until) >= self.capacity:
                raise NonceStoreFull(f"{len(self._until)} nonces are still live")
            self._until[key] = until
            heapq.heappush(self._expiry, (until, key))
            return True

    def _forget_expired(self, now: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            until, key = heapq.heappop(expiry)
            if self._until.get(key) == until:
                del self._until[key]


_NONCES = NonceStore()
"""The process's nonces: shared by every route and kept across config reloads, so that a reload
does not reopen the window for replays."""


@dataclass(frozen=True, slots=True)
class SignerKey:
    """One verification key, its verifier, and the consumer it belongs to."""

    keyid: str
    algorithm: str
    consumer: str
    """The ``ConsumerEntry.id`` (``tenant/consumer``)."""
    verifier: HTTPMessageVerifier


class _FieldLines:
    """The exchange's header fields as the library reads them (``items()`` in wire order)."""

    __slots__ = ("_headers",)

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._headers = items

    def items(self) -> Iterable[tuple[str, str]]:
        return self._headers

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self._headers))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(k == name.lower() for k, _ in self._headers)


@dataclass(frozen=True, slots=True)
class _SignedRequest:
    """The request as the library sees a requests/httpx request: method, absolute URL, fields."""

    method: str
    url: str
    headers: _FieldLines


class SignatureAuthenticator:
    """Verifies RFC 9421 signatures against the consumers' signature keys."""

    __slots__ = (
        "_clock_skew",
        "_headers",
        "_keys",
        "_max_age",
        "_nonces",
        "_require_nonce",
        "_shared",
        "_state",
        "_tag",
        "accept_signature",
        "method",
    )

    needs_body = True
    """The ``Content-Digest`` is checked against the whole body, read before verification."""

    def __init__(
        self,
        state: IdentityState,
        keys: Mapping[str, SignerKey],
        settings: SignatureSettings | None = None,
        nonces: NonceStore | None = None,
        shared: SharedState | None = None,
    ) -> None:
        settings = settings or SignatureSettings()
        self.method = "signature"
        self._state = state
        self._keys = keys
        self._headers = settings.headers
        self._max_age = settings.max_age
        self._clock_skew = settings.clock_skew
        self._require_nonce = settings.require_nonce
        self._tag = settings.tag
        self._nonces = nonces if nonces is not None else _NONCES
        self._shared = shared if shared is not None and not shared.local else None
        """Redis, where nonces go when several processes must see them; else the process's."""
        # The 401 for a request without a signature is built once per route, before any request
        # is seen, so it proposes what covers every request: "@query" (the bare "?" when there
        # is none) and "content-digest" (of empty content when there is none). A client that
        # signs what it is asked gets through, also with a query or a body.
        self.accept_signature = self._accept_signature(query=True, body=True)
        """``Accept-Signature`` (RFC 9421 §5.1) for a request without a signature."""

    def challenge(self) -> str:
        return CHALLENGE

    def present(self, exchange: Exchange) -> bool:
        headers = exchange.headers
        return "signature-input" in headers or "signature" in headers

    def identify(self, exchange: Exchange) -> AuthResult | Awaitable[AuthResult] | None:
        return self.authenticate(exchange) if self.present(exchange) else None

    def authenticate(self, exchange: Exchange) -> AuthResult | Awaitable[AuthResult]:
        try:
            verified = self._verify(exchange)
            if isinstance(verified, Identity):
                return verified
        except _Refused as refused:
            return self._refuse(exchange, refused)
        return self._remembered_in_shared_state(exchange, *verified)

    def _refuse(self, exchange: Exchange, refused: _Refused) -> Rejected:
        exchange.response_headers.add(
            "accept-signature",
            self._accept_signature(query=bool(exchange.query), body=_has_body(exchange)),
        )
        return Rejected(INVALID_SIGNATURE, str(refused))

    async def _remembered_in_shared_state(
        self, exchange: Exchange, identity: Identity, keyid: str, nonce: str, until: float
    ) -> AuthResult:
        assert self._shared is not None
        ttl = max(until - time.time(), 1.0)
        try:
            fresh = await self._shared.add(f"nonce:{keyid}:{nonce}", b"1", ttl)
        except SharedStateUnavailable as exc:
            log.warning("signed request refused: the shared nonce store did not answer (%s)", exc)
            return self._refuse(exchange, _Refused("shared nonce store unavailable"))
        if not fresh:
            return self._refuse(exchange, _Refused(f"keyid {keyid!r}: nonce already used (replay)"))
        return identity

    def _verify(self, exchange: Exchange) -> Identity | tuple[Identity, str, str, float]:
        """The identity, or with the nonce still to remember in the shared state: the identity,
        the keyid, the nonce and until when to remember it."""
        headers = exchange.headers
        if "signature-input" not in headers or "signature" not in headers:
            raise _Refused("Signature-Input and Signature must both be present")
        keyid = self._keyid(",".join(headers.get_all("signature-input")))
        key = self._keys.get(keyid)
        if key is None:
            raise _Refused(f"unknown keyid {keyid!r}")

        body = exchange.body
        if body is None:
            if _has_body(exchange):
                # The route did not read the body, so the digest cannot be checked.
                raise _Refused("the body was not read; the signature method needs it")
            body = b""
        try:
            results = key.verifier.verify(
                self._message(exchange),
                max_age=datetime.timedelta(seconds=self._max_age),
                expect_tag=self._tag,
                body=body,
            )
        except (HTTPMessageSignaturesException, ValueError) as exc:
            # cryptography's InvalidSignature, which the library wraps, has no message.
            why = str(exc) or "the signature does not verify"
            raise _Refused(f"keyid {keyid!r}: {why}") from None
        if len(results) != 1:
            raise _Refused(f"keyid {keyid!r}: more than one signature to verify")
        verified = results[0]

        missing = self._uncovered(verified.covered_components, bool(exchange.query))
        if missing:
            raise _Refused(f"keyid {keyid!r}: the signature does not cover {', '.join(missing)}")
        until = self._check_nonce(keyid, verified.nonce, verified.parameters.get("created"))

        consumer = self._state.directory.consumers.get(key.consumer)
        if consumer is None:
            raise _Refused(f"keyid {keyid!r}: consumer {key.consumer} not found")
        identity = Identity(
            consumer=consumer.id,
            tenant=consumer.tenant,
            scopes=consumer.scopes,
            method=self.method,
            claims={"keyid": keyid, "algorithm": key.algorithm},
        )
        if until is not None and verified.nonce is not None:
            return identity, keyid, verified.nonce, until
        return identity

    def _keyid(self, signature_input: str) -> str:
        """The ``keyid`` of the signature to verify: the only one, or the one with the tag."""
        try:
            parsed = http_sf.parse(signature_input.encode("latin-1"), tltype="dictionary")
        except (ValueError, TypeError, UnicodeEncodeError):
            raise _Refused("malformed Signature-Input") from None
        if not isinstance(parsed, dict) or not parsed:
            raise _Refused("empty Signature-Input")
        candidates = []
        for member in parsed.values():
            if not (isinstance(member, tuple) and isinstance(member[0], list)):
                raise _Refused("a Signature-Input member is not an inner list")
            params = member[1]
            if self._tag is None or params.get("tag") == self._tag:
                candidates.append(params.get("keyid"))
        if not candidates:
            raise _Refused(f"no signature has the tag {self._tag!r}")
        if len(candidates) > 1:
            raise _Refused(
                "several signatures and no tag to choose one"
                if self._tag is None
                else f"several signatures have the tag {self._tag!r}"
            )
        keyid = candidates[0]
        if not isinstance(keyid, str):
            raise _Refused("the signature has no keyid")
        return keyid

    def _check_nonce(self, keyid: str, nonce: str | None, created: object) -> float | None:
        """Remember the nonce in the process; with shared state, until when the caller must
        remember it there."""
        if nonce is None:
            if self._require_nonce:
                raise _Refused(f"keyid {keyid!r}: the signature has no nonce")
            return None
        if len(nonce) > MAX_NONCE_LENGTH:
            raise _Refused(f"keyid {keyid!r}: nonce longer than {MAX_NONCE_LENGTH} characters")
        start = created if isinstance(created, int) else time.time()
        # The signature stays acceptable until created + max_age, give or take the skew.
        until = start + self._max_age + self._clock_skew + 1.0
        if self._shared is not None:
            return until
        try:
            fresh = self._nonces.remember(keyid, nonce, until)
        except NonceStoreFull as exc:
            log.warning("signed request refused: the nonce store is full (%s)", exc)
            raise _Refused("nonce store full") from None
        if not fresh:
            raise _Refused(f"keyid {keyid!r}: nonce already used (replay)")
        return None

    def _message(self, exchange: Exchange) -> _SignedRequest:
        authority = exchange.headers.get("host") or exchange.host
        if not authority or any(c in authority for c in "@/?# \t\\"):
            raise _Refused("no usable Host for @authority")
        query = f"?{exchange.query}" if exchange.query else ""
        url = f"{exchange.scheme}://{authority}{exchange.raw_path}{query}"
        return _SignedRequest(exchange.method, url, _FieldLines(exchange.headers.items))

    def _uncovered(self, covered: Mapping[str, str], has_query: bool) -> list[str]:
        # Components are keyed by their serialization: a bare field or derived name is '"name"'.
        def bare(name: str) -> bool:
            return f'"{name}"' in covered

        missing = [] if bare("@method") else ["@method"]
        if not bare("@target-uri"):
            target = ["@authority", "@path", *(["@query"] if has_query else [])]
            missing += [name for name in target if not bare(name)]
        missing += [name for name in self._headers if not bare(name)]
        return missing

    def _accept_signature(self, *, query: bool, body: bool) -> str:
        components = [
            "@method",
            "@authority",
            "@path",
            *(["@query"] if query else []),
            *self._headers,
            *(["content-digest"] if body else []),
        ]
        params = ";created"
        if self._require_nonce:
            params += ";nonce"
        if self._tag is not None:
            params += f";tag={http_sf.ser(self._tag)}"
        inner = " ".join(f'"{name}"' for name in components)
        return f"{LABEL}=({inner}){params}"


def _has_body(exchange: Exchange) -> bool:
    if exchange.body is not None:
        return bool(exchange.body)
    headers = exchange.headers
    length = headers.get("content-length")
    if length is not None:
        return length.strip() != "0"
    return "transfer-encoding" in headers


def _verification_key(key: SignatureKey) -> VerificationKey:
    if key.algorithm == "hmac-sha256":
        assert key.secret is not None  # the config model requires it
        return key.secret.encode()
    assert key.public_key is not None  # the config model requires it
    loaded = load_pem_public_key(key.public_key.encode())
    # The config model checked the key type against the algorithm.
    return loaded  # type: ignore[return-value]


def signer_keys(config: PorticoConfig, clock_skew: float = 5.0) -> dict[str, SignerKey]:
    """Every consumer's signature keys by ``keyid``, each with its verifier."""
    keys: dict[str, SignerKey] = {}
    skew = datetime.timedelta(seconds=clock_skew)
    for tenant_name, tenant in config.tenants.items():
        for name, consumer in tenant.consumers.items():
            for key in consumer.signature_keys:
                verifier = HTTPMessageVerifier(
                    signature_algorithm=ALGORITHMS[key.algorithm],
                    key_resolver=MappingKeyResolver(
                        public_keys={key.keyid: _verification_key(key)}, private_keys={}
                    ),
                )
                verifier.max_clock_skew = skew
                keys[key.keyid] = SignerKey(
                    key.keyid, key.algorithm, f"{tenant_name}/{name}", verifier
                )
    return keys


def build_authenticator(
    settings: MethodSettings[SignatureSettings], context: BuildContext
) -> SignatureAuthenticator:
    from portico.identity.state import IdentityState

    state = context.extensions.identity
    if state is None:
        # No live state (a runtime built outside `portico serve`): the config's consumers.
        state = IdentityState.for_config(context.config)
    route_settings = settings.options or SignatureSettings()
    keys = signer_keys(context.config, route_settings.clock_skew)
    return SignatureAuthenticator(state, keys, route_settings, shared=context.extensions.shared)
