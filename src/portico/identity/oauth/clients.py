"""OAuth clients and how they authenticate to the token, introspection and revocation endpoints.

A consumer with an ``oauth`` section is a client. It authenticates (RFC 6749 §2.3, RFC 7523) with

- ``client_secret_basic``: ``Authorization: Basic`` with the client id and secret;
- ``client_secret_post``: ``client_id`` and ``client_secret`` in the form body;
- ``private_key_jwt``: a JWT assertion signed with one of the client's keys (``jwks`` or
  ``jwks_uri``), for this server (``aud``), short-lived, and never seen before (its ``jti`` is
  recorded in the store until it expires, so a replay fails in every process).

Secrets are kept as SHA-256 hashes and compared in constant time; an unknown client costs the
same comparison as a wrong secret, and both get the same answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import jwt
from jwt import PyJWK

from portico.config.model import PorticoConfig
from portico.gateway.headers import Headers
from portico.identity.jwks import RemoteKeySet, RemoteKeySets
from portico.identity.keyset import ASYMMETRIC_ALGORITHMS, KeySet

JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")
MAX_ASSERTION_LIFETIME = 3600
"""Seconds from now an assertion's ``exp`` may be; it bounds how long a ``jti`` is remembered."""
MAX_JTI_LENGTH = 256
CLIENT_JWKS_CACHE_TTL = 300.0
CLIENT_JWKS_MIN_REFRESH_INTERVAL = 10.0

_NO_SECRET = hashlib.sha256(b"portico: this client has no secret").digest()


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    consumer: str
    """``tenant/consumer``, the ``sub`` of its tokens."""
    tenant: str | None
    scopes: frozenset[str]
    secret_sha256: bytes | None = None
    keys: KeySet | None = None
    keys_uri: RemoteKeySet | None = None


class ClientAuthError(Exception):
    """Client authentication failed (``invalid_client``) or was ambiguous (``invalid_request``)."""

    def __init__(self, error: str, description: str, *, basic: bool = False) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.basic = basic


def clients_from_config(config: PorticoConfig, key_sets: RemoteKeySets) -> dict[str, Client]:
    """Every consumer with an ``oauth`` section, by client id. Raises ``ValueError`` on a
    client id used twice."""
    clients: dict[str, Client] = {}
    for tenant_name, tenant in config.tenants.items():
        for consumer_name, consumer in tenant.consumers.items():
            spec = consumer.oauth
            if spec is None:
                continue
            if spec.client_id in clients:
                raise ValueError(f"OAuth client_id {spec.client_id!r} is used by two consumers")
            if spec.client_secret is not None:
                secret: bytes | None = hashlib.sha256(spec.client_secret.encode()).digest()
            elif spec.client_secret_sha256 is not None:
                secret = bytes.fromhex(spec.client_secret_sha256)
            else:
                secret = None
            clients[spec.client_id] = Client(
                client_id=spec.client_id,
                consumer=f"{tenant_name}/{consumer_name}",
                tenant=tenant_name,
                scopes=frozenset(consumer.scopes),
                secret_sha256=secret,
                keys=KeySet.from_jwks(spec.jwks) if spec.jwks is not None else None,
                keys_uri=(
                    key_sets.get(
                        spec.jwks_uri,
                        ttl=CLIENT_JWKS_CACHE_TTL,
                        min_refresh_interval=CLIENT_JWKS_MIN_REFRESH_INTERVAL,
                    )
                    if spec.jwks_uri is not None
                    else None
                ),
            )
    return clients


RememberAssertion = Callable[[str, float], Awaitable[bool]]
"""Records an assertion id until the given expiry; ``False`` when it was already recorded."""


