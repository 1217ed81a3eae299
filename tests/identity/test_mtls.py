"""Client certificates (mTLS) over real TLS connections to the gateway's HTTPS listener.

A throwaway CA issues the server certificate and the client certificates; another CA issues a
certificate the gateway must not trust. Clients are httpx (with an ``ssl`` context holding the
client certificate) and, where the handshake itself is under test, plain ``ssl`` sockets.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.gateway import RunningGateway, check_problem, running_gateway
from tests.support.pki import CertificateAuthority, Issued, client_context
from tests.support.upstreams import Upstream

from portico.assembly import build_runtime, load_config_text
from portico.config.errors import ConfigError
from portico.config.loader import load_config_text as load_config_text_unchecked
from portico.config.model import TLSListener
from portico.gateway.tls import server_ssl_context

UNAUTHORIZED = "https://portico.dev/problems/unauthorized"
INVALID_CREDENTIALS = "https://portico.dev/problems/invalid-credentials"


@dataclass(frozen=True)
class PKI:
    ca: CertificateAuthority
    other_ca: CertificateAuthority
    server: Issued
    billing: Issued
    """Mapped to acme/billing by its fingerprint."""
    shipping: Issued
    """Mapped to acme/shipping by its subject."""
    stranger: Issued
    """Issued by the trusted CA, mapped to no consumer."""
    intruder: Issued
    """Issued by another CA, with the same subject as ``billing``."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(directory, "Portico Test CA")
    other_ca = CertificateAuthority(directory, "Other CA")
    return PKI(
        ca=ca,
        other_ca=other_ca,
        server=ca.issue_server(),
        billing=ca.issue_client("billing"),
        shipping=ca.issue_client("shipping"),
        stranger=ca.issue_client("stranger"),
        intruder=other_ca.issue_client("billing"),
    )


def openssl_fingerprint(issued: Issued) -> str:
    """The fingerprint as ``openssl x509 -fingerprint -sha256`` prints it: AB:CD:..."""
    digest = issued.sha256.upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def tls_config(pki: PKI, upstream: Upstream, client_certificate: str, **tls: Any) -> dict[str, Any]:
    return {
        "gateway": {
            "tls": {
                "listen": "127.0.0.1:0",
                "certificate": str(pki.server.cert_path),
                "private_key": str(pki.server.key_path),
                "client_ca": str(pki.ca.cert_path),
                "client_certificate": client_certificate,
                **tls,
            }
        },
        "services": {"main": {"targets": [upstream.url]}},
        "routes": [
            {
                "name": "orders",
                "match": {"path": "/orders/{rest:path}"},
                "service": "main",
                "policies": [{"type": "auth", "methods": ["mtls"]}],
            }
        ],
        "tenants": {
            "acme": {
                "consumers": {
                    "billing": {
                        "scopes": ["orders:read"],
                        "certificates": [{"sha256_fingerprint": openssl_fingerprint(pki.billing)}],
                    },
                    "shipping": {
                        "scopes": ["orders:ship"],
                        "certificates": [{"subject": "CN=shipping,O=Acme"}],
                    },
                }
            }
        },
    }


