"""Secrets at rest with real ``portico serve`` processes: the secrets key rotated while a gateway
issues tokens, and gateway processes of one server sharing the key Portico made.

Tokens come from the token endpoint over real sockets and PyJWT verifies every one against the
JWKS the gateway publishes, before, during and after the rotation.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from tests.support.gateway import PorticoProcess, run_portico, wait_for
from tests.support.oauth import BILLING_SECRET
from tests.support.upstreams import Upstream

from portico.identity.oauth.state import POLL_INTERVAL
from portico.store.secrets.keys import generate_key_text, parse_key

ISSUER = "https://auth.portico.test"
AUDIENCE = "https://api.portico.test"


def config(upstream: Upstream, database: Path) -> dict[str, Any]:
    return {
        "gateway": {"access_log": True},
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
        "identity": {"oauth": {"issuer": ISSUER, "audience": AUDIENCE}},
    }


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream("orders")
    yield server
    server.close()


@pytest.fixture(autouse=True)
def no_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The processes started here find their key where a newcomer's would: beside the database."""
    monkeypatch.delenv("PORTICO_SECRETS_KEY", raising=False)


def fetch_token(process: PorticoProcess) -> str:
    """A token from the token endpoint, on a connection of its own."""
    with process.client(headers={"Connection": "close"}) as client:
        response = client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials", "scope": "orders:read"},
            auth=("billing-app", BILLING_SECRET),
        )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def verified(process: PorticoProcess, token: str) -> dict[str, Any]:
    """The token's claims, verified by PyJWT with a key of the JWKS the gateway publishes."""
    key = jwt.PyJWKClient(f"{process.url}/.well-known/jwks.json").get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER
    )
    return claims


def signing_kid(process: PorticoProcess) -> str:
    return str(jwt.get_unverified_header(fetch_token(process))["kid"])


