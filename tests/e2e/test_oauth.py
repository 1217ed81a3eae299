"""The authorization server in real ``portico serve`` processes sharing one SQLite store.

An OAuth 2.0 client library obtains tokens, PyJWT verifies them against the JWKS URL, and the
``portico oauth rotate-key`` command rotates the signing key of the running processes. Two
gateway processes show that a revocation made through one is enforced by the other.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from tests.support.gateway import PorticoProcess, wait_for
from tests.support.oauth import BILLING_SECRET
from tests.support.upstreams import Upstream

ISSUER = "https://auth.portico.test"
PORTICO = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "portico"


def config(upstream: Upstream, database: Path) -> dict[str, Any]:
    return {
        "database": {"url": f"sqlite:///{database}"},
        "services": {"orders": {"targets": [upstream.url], "retries": 0}},
        "routes": [
            {
                "name": "orders",
                "match": {"path": "/orders"},
                "service": "orders",
                "policies": [{"type": "auth", "methods": ["oauth"], "scopes": ["orders:read"]}],
            }
        ],
        "tenants": {
            "acme": {
                "consumers": {
                    "billing": {
                        "scopes": ["orders:read"],
                        "oauth": {"client_id": "billing-app", "client_secret": BILLING_SECRET},
                    }
                }
            }
        },
        "identity": {"oauth": {"issuer": ISSUER, "audience": "https://api.portico.test"}},
    }


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream("orders")
    yield server
    server.close()


@pytest.fixture
def processes(tmp_path: Path, upstream: Upstream) -> Iterator[list[PorticoProcess]]:
    """Two ``portico serve`` processes on the same database (the first one creates the key)."""
    started: list[PorticoProcess] = []
    try:
        for name in ("a", "b"):
            directory = tmp_path / name
            directory.mkdir()
            started.append(PorticoProcess(directory, config(upstream, tmp_path / "portico.db")))
        yield started
    finally:
        for process in started:
            process.stop()


def fetch_token(process: PorticoProcess) -> str:
    with OAuth2Client(
        "billing-app", BILLING_SECRET, scope="orders:read", trust_env=False
    ) as client:
        token = client.fetch_token(f"{process.url}/oauth2/token", grant_type="client_credentials")
    access_token: str = token["access_token"]
    return access_token


def status(process: PorticoProcess, token: str) -> int:
    with process.client() as client:
        return client.get("/orders", headers={"authorization": f"Bearer {token}"}).status_code


def jwks_kids(process: PorticoProcess) -> set[str]:
    with process.client() as client:
        return {key["kid"] for key in client.get("/.well-known/jwks.json").json()["keys"]}


def test_a_token_from_one_process_works_at_both_and_verifies_with_pyjwt(
    processes: list[PorticoProcess],
) -> None:
    a, b = processes
    with OAuth2Client(
        "billing-app", BILLING_SECRET, scope="orders:read", trust_env=False, base_url=a.url
    ) as client:
        client.fetch_token(f"{a.url}/oauth2/token", grant_type="client_credentials")
        assert client.get("/orders").status_code == 200
        token = client.token["access_token"]

    assert status(b, token) == 200
    signing_key = jwt.PyJWKClient(f"{b.url}/.well-known/jwks.json").get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        signing_key,
        algorithms=["EdDSA"],
        audience="https://api.portico.test",
        issuer=ISSUER,
    )
    assert claims["sub"] == "acme/billing"
    assert jwks_kids(a) == jwks_kids(b)


def test_a_revocation_through_one_process_is_enforced_by_the_other(
    processes: list[PorticoProcess],
) -> None:
    a, b = processes
    token = fetch_token(a)
    assert status(b, token) == 200  # verified and cached by b

    with OAuth2Client("billing-app", BILLING_SECRET, trust_env=False) as client:
        assert client.revoke_token(f"{a.url}/oauth2/revoke", token=token).status_code == 200

    assert status(a, token) == 401
    # b polls the store twice a second: the revocation reaches it well within the timeout.
    wait_for(lambda: status(b, token) == 401, timeout=5, what="process b to refuse the token")


def test_rotate_key_reaches_every_running_process(processes: list[PorticoProcess]) -> None:
    a, b = processes
    old_token = fetch_token(a)
    (old_kid,) = jwks_kids(a)

    result = subprocess.run(
        [str(PORTICO), "oauth", "rotate-key", "-c", str(a.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for process in (a, b):
        wait_for(
            lambda p=process: jwt.get_unverified_header(fetch_token(p))["kid"] != old_kid,
            timeout=5,
            what="the new signing key",
        )
        assert old_kid in jwks_kids(process) and len(jwks_kids(process)) == 2
        assert status(process, old_token) == 200
        assert status(process, fetch_token(process)) == 200

    listing = subprocess.run(
        [str(PORTICO), "oauth", "keys", "-c", str(a.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "signing" in listing and "retired" in listing and old_kid in listing