class ClientAuthenticator:
    """Authenticates the client of one request to a built-in OAuth endpoint."""

    def __init__(
        self,
        clients: Mapping[str, Client],
        audiences: frozenset[str],
        remember_assertion: RememberAssertion,
        leeway: float,
    ) -> None:
        self._clients = clients
        self._audiences = audiences
        self._remember = remember_assertion
        self._leeway = leeway

    def authenticate(self, headers: Headers, form: Mapping[str, str]) -> Client | Awaitable[Client]:
        """The authenticated client; raises (or the awaitable raises) :class:`ClientAuthError`."""
        authorization = headers.get("authorization")
        basic = authorization is not None and authorization[:6].lower() == "basic "
        used = [
            basic,
            "client_secret" in form,
            "client_assertion" in form or "client_assertion_type" in form,
        ]
        if sum(used) > 1:
            raise ClientAuthError(
                "invalid_request", "use exactly one client authentication method", basic=basic
            )
        if authorization is not None and basic:
            client_id, secret = _basic_credentials(authorization)
            return self._by_secret(client_id, secret, basic=True)
        if used[1]:
            posted_id = form.get("client_id")
            if not posted_id:
                raise ClientAuthError("invalid_request", "client_id is required")
            return self._by_secret(posted_id, form["client_secret"], basic=False)
        if used[2]:
            return self._by_assertion(form)
        raise ClientAuthError("invalid_client", "client authentication is required")

    def _by_secret(self, client_id: str, secret: str, *, basic: bool) -> Client:
        readings = {(client_id, secret)}
        if basic:
            # Form-encoded by the spec (RFC 6749 §2.3.1), sent raw by many clients: both readings
            # are tried, each with the same constant-time comparison.
            readings.add((unquote_plus(client_id), unquote_plus(secret)))
        for cid, sec in readings:
            client = self._clients.get(cid)
            expected = client.secret_sha256 if client is not None else None
            presented = hashlib.sha256(sec.encode()).digest()
            matches = hmac.compare_digest(presented, expected or _NO_SECRET)
            if matches and client is not None and expected is not None:
                return client
        raise ClientAuthError("invalid_client", "client authentication failed", basic=basic)

    async def _by_assertion(self, form: Mapping[str, str]) -> Client:
        if form.get("client_assertion_type") != JWT_BEARER_ASSERTION:
            raise ClientAuthError(
                "invalid_request", f"client_assertion_type must be {JWT_BEARER_ASSERTION}"
            )
        assertion = form.get("client_assertion")
        if not assertion:
            raise ClientAuthError("invalid_request", "client_assertion is required")
        failed = ClientAuthError("invalid_client", "client authentication failed")
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise failed from None
        client_id = unverified.get("iss")
        client = self._clients.get(client_id) if isinstance(client_id, str) else None
        if client is None or form.get("client_id", client_id) != client_id:
            raise failed
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ASYMMETRIC_ALGORITHMS or not (kid is None or isinstance(kid, str)):
            raise failed
        candidates = await self._client_keys(client, kid, algorithm)
        claims = self._verify_assertion(assertion, client, candidates)
        if claims is None:
            raise failed
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
            raise failed
        if not await self._remember(f"{client.client_id} {jti}", float(claims["exp"])):
            raise ClientAuthError("invalid_client", "this client assertion was already used")
        return client

    async def _client_keys(
        self, client: Client, kid: str | None, algorithm: str
    ) -> tuple[PyJWK, ...]:
        if client.keys is not None:
            return client.keys.candidates(kid, algorithm)
        remote = client.keys_uri
        if remote is None:
            return ()
        found = remote.lookup(kid, algorithm)
        if found is None:
            await remote.refresh()
            found = remote.current(kid, algorithm)
        return found

    def _verify_assertion(
        self, assertion: str, client: Client, candidates: tuple[PyJWK, ...]
    ) -> dict[str, Any] | None:
        for key in candidates:
            try:
                claims: dict[str, Any] = jwt.decode(
                    assertion,
                    key,
                    algorithms=[key.algorithm_name],
                    audience=list(self._audiences),
                    issuer=client.client_id,
                    leeway=self._leeway,
                    options={"require": ["iss", "sub", "aud", "exp", "jti"]},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidTokenError:
                return None
            if claims["sub"] != client.client_id:
                return None
            if float(claims["exp"]) > time.time() + MAX_ASSERTION_LIFETIME + self._leeway:
                return None
            return claims
        return None


def _basic_credentials(authorization: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ClientAuthError("invalid_client", "malformed Basic credentials", basic=True) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id:
        raise ClientAuthError("invalid_client", "malformed Basic credentials", basic=True)
    return client_id, secret