def portico(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = run_portico(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result


def key_ids(key_file: Path) -> list[str]:
    return [
        parse_key(line).id
        for line in key_file.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def stored_by_key(config_path: Path) -> dict[str, int]:
    """``portico secrets status``: key id -> secrets it seals."""
    result = portico("secrets", "status", "-c", str(config_path), cwd=config_path.parent)
    return {line.split()[0]: int(line.split()[-1]) for line in result.stdout.splitlines()[1:]}


class TokenClient:
    """Asks for a token again and again, until stopped, keeping every one and every failure."""

    def __init__(self, process: PorticoProcess) -> None:
        self.process = process
        self.tokens: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="token-client")

    def __enter__(self) -> TokenClient:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tokens.append(fetch_token(self.process))
            except (AssertionError, httpx.HTTPError) as exc:
                self.failures.append(str(exc))


def test_the_secrets_key_is_rotated_while_a_gateway_issues_tokens(
    tmp_path: Path, upstream: Upstream
) -> None:
    process = PorticoProcess(tmp_path, config(upstream, tmp_path / "portico.db"))
    path = process.config_path
    key_file = tmp_path / "portico-secrets.key"
    try:
        # The first start made the key file, said so, and sealed the first signing key with it.
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert f"made the secrets key file {key_file}" in process.log()
        (old,) = key_ids(key_file)
        before = fetch_token(process)
        assert verified(process, before)["sub"] == "acme/billing"
        first_kid = jwt.get_unverified_header(before)["kid"]

        with TokenClient(process) as client:
            portico("secrets", "generate-key", "--file", str(key_file), cwd=tmp_path)
            new = key_ids(key_file)[0]
            wait_for(lambda: len(client.tokens) > 2, timeout=30, what="tokens under two keys")
            portico("secrets", "rotate-key", "-c", str(path), cwd=tmp_path)
            assert stored_by_key(path) == {new: 1, old: 0}
            # A new signing key, sealed with the new secrets key: the gateway reloads every
            # signing key from the store, opening what the rotation sealed again.
            portico("oauth", "rotate-key", "-c", str(path), cwd=tmp_path)
            second_kid = wait_for(
                lambda: (kid := signing_kid(process)) != first_kid and kid,
                timeout=10,
                what="the gateway to sign with the second signing key",
            )
            # The old secrets key goes: the gateway reads the file again, and opens everything
            # with the new key alone.
            key_file.write_text(
                "".join(f"{line}\n" for line in key_file.read_text().splitlines()[:4])
            )
            assert key_ids(key_file) == [new]
            portico("oauth", "rotate-key", "-c", str(path), cwd=tmp_path)
            wait_for(
                lambda: signing_kid(process) not in (first_kid, second_kid),
                timeout=10,
                what="the gateway to sign with the third signing key",
            )
            count = len(client.tokens)
            wait_for(lambda: len(client.tokens) > count, timeout=30, what="tokens after it all")

        assert client.failures == []
        kids = {jwt.get_unverified_header(token)["kid"] for token in client.tokens}
        assert first_kid in kids and len(kids) == 3
        for token in [before, *client.tokens]:
            assert verified(process, token)["sub"] == "acme/billing"
        assert stored_by_key(path) == {new: 3}
        assert "could not refresh" not in process.log()
    finally:
        process.stop()


def test_gateway_processes_of_one_server_share_the_key_portico_made(
    tmp_path: Path, upstream: Upstream
) -> None:
    process = PorticoProcess(
        tmp_path, config(upstream, tmp_path / "portico.db"), ("--workers", "2")
    )
    try:
        tokens: list[str] = []

        def every_process_issued() -> bool:
            tokens.extend(fetch_token(process) for _ in range(10))
            answered = {
                record["pid"]
                for line in process.log().splitlines()
                if line.startswith("{")
                and (record := json.loads(line)).get("logger") == "portico.access"
                and record.get("path") == "/oauth2/token"
            }
            return len(answered) == 2

        wait_for(every_process_issued, timeout=60, interval=0, what="both processes to issue")

        key_file = tmp_path / "portico-secrets.key"
        assert len(key_ids(key_file)) == 1  # one key, however many processes started
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert [p.name for p in tmp_path.iterdir() if "secrets" in p.name] == [key_file.name]
        assert {jwt.get_unverified_header(token)["kid"] for token in tokens} == {
            jwt.get_unverified_header(tokens[0])["kid"]
        }
        for token in tokens:
            assert verified(process, token)["sub"] == "acme/billing"
        assert stored_by_key(process.config_path) == {key_ids(key_file)[0]: 1}
        assert os.stat(key_file).st_nlink == 1  # the temporary it was made from is gone
    finally:
        process.stop()


def test_a_gateway_without_the_new_key_keeps_serving_and_revoking_then_a_restart_mends_it(
    tmp_path: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the old key only (``PORTICO_SECRETS_KEY``) while the store moves to a new one, a
    gateway says so once, in one line; it goes on signing with the key it holds, and enforces
    the revocations another process makes. Restarted with both keys, it is current again."""
    old, new = generate_key_text(), generate_key_text()
    both = f"{new},{old}"
    served = config(upstream, tmp_path / "portico.db")
    for name in ("lagging", "current", "restarted"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("PORTICO_SECRETS_KEY", old)
    lagging = PorticoProcess(tmp_path / "lagging", served)
    path = lagging.config_path
    current: PorticoProcess | None = None
    try:
        before, revoked = fetch_token(lagging), fetch_token(lagging)
        for command in (("secrets", "rotate-key"), ("oauth", "rotate-key")):
            result = run_portico(
                *command, "-c", str(path), cwd=tmp_path, env={"PORTICO_SECRETS_KEY": both}
            )
            assert result.returncode == 0, result.stderr

        # It cannot open what is sealed with the new key now, and says so.
        wait_for(lambda: "could not refresh" in lagging.log(), timeout=10, what="the refusal")
        refusal = next(line for line in lagging.log().splitlines() if "could not refresh" in line)
        assert f"sealed with the secrets key {parse_key(new).id}, which is not configured" in (
            refusal
        )
        assert "Traceback" not in lagging.log()
        # It goes on with the signing key it holds: tokens it issues verify as before.
        during = fetch_token(lagging)
        assert jwt.get_unverified_header(during)["kid"] == jwt.get_unverified_header(before)["kid"]
        for token in (before, during):
            assert verified(lagging, token)["sub"] == "acme/billing"
        # A token revoked through a process that has the key is refused by this one too.
        assert status_of(lagging, revoked) == 200
        monkeypatch.setenv("PORTICO_SECRETS_KEY", both)
        current = PorticoProcess(tmp_path / "current", served)
        with current.client() as client:
            response = client.post(
                "/oauth2/revoke", data={"token": revoked}, auth=("billing-app", BILLING_SECRET)
            )
        assert response.status_code == 200
        wait_for(lambda: status_of(lagging, revoked) == 401, timeout=10, what="the revocation")
        assert status_of(lagging, before) == 200
        time.sleep(4 * POLL_INTERVAL)  # polls that fail the same way again
        assert lagging.log().count("could not refresh") == 1  # said once, not at every poll
    finally:
        lagging.stop()
        if current is not None:
            current.stop()

    restarted = PorticoProcess(tmp_path / "restarted", served)
    try:
        after = fetch_token(restarted)
        assert jwt.get_unverified_header(after)["kid"] != jwt.get_unverified_header(before)["kid"]
        for token in (before, during, after):
            assert verified(restarted, token)["sub"] == "acme/billing"
        assert status_of(restarted, revoked) == 401
        assert "could not refresh" not in restarted.log()
    finally:
        restarted.stop()


def status_of(process: PorticoProcess, token: str) -> int:
    """What a route protected by the ``oauth`` method answers ``token``."""
    with process.client(headers={"Connection": "close"}) as client:
        return client.get("/orders", headers={"authorization": f"Bearer {token}"}).status_code
