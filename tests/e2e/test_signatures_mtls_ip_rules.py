"""Signed requests, client certificates and IP rules through a real ``portico serve`` process.

One process serves plain HTTP and HTTPS (client certificates optional). A route accepts either a
certificate or a signature; another is closed to the loopback address by IP rules. Clients are
httpx with the ``http-message-signatures`` library and an ``ssl`` context holding a certificate.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.gateway import PorticoProcess, check_problem, wait_for
from tests.support.pki import CertificateAuthority, Issued, client_context
from tests.support.signing import Signer
from tests.support.upstreams import Upstream

HTTPS_BANNER = re.compile(r"gateway listening on https://127\.0\.0\.1:(\d+)")


class Deployment:
    def __init__(self, process: PorticoProcess, ca: CertificateAuthority) -> None:
        self.process = process
        self.ca = ca
        port = wait_for(self._https_port, what="the HTTPS listener")
        self.https_url = f"https://127.0.0.1:{port}"

    def _https_port(self) -> str | None:
        found = HTTPS_BANNER.search(self.process.log())
        return found.group(1) if found else None

    def https(self, identity: Issued | None = None) -> httpx.Client:
        context = client_context(self.ca, identity)
        return httpx.Client(base_url=self.https_url, verify=context, trust_env=False, timeout=30)


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.generate("ecdsa-p256-sha256")


@pytest.fixture
def pki(tmp_path: Path) -> tuple[CertificateAuthority, Issued, Issued, Issued]:
    ca = CertificateAuthority(tmp_path / "pki")
    return ca, ca.issue_server(), ca.issue_client("billing"), ca.issue_client("stranger")


@pytest.fixture
def deployment(
    tmp_path: Path, signer: Signer, pki: tuple[CertificateAuthority, Issued, Issued, Issued]
) -> Iterator[Deployment]:
    ca, server, billing, _ = pki
    upstream = Upstream("orders")
    config: dict[str, Any] = {
        "gateway": {
            "tls": {
                "listen": "127.0.0.1:0",
                "certificate": str(server.cert_path),
                "private_key": str(server.key_path),
                "client_ca": str(ca.cert_path),
                "client_certificate": "optional",
            }
        },
        "services": {"orders": {"targets": [upstream.url]}},
        "routes": [
            {
                "name": "partner-orders",
                "match": {"path": "/partner/orders/{rest:path}"},
                "service": "orders",
                "policies": [{"type": "auth", "methods": ["mtls", "signature"]}],
            },
            {
                "name": "office-only",
                "match": {"path": "/office/{rest:path}"},
                "service": "orders",
                "policies": [{"type": "ip-rules", "allow": ["10.0.0.0/8", "2001:db8::/32"]}],
            },
        ],
        "tenants": {
            "acme": {
                "consumers": {
                    "billing": {
                        "scopes": ["orders:read"],
                        "certificates": [{"sha256_fingerprint": billing.sha256}],
                        "signature_keys": [signer.entry],
                    }
                }
            }
        },
    }
    process = PorticoProcess(tmp_path, config)
    try:
        yield Deployment(process, ca)
    finally:
        process.stop()
        upstream.close()


def consumer_seen_upstream(response: httpx.Response) -> str | None:
    assert response.status_code == 200, response.text
    headers = {k.lower(): v for k, v in response.json()["headers"]}
    return headers.get("x-portico-consumer")


def test_client_certificate_and_signature_each_authenticate_the_partner(
    deployment: Deployment, signer: Signer, pki: tuple[CertificateAuthority, Issued, Issued, Issued]
) -> None:
    _, _, billing, stranger = pki
    with deployment.https(billing) as http:
        assert consumer_seen_upstream(http.get("/partner/orders/1")) == "acme/billing"
    with deployment.https() as http:
        signed = signer.sign(http.build_request("GET", "/partner/orders/1?expand=lines"))
        assert consumer_seen_upstream(http.send(signed)) == "acme/billing"
        check_problem(http.send(signed), 401, "https://portico.dev/problems/invalid-credentials")
    with deployment.https(stranger) as http:
        refused = http.get("/partner/orders/1")
    check_problem(refused, 401, "https://portico.dev/problems/invalid-credentials")
    assert refused.headers["www-authenticate"].startswith("MutualTLS")


def test_signed_request_over_plain_http_is_accepted_and_its_replay_refused(
    deployment: Deployment, signer: Signer
) -> None:
    with deployment.process.client() as http:
        signed = signer.sign(
            http.build_request("GET", "/partner/orders/2"),
            components=("@method", "@authority", "@target-uri"),
        )
        assert consumer_seen_upstream(http.send(signed)) == "acme/billing"
        replayed = http.send(signed)

    check_problem(replayed, 401, "https://portico.dev/problems/invalid-credentials")
    assert replayed.headers["www-authenticate"] == (
        'Signature realm="portico", error="invalid_signature"'
    )


def test_ip_rules_refuse_the_loopback_client_even_with_a_forged_forwarded_for(
    deployment: Deployment,
) -> None:
    with deployment.process.client() as http:
        response = http.get("/office/reports", headers={"X-Forwarded-For": "10.1.2.3"})

    check_problem(response, 403, "https://portico.dev/problems/ip-forbidden")
