"""A gateway wired as ``portico serve`` wires it (identity and OAuth state, built-in endpoints),
served in-process; a local JWKS server; and key helpers for the identity tests.

:func:`serving_gateway` mirrors :func:`portico.serving.run` without its signal handlers: the
SQLite file is migrated, :class:`~portico.identity.state.IdentityState` and
:class:`~portico.identity.oauth.state.OAuthState` are opened on it and kept current by their
polling tasks, and the OAuth endpoints are registered. Tests talk to it with blocking clients.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import uvloop
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from tests.support.gateway import Config, RunningGateway, with_defaults, write_config
from tests.support.upstreams import Upstream

from portico.assembly import build_runtime, load_config
from portico.gateway.app import Gateway
from portico.identity.context import Extensions
from portico.identity.oauth.state import OAuthState
from portico.identity.state import IdentityState
from portico.store.database import Database
from portico.store.migrate import upgrade
from portico.store.secrets import Secrets, open_secrets

StartGateway = Callable[..., "ServingGateway"]
"""The ``start`` fixture of the OAuth tests: starts a gateway, keyword arguments go to
:func:`oauth_config`."""
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class ServingGateway(RunningGateway):
    """A gateway with the live identity and OAuth state of ``portico serve``."""

    def __init__(
        self,
        gateway: Gateway,
        loop: asyncio.AbstractEventLoop,
        config_path: Path,
        oauth: OAuthState,
        identity: IdentityState,
        database_url: str,
        secrets: Secrets,
    ) -> None:
        super().__init__(gateway, loop, config_path)
        self.oauth = oauth
        self.identity = identity
        self.database_url = database_url
        self.secrets = secrets


@contextlib.contextmanager
def serving_gateway(tmp_path: Path, config: Config) -> Iterator[ServingGateway]:
    config = with_defaults(config)
    database_url = f"sqlite:///{tmp_path / 'portico.db'}"
    config.setdefault("database", {"url": database_url})
    database_url = config["database"]["url"]
    path = write_config(tmp_path / "portico.yaml", config)
    loaded = load_config(path)
    secrets = open_secrets(database_url, loaded.database.secrets_key_file)
    upgrade(database_url, secrets=secrets)
    identity = IdentityState.open(loaded)
    oauth = OAuthState(Database(database_url), secrets)
    oauth.load()
    runtime = build_runtime(
        loaded, extensions=Extensions(identity=identity, oauth=oauth), endpoints=("oauth",)
    )
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="gateway-loop", daemon=True)
    thread.start()
    tasks: list[asyncio.Task[None]] = []

    async def start() -> Gateway:
        gateway = Gateway(runtime)
        await gateway.start()
        tasks.append(asyncio.get_running_loop().create_task(identity.watch()))
        tasks.append(asyncio.get_running_loop().create_task(oauth.run()))
        return gateway

    async def stop(gateway: Gateway) -> None:
        await gateway.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        gateway = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
        try:
            yield ServingGateway(gateway, loop, path, oauth, identity, database_url, secrets)
        finally:
            asyncio.run_coroutine_threadsafe(stop(gateway), loop).result(timeout=30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        identity.close()
        oauth.close()


# -- keys ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    """A private key, its algorithm and its public JWK (with ``kid``)."""

    private: PrivateKey
    algorithm: str
    kid: str

    @property
    def public_jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    @property
    def private_pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def rsa_key(kid: str = "rsa-1") -> KeyPair:
    return KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256", kid)


def ec_key(kid: str = "ec-1") -> KeyPair:
    return KeyPair(ec.generate_private_key(ec.SECP256R1()), "ES256", kid)


def ed25519_key(kid: str = "ed-1") -> KeyPair:
    return KeyPair(ed25519.Ed25519PrivateKey.generate(), "EdDSA", kid)


def jwks(*keys: KeyPair) -> dict[str, Any]:
    return {"keys": [key.public_jwk for key in keys]}


# -- a JWKS server ---------------------------------------------------------------------------------


class JWKSServer:
    """Serves a JWK Set at ``/jwks.json`` over HTTP and counts the requests it gets."""

    def __init__(self, *keys: KeyPair) -> None:
        self.document: dict[str, Any] = jwks(*keys)
        self.status = 200
        self.requests = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.requests += 1
                    status, document = server.status, server.document
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"

    def publish(self, *keys: KeyPair) -> None:
        with self._lock:
            self.document = jwks(*keys)

    def count(self) -> int:
        with self._lock:
            return self.requests

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# -- an authorization server to test ------------------------------------------------------------

BILLING_SECRET = "billing-" + "s" * 32
REPORTS_SECRET = "reports-" + "r" * 32


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def oauth_config(
    port: int,
    upstream: Upstream,
    warehouse_key: KeyPair,
    *,
    ttl: str = "1h",
    algorithm: str = "EdDSA",
    warehouse_jwks_uri: str | None = None,
) -> Config:
    warehouse: dict[str, Any] = {"client_id": "warehouse-app"}
    if warehouse_jwks_uri is None:
        warehouse["jwks"] = jwks(warehouse_key)
    else:
        warehouse["jwks_uri"] = warehouse_jwks_uri

    def protected(name: str, path: str, scopes: list[str]) -> dict[str, Any]:
        return {
            "name": name,
            "match": {"path": path},
            "service": "backend",
            "policies": [{"type": "auth", "methods": ["oauth"], "scopes": scopes}],
        }

    return {
        "gateway": {"listen": f"127.0.0.1:{port}"},
        "services": {"backend": {"targets": [upstream.url], "retries": 0}},
        "routes": [
            protected("orders", "/orders", ["orders:read"]),
            protected("admin", "/admin", ["orders:admin"]),
            {
                "name": "relay",
                "match": {"path": "/relay"},
                "service": "backend",
                "policies": [
                    {"type": "auth", "methods": ["oauth"], "oauth": {"hide_credentials": False}}
                ],
            },
        ],
        "tenants": {
            "acme": {
                "consumers": {
                    "billing": {
                        "scopes": ["orders:read", "orders:write"],
                        "oauth": {"client_id": "billing-app", "client_secret": BILLING_SECRET},
                    },
                    "warehouse": {"scopes": ["orders:read"], "oauth": warehouse},
                }
            },
            "globex": {
                "consumers": {
                    "reports": {
                        "scopes": ["orders:read", "reports:read"],
                        "oauth": {
                            "client_id": "reports-app",
                            "client_secret_sha256": hashlib.sha256(
                                REPORTS_SECRET.encode()
                            ).hexdigest(),
                        },
                    }
                }
            },
        },
        "identity": {
            "oauth": {
                "issuer": f"http://127.0.0.1:{port}",
                "token_ttl": ttl,
                "signing_algorithm": algorithm,
            }
        },
    }


# -- tokens --------------------------------------------------------------------------------------


def token_for(gateway: ServingGateway, client_id: str, secret: str, **form: str) -> str:
    with gateway.client() as client:
        response = client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials", **form},
            auth=(client_id, secret),
        )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def issuer_of(gateway: ServingGateway) -> str:
    settings = gateway.gateway.runtime.config.identity.oauth
    assert settings is not None
    return settings.issuer


def valid_claims(gateway: ServingGateway, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    issuer = issuer_of(gateway)
    claims = {
        "iss": issuer,
        "sub": "acme/billing",
        "aud": issuer,
        "exp": now + 300,
        "iat": now,
        "jti": secrets.token_urlsafe(12),
        "client_id": "billing-app",
        "scope": "orders:read",
        "tenant": "acme",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join(
        [_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(signature)]
    )


def hs256_token(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """An HS256 token made by hand: PyJWT refuses a PEM key as an HMAC secret."""
    signing_input = ".".join(
        [_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode())]
    ).encode()
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return signing_input.decode() + "." + _b64(signature)


def signed_token(
    gateway: ServingGateway, claims: dict[str, Any], headers: dict[str, Any] | None = None
) -> str:
    """A token signed with the server's own signing key (valid unless the claims say otherwise)."""
    key = gateway.oauth.keyring.signing
    assert key is not None
    header = {"typ": "at+jwt", "kid": key.kid, **(headers or {})}
    return jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers=header)