@dataclass
class TLSGateway:
    gateway: RunningGateway
    upstream: Upstream
    pki: PKI

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.gateway.gateway.tls_port}"

    def client(self, identity: Issued | None, **versions: ssl.TLSVersion) -> httpx.Client:
        context = client_context(self.pki.ca, identity, **versions)
        return httpx.Client(base_url=self.url, verify=context, trust_env=False, timeout=15)

    def get(self, identity: Issued | None, path: str = "/orders/1") -> httpx.Response:
        with self.client(identity) as http:
            return http.get(path)

    def handshake(self, context: ssl.SSLContext) -> str:
        """Connect, complete a TLS handshake and send one request; the first response line."""
        port = self.gateway.gateway.tls_port
        with (
            socket.create_connection(("127.0.0.1", port), timeout=15) as sock,
            context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"GET /orders/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return tls.recv(65536).decode("latin-1").partition("\r\n")[0]


StartTLS = Callable[..., TLSGateway]


@pytest.fixture
def start_tls(tmp_path: Path, pki: PKI) -> Iterator[StartTLS]:
    with contextlib.ExitStack() as stack:
        count = 0

        def start(client_certificate: str = "required", **tls: Any) -> TLSGateway:
            nonlocal count
            count += 1
            upstream = Upstream("mtls")
            stack.callback(upstream.close)
            directory = tmp_path / f"gateway-{count}"
            directory.mkdir()
            config = tls_config(pki, upstream, client_certificate, **tls)
            gateway = stack.enter_context(running_gateway(directory, config))
            return TLSGateway(gateway, upstream, pki)

        yield start


def upstream_saw(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    return {k.lower(): v for k, v in response.json()["headers"]}


def check_refused_certificate(response: httpx.Response) -> None:
    check_problem(response, 401, INVALID_CREDENTIALS)
    assert response.headers.get_list("www-authenticate") == [
        'MutualTLS realm="portico", error="invalid_certificate"'
    ]


# -- mapped certificates -----------------------------------------------------------------------


def test_certificate_mapped_by_fingerprint_calls_as_its_consumer(start_tls: StartTLS) -> None:
    tls = start_tls()

    headers = upstream_saw(tls.get(tls.pki.billing))

    assert headers["x-portico-consumer"] == "acme/billing"
    assert headers["x-portico-tenant"] == "acme"
    assert headers["x-portico-scopes"] == "orders:read"
    assert headers["x-portico-auth-method"] == "mtls"
    assert headers["x-forwarded-proto"] == "https"


def test_certificate_mapped_by_subject_calls_as_its_consumer(start_tls: StartTLS) -> None:
    tls = start_tls()

    headers = upstream_saw(tls.get(tls.pki.shipping))

    assert headers["x-portico-consumer"] == "acme/shipping"


def test_every_request_of_a_keep_alive_connection_is_the_certificate_consumer(
    start_tls: StartTLS,
) -> None:
    tls = start_tls()
    with tls.client(tls.pki.billing) as http:
        consumers = {upstream_saw(http.get(f"/orders/{n}"))["x-portico-consumer"] for n in range(5)}

    assert consumers == {"acme/billing"}
    assert tls.upstream.count == 5


def test_identity_headers_sent_by_the_client_are_replaced(start_tls: StartTLS) -> None:
    tls = start_tls()
    with tls.client(tls.pki.billing) as http:
        response = http.get("/orders/1", headers={"X-Portico-Consumer": "acme/shipping"})

    assert upstream_saw(response)["x-portico-consumer"] == "acme/billing"


# -- refused -----------------------------------------------------------------------------------


def test_valid_certificate_mapped_to_no_consumer_is_refused(start_tls: StartTLS) -> None:
    tls = start_tls()

    check_refused_certificate(tls.get(tls.pki.stranger))
    assert tls.upstream.count == 0


@pytest.mark.parametrize("mode", ["required", "optional"])
def test_certificate_from_another_ca_is_refused_at_the_handshake(
    start_tls: StartTLS, mode: str
) -> None:
    tls = start_tls(mode)
    # TLS 1.2: the client learns of the refusal during the handshake itself.
    tls12 = client_context(tls.pki.ca, tls.pki.intruder, maximum_version=ssl.TLSVersion.TLSv1_2)

    with pytest.raises(ssl.SSLError):
        tls.handshake(tls12)
    # TLS 1.3: the client's side of the handshake ends first; the server closes without a reply.
    with pytest.raises(httpx.TransportError):
        tls.get(tls.pki.intruder)
    assert tls.upstream.count == 0


def test_connection_without_certificate_is_refused_when_certificates_are_required(
    start_tls: StartTLS,
) -> None:
    tls = start_tls("required")
    tls12 = client_context(tls.pki.ca, None, maximum_version=ssl.TLSVersion.TLSv1_2)

    with pytest.raises(ssl.SSLError):
        tls.handshake(tls12)
    with pytest.raises(httpx.TransportError):
        tls.get(None)
    assert tls.upstream.count == 0


def test_without_certificate_an_optional_listener_answers_401_with_the_mtls_challenge(
    start_tls: StartTLS,
) -> None:
    tls = start_tls("optional")

    response = tls.get(None)

    check_problem(response, 401, UNAUTHORIZED)
    assert response.headers.get_list("www-authenticate") == ['MutualTLS realm="portico"']
    assert upstream_saw(tls.get(tls.pki.billing))["x-portico-consumer"] == "acme/billing"


def test_plain_http_listener_has_no_client_certificate(start_tls: StartTLS) -> None:
    tls = start_tls("optional")
    with tls.gateway.client() as http:
        response = http.get("/orders/1")

    check_problem(response, 401, UNAUTHORIZED)
    assert response.headers.get_list("www-authenticate") == ['MutualTLS realm="portico"']


# -- protocol versions -------------------------------------------------------------------------


@pytest.mark.parametrize(("min_version", "expected"), [("1.2", "TLSv1_2"), ("1.3", "TLSv1_3")])
def test_listener_context_has_the_configured_minimum_version(
    pki: PKI, min_version: str, expected: str
) -> None:
    settings = TLSListener(
        certificate=str(pki.server.cert_path),
        private_key=str(pki.server.key_path),
        min_version=min_version,
    )

    assert server_ssl_context(settings).minimum_version == ssl.TLSVersion[expected]


def test_tls_1_2_is_accepted(start_tls: StartTLS) -> None:
    tls = start_tls()
    context = client_context(tls.pki.ca, tls.pki.billing, maximum_version=ssl.TLSVersion.TLSv1_2)

    assert tls.handshake(context) == "HTTP/1.1 200 OK"


def test_tls_1_2_is_refused_when_the_listener_requires_1_3(start_tls: StartTLS) -> None:
    tls = start_tls(min_version="1.3")
    context = client_context(tls.pki.ca, tls.pki.billing, maximum_version=ssl.TLSVersion.TLSv1_2)

    with pytest.raises(ssl.SSLError):
        tls.handshake(context)
    assert tls.handshake(client_context(tls.pki.ca, tls.pki.billing)) == "HTTP/1.1 200 OK"


def _tls11_client(pki: PKI) -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = client_context(
            pki.ca,
            pki.billing,
            minimum_version=ssl.TLSVersion.TLSv1_1,
            maximum_version=ssl.TLSVersion.TLSv1_1,
        )
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def _speaks_tls11(pki: PKI) -> bool:
    """Whether this OpenSSL can complete a TLS 1.1 handshake at all (with a server allowing it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.minimum_version = ssl.TLSVersion.TLSv1_1
    server.set_ciphers("DEFAULT:@SECLEVEL=0")
    server.load_cert_chain(pki.server.cert_path, pki.server.key_path)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def accept() -> None:
            with (
                contextlib.suppress(OSError),
                listener.accept()[0] as conn,
                server.wrap_socket(conn, server_side=True),
            ):
                pass

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(listener.getsockname(), timeout=10) as sock,
                _tls11_client(pki).wrap_socket(sock, server_hostname="127.0.0.1") as tls,
            ):
                return tls.version() == "TLSv1.1"
        except ssl.SSLError:
            return False
        finally:
            thread.join(timeout=10)


def test_tls_1_1_is_refused(start_tls: StartTLS, pki: PKI) -> None:
    if not _speaks_tls11(pki):
        pytest.skip("this OpenSSL cannot speak TLS 1.1 at all; the minimum version test covers it")
    tls = start_tls()

    with pytest.raises(ssl.SSLError):
        tls.handshake(_tls11_client(pki))
    assert tls.upstream.count == 0


# -- configuration -----------------------------------------------------------------------------


def test_route_accepting_mtls_needs_a_listener_asking_for_certificates() -> None:
    config = {
        "services": {"main": {"targets": ["http://127.0.0.1:9"]}},
        "routes": [
            {
                "name": "orders",
                "match": {"path": "/orders"},
                "service": "main",
                "policies": [{"type": "auth", "methods": ["mtls"]}],
            }
        ],
    }
    # Refused when the config is loaded (`portico check`, `serve`, a reload), at the method.
    with pytest.raises(ConfigError) as refused:
        load_config_text(json.dumps(config), "portico.yaml")
    [issue] = refused.value.issues
    assert issue.path == "routes[0].policies[0].methods[0]"
    assert "does not ask for client certificates" in issue.message

    # A runtime built from a config loaded without the capabilities' checks still refuses.
    loaded = load_config_text_unchecked(json.dumps(config), "portico.yaml")
    with pytest.raises(ValueError, match="does not ask for client certificates"):
        build_runtime(loaded)


@pytest.mark.parametrize(
    ("certificate", "message"),
    [
        pytest.param({"sha256_fingerprint": "abcd"}, "64 hex digits", id="short-fingerprint"),
        pytest.param({"subject": "not a dn"}, "RFC 4514", id="bad-subject"),
        pytest.param({}, "either sha256_fingerprint or subject", id="neither"),
        pytest.param(
            {"sha256_fingerprint": "ab" * 32, "subject": "CN=x"},
            "either sha256_fingerprint or subject",
            id="both",
        ),
    ],
)
def test_invalid_certificate_mapping_is_a_config_error(
    certificate: dict[str, str], message: str
) -> None:
    text = json.dumps(
        {"tenants": {"acme": {"consumers": {"billing": {"certificates": [certificate]}}}}}
    )

    with pytest.raises(ConfigError) as refused:
        load_config_text(text, "portico.yaml")

    issue = refused.value.issues[0]
    assert message in issue.message
    assert issue.path.startswith("tenants.acme.consumers.billing.certificates[0]")


def test_certificate_mapped_to_two_consumers_is_a_config_error() -> None:
    same_subject = [{"subject": "CN=billing,O=Acme"}]
    # The same distinguished name, written with other spacing and attribute-name case.
    same_again = [{"subject": "cn=billing, o=Acme"}]
    text = json.dumps(
        {
            "tenants": {
                "acme": {"consumers": {"billing": {"certificates": same_subject}}},
                "globex": {"consumers": {"billing": {"certificates": same_again}}},
            }
        }
    )

    with pytest.raises(ConfigError) as refused:
        load_config_text(text, "portico.yaml")

    assert [issue.path for issue in refused.value.issues] == [
        "tenants.globex.consumers.billing.certificates[0]"
    ], refused.value.issues
    assert "already used by acme/billing" in refused.value.issues[0].message
