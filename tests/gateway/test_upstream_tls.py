"""TLS to the upstream: verified targets, SNI, client certificates (mTLS to the backend), and
every way around verification refused, over real TLS backends and a real gateway.

A throwaway CA issues the backends' certificates and the gateway's client certificate; another
CA issues look-alikes the gateway must not trust. The backends are :class:`Upstream` servers
speaking HTTPS with Python's ``ssl``; they record the SNI of each handshake, the client
certificate they were shown and each handshake they refused.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import socket
import ssl
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.gateway.conftest import StartGateway
from tests.support.gateway import (
    PorticoProcess,
    RunningGateway,
    check_problem,
    proxy_config,
    running_gateway,
    wait_for,
)
from tests.support.pki import CertificateAuthority, Issued, server_context
from tests.support.upstreams import Upstream, echoed_header, pattern, pattern_crc32

UNAVAILABLE = "https://portico.dev/problems/upstream-unavailable"
NO_HEALTHY = "https://portico.dev/problems/no-healthy-upstream"
LOGGER = "portico.gateway"
TLS13 = {"minimum_version": ssl.TLSVersion.TLSv1_3}
TLS12 = {"maximum_version": ssl.TLSVersion.TLSv1_2}


@dataclass(frozen=True)
class PKI:
    ca: CertificateAuthority
    other_ca: CertificateAuthority
    server: Issued
    """For localhost, 127.0.0.1 and ::1, by the trusted CA."""
    orders: Issued
    """For orders.internal only, by the trusted CA."""
    impostor: Issued
    """For localhost, 127.0.0.1 and ::1, by the other CA."""
    expired: Issued
    """For localhost and 127.0.0.1, by the trusted CA, expired an hour ago."""
    partner: Issued
    """A client certificate of the trusted CA naming localhost, as a partner of an mTLS
    listener may hold: a client certificate, not a server's."""
    gateway: Issued
    """The gateway's client certificate (CN=portico-gateway), by the trusted CA."""
    stranger: Issued
    """A client certificate with the same name, by the other CA."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(directory, "Backend CA")
    other_ca = CertificateAuthority(directory, "Other CA")
    return PKI(
        ca=ca,
        other_ca=other_ca,
        server=ca.issue_server(),
        orders=ca.issue_server(("orders.internal",)),
        impostor=other_ca.issue_server(),
        expired=ca.issue_server(("localhost", "127.0.0.1"), expired=True),
        partner=ca.issue_client("localhost", dns_names=("localhost",)),
        gateway=ca.issue_client("portico-gateway"),
        stranger=other_ca.issue_client("portico-gateway"),
    )


MakeBackend = Callable[..., Upstream]


@pytest.fixture
def backend() -> Iterator[MakeBackend]:
    """``backend(identity, client_ca=None, name="tls", **versions)``: an HTTPS :class:`Upstream`
    presenting ``identity``, requiring a client certificate of ``client_ca`` if given."""
    made: list[Upstream] = []

    def make(
        identity: Issued,
        client_ca: CertificateAuthority | None = None,
        name: str = "tls",
        **versions: ssl.TLSVersion,
    ) -> Upstream:
        upstream = Upstream(name, tls=server_context(identity, client_ca, **versions))
        made.append(upstream)
        return upstream

    yield make
    for upstream in made:
        upstream.close()


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=LOGGER)
    return caplog


def messages(records: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in records.records if r.name.startswith(LOGGER)]


def logged(records: pytest.LogCaptureFixture, words: str) -> str:
    """The first data-plane message holding ``words`` (waiting for it: probes log on their own
    schedule)."""
    found = wait_for(
        lambda: [m for m in messages(records) if words in m], what=f"a log line with {words!r}"
    )
    return found[0]


def tls_proxy(*targets: str, tls: dict[str, Any] | None = None, **settings: Any) -> dict[str, Any]:
    config = proxy_config(*targets, **settings)
    if tls is not None:
        config["services"]["main"]["tls"] = tls
    return config


def trusting(pki: PKI, **tls: Any) -> dict[str, Any]:
    return {"trusted_ca": str(pki.ca.cert_path), **tls}


def with_client_certificate(pki: PKI, identity: Issued | None = None) -> dict[str, Any]:
    identity = identity or pki.gateway
    return trusting(pki, certificate=str(identity.cert_path), private_key=str(identity.key_path))


def refused_without_leaks(
    response: httpx.Response, upstream: Upstream, *words: str
) -> dict[str, Any]:
    """A 502 upstream-unavailable whose body names neither the target nor anything of TLS."""
    secrets = (str(upstream.port), "127.0.0.1", "localhost", "certificate", "TLS", "ssl", *words)
    return check_problem(response, 502, UNAVAILABLE, secrets=secrets)


def refused(server: Upstream, handshakes: int = 1) -> None:
    """The backend refused ``handshakes`` handshakes (its thread records them in its own time,
    maybe after the gateway has answered)."""
    wait_for(lambda: len(server.refused_handshakes) >= handshakes, what="the refused handshakes")
    assert len(server.refused_handshakes) == handshakes, server.refused_handshakes


def errors_of(gateway: RunningGateway) -> dict[str, int]:
    return gateway.call(lambda: dict(gateway.gateway.runtime.services["main"].stats.errors))


# -- verification ---------------------------------------------------------------------------


def test_a_target_whose_certificate_chains_to_trusted_ca_is_reached_by_its_name(
    pki: PKI, backend: MakeBackend, start_gateway: StartGateway
) -> None:
    server = backend(pki.server)
    gateway = start_gateway(tls_proxy(server.url_for("localhost"), tls=trusting(pki)))

    with gateway.client() as http:
        response = http.get("/orders/7")

    assert response.status_code == 200, response.text
    assert response.json()["path"] == "/orders/7"
    assert echoed_header(response, "host") == [f"localhost:{server.port}"]
    assert server.server_names == ["localhost"]


def test_an_https_target_is_verified_against_the_system_store_without_tls_settings(
    pki: PKI, backend: MakeBackend, start_gateway: StartGateway, records: pytest.LogCaptureFixture
) -> None:
    """No ``tls`` at all: still verified, and a private CA is not in the system's store."""
    server = backend(pki.server)
    gateway = start_gateway(tls_proxy(server.url_for("localhost"), retries=0))

    with gateway.client() as http:
        refused_without_leaks(http.get("/orders/7"), server)

    assert server.count == 0
    assert "TLS: the target's certificate did not verify" in logged(records, "answered 502")


def test_a_certificate_from_another_ca_with_the_right_name_is_refused(
    pki: PKI, backend: MakeBackend, start_gateway: StartGateway, records: pytest.LogCaptureFixture
) -> None:
    server = backend(pki.impostor)
    gateway = start_gateway(tls_proxy(server.url_for("localhost"), tls=trusting(pki), retries=0))

    with gateway.client() as http:
        refused_without_leaks(http.get("/orders/7"), server, "Other CA")

    assert server.count == 0, "no request reached the impostor"
    line = logged(records, "answered 502")
    assert "TLS: the target's certificate did not verify" in line, line
    assert errors_of(gateway) == {"tls": 1}


@pytest.mark.parametrize(
    ("identity", "host", "why"),
    [
        ("orders", "localhost", "Hostname mismatch"),
        ("orders", "127.0.0.1", "IP address mismatch"),
        ("expired", "localhost", "certificate has expired"),
        ("partner", "localhost", "unsuitable certificate purpose"),
    ],
)
def test_a_certificate_for_another_name_out_of_date_or_not_a_servers_is_refused(
    identity: str,
    host: str,
    why: str,
    pki: PKI,
    backend: MakeBackend,
    start_gateway: StartGateway,
    records: pytest.LogCaptureFixture,
) -> None:
    server = backend(getattr(pki, identity))
    gateway = start_gateway(tls_proxy(server.url_for(host), tls=trusting(pki), retries=0))

    with gateway.client() as http:
        refused_without_leaks(http.get("/orders/7"), server, "orders.internal")

    assert server.count == 0
    assert why in logged(records, "answered 502")


def test_an_https_target_that_answers_in_plain_http_never_gets_the_request_in_clear(
    pki: PKI, start_gateway: StartGateway
) -> None:
    """No downgrade: the gateway's first bytes are a TLS ClientHello, and it gives up there."""
    received: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def plain_server() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5)
                received.append(conn.recv(65536))
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")

    thread = threading.Thread(target=plain_server, daemon=True)
    thread.start()
    try:
        config = tls_proxy(f"https://127.0.0.1:{port}", tls=trusting(pki), retries=0)
        gateway = start_gateway(config)
        with gateway.client() as http:
            check_problem(http.get("/secret?token=s3cr3t"), 502, UNAVAILABLE)
        thread.join(timeout=10)
    finally:
        listener.close()
    assert received and received[0][:2] == b"\x16\x03", received  # a TLS handshake record
    assert b"s3cr3t" not in received[0] and b"GET" not in received[0]


# -- SNI and server_name ---------------------------------------------------------------------


def test_an_ip_address_target_is_verified_by_its_address_and_sends_no_sni(
    pki: PKI, backend: MakeBackend, start_gateway: StartGateway
) -> None:
    server = backend(pki.server)  # its certificate names 127.0.0.1
    gateway = start_gateway(tls_proxy(server.url, tls=trusting(pki)))

    with gateway.client() as http:
        assert http.get("/orders/7").status_code == 200

    assert server.server_names == [None], "an IP address is never sent as SNI (RFC 6066 §3)"


def test_server_name_is_sent_as_sni_and_checked_while_host_stays_the_targets(
    pki: PKI, backend: MakeBackend, start_gateway: StartGateway
) -> None:
    server = backend(pki.orders)  # valid for orders.internal only, which does not resolve
    gateway = start_gateway(tls_proxy(server.url, tls=trusting(pki, server_name="Orders.Internal")))

    with gateway.client() as http:
        response = http.get("/orders/7")

    assert response.status_code == 200, response.text
    assert server.server_names == ["orders.internal"]
    assert echoed_header(response, "host") == [f"127.0.0.1:{server.port}"]


def test_server_name_does_not_turn_the_name_check_off(
    pki: PKI, backend: MakeBackend, start_gateway: StartGateway, records: pytest.LogCaptureFixture
) -> None:
    server = backend(pki.orders)
    config = tls_proxy(server.url, tls=trusting(pki, server_name="billing.internal"), retries=0)
    gateway = start_gateway(config)

    with gateway.client() as http:
        refused_without_leaks(http.get("/orders/7"), server, "billing.internal")

    assert server.server_names == ["billing.internal"]
    assert server.count == 0
    assert "Hostname mismatch" in logged(records, "answered 502")


# -- client certificates (mTLS to the backend) ------------------------------------------------


@pytest.mark.parametrize("versions", [TLS12, TLS13], ids=["tls1.2", "tls1.3"])
def test_a_backend_requiring_a_client_certificate_accepts_the_gateways(
    versions: dict[str, ssl.TLSVersion], pki: PKI, backend: MakeBackend, start_gateway: StartGateway
) -> None:
    server = backend(pki.server, client_ca=pki.ca, **versions)
    gateway = start_gateway(
        tls_proxy(server.url_for("localhost"), tls=with_client_certificate(pki))
    )

    with gateway.client() as http:
        response = http.post("/orders", json={"qty": 2})

    assert response.status_code == 200, response.text
    assert response.json()["body"] == '{"qty":2}'
    assert server.client_subjects == ["portico-gateway"]


@pytest.mark.parametrize("versions", [TLS12, TLS13], ids=["tls1.2", "tls1.3"])
@pytest.mark.parametrize("presented", ["none", "stranger"])
def test_a_backend_requiring_a_client_certificate_refuses_a_gateway_without_a_trusted_one(
    versions: dict[str, ssl.TLSVersion],
    presented: str,
    pki: PKI,
    backend: MakeBackend,
    start_gateway: StartGateway,
    records: pytest.LogCaptureFixture,
) -> None:
    server = backend(pki.server, client_ca=pki.ca, **versions)
    tls = trusting(pki) if presented == "none" else with_client_certificate(pki, pki.stranger)
    gateway = start_gateway(tls_proxy(server.url_for("localhost"), tls=tls, retries=0))

    with gateway.client() as http:
        refused_without_leaks(http.get("/orders/7"), server)

    assert server.count == 0 and server.client_subjects == []
    refused(server)
    line = logged(records, "answered 502")
    if versions is TLS12:
        assert "TLS: the target" in line, line
        assert errors_of(gateway) == {"tls": 1}
    else:
        # The refusal comes after the request was written, and the backend's reset of a
        # connection with unread bytes may overtake its alert: either is an honest account.
        assert "TLS: the target" in line or "connection reset" in line, line
        assert errors_of(gateway) in ({"tls": 1}, {"closed": 1})


@pytest.mark.parametrize(
    ("versions", "method", "body"),
    [(TLS12, "POST", b"one order"), (TLS13, "GET", b"")],
    ids=["tls1.2-a-post", "tls1.3-a-get"],
)
def test_a_refused_handshake_is_retried_on_another_target(
    versions: dict[str, ssl.TLSVersion],
    method: str,
    body: bytes,
    pki: PKI,
    backend: MakeBackend,
    start_gateway: StartGateway,
) -> None:
    """With TLS 1.2 the refusal comes while connecting, nothing sent: retried whatever the method,
    as a refused connection. With TLS 1.3 it comes once the request is written: retried when it
    is replayable, as a connection closed before any response."""
    picky = backend(pki.server, client_ca=pki.ca, name="picky", **versions)
    open_ = backend(pki.server, name="open", **versions)
    gateway = start_gateway(
        tls_proxy(
            picky.url_for("localhost"),
            open_.url_for("localhost"),
            tls=trusting(pki),
            retries=1,
            circuit_breaker=None,
        )
    )

    with gateway.client() as http:
        response = http.request(method, "/orders", content=body)  # the first pick is picky

    assert response.status_code == 200, response.text
    assert response.json()["upstream"] == "open"
    assert response.json()["body"] == body.decode()
    assert picky.count == 0
    refused(picky)
    assert sum(errors_of(gateway).values()) == 1
    retries = gateway.call(lambda: gateway.gateway.runtime.services["main"].stats.retries)
    assert retries == 1


def test_a_post_refused_by_a_tls13_target_after_it_was_written_is_not_replayed(
    pki: PKI, backend: MakeBackend, start_gateway: StartGateway
) -> None:
    """Its body streamed into the refused connection: 502, as for any connection lost once a
    POST was sent; the target read none of it."""
    picky = backend(pki.server, client_ca=pki.ca, name="picky", **TLS13)
    open_ = backend(pki.server, name="open", **TLS13)
    gateway = start_gateway(
        tls_proxy(
            picky.url_for("localhost"),
            open_.url_for("localhost"),
            tls=trusting(pki),
            retries=1,
            circuit_breaker=None,
        )
    )

    with gateway.client() as http:
        refused_without_leaks(http.post("/orders", content=b"one order"), picky)

    assert picky.count == 0 and open_.count == 0
    refused(picky)


def test_tls_failures_open_the_circuit_like_connect_failures(
    pki: PKI, backend: MakeBackend, start_gateway: StartGateway
) -> None:
    server = backend(pki.impostor)
    gateway = start_gateway(
        tls_proxy(
            server.url_for("localhost"),
            tls=trusting(pki),
            retries=0,
            circuit_breaker={"failure_threshold": 2, "reset_timeout": "60s"},
        )
    )

    with gateway.client() as http:
        for _ in range(2):
            refused_without_leaks(http.get("/orders/7"), server)
        check_problem(http.get("/orders/7"), 503, NO_HEALTHY)

    refused(server, 2)  # the open circuit made no third handshake


# -- verify: false ----------------------------------------------------------------------------


def test_verify_false_reaches_a_target_no_ca_vouches_for(
    pki: PKI, backend: MakeBackend, start_gateway: StartGateway, records: pytest.LogCaptureFixture
) -> None:
    server = backend(pki.impostor)
    gateway = start_gateway(
        tls_proxy(server.url_for("localhost"), tls={"verify": False, "server_name": "api.test"})
    )

    with gateway.client() as http:
        assert http.get("/orders/7").status_code == 200

    assert server.server_names == ["api.test"], "SNI is still sent"
    assert "service 'main': the certificates of its targets are not verified" in logged(
        records, "not verified"
    )


# -- streaming and keep-alive over TLS --------------------------------------------------------


def test_bodies_stream_both_ways_and_one_tls_connection_is_reused(
    pki: PKI, backend: MakeBackend, start_gateway: StartGateway
) -> None:
    server = backend(pki.server, client_ca=pki.ca)
    gateway = start_gateway(
        tls_proxy(server.url_for("localhost"), tls=with_client_certificate(pki))
    )
    size = 8 * 1024 * 1024

    with gateway.client() as http:
        for framing in ("length", "chunked"):
            with http.stream("GET", f"/bytes/{size}?framing={framing}") as response:
                assert response.status_code == 200
                crc, length = 0, 0
                for chunk in response.iter_bytes():
                    crc = zlib.crc32(chunk, crc)
                    length += len(chunk)
            assert (length, crc) == (size, pattern_crc32(size)), framing
        uploaded = http.post("/upload", content=pattern(size))
        assert uploaded.json() == {"length": size, "crc32": pattern_crc32(size)}
        for _ in range(5):
            assert http.get("/orders/7").status_code == 200

    assert server.accepted == 1 and server.handshakes == 1, "one TLS connection, kept alive"


# -- health checks ------------------------------------------------------------------------------

ACTIVE = {"interval": "100ms", "timeout": "2s", "unhealthy_threshold": 1, "healthy_threshold": 1}


def test_health_probes_present_the_client_certificate_and_verify_the_target(
    pki: PKI, backend: MakeBackend, start_gateway: StartGateway
) -> None:
    server = backend(pki.server, client_ca=pki.ca)
    gateway = start_gateway(
        tls_proxy(
            server.url_for("localhost"),
            tls=with_client_certificate(pki),
            health_check={"active": ACTIVE},
        )
    )

    wait_for(lambda: server.health_probes >= 2, what="two probes over TLS")
    with gateway.client() as http:
        assert http.get("/orders/7").status_code == 200
    assert server.refused_handshakes == []
    assert set(server.client_subjects) == {"portico-gateway"}
    assert set(server.server_names) == {"localhost"}


def test_a_target_failing_verification_is_taken_out_of_rotation_by_its_probes(
    pki: PKI, backend: MakeBackend, start_gateway: StartGateway, records: pytest.LogCaptureFixture
) -> None:
    server = backend(pki.impostor)
    gateway = start_gateway(
        tls_proxy(
            server.url_for("localhost"),
            tls=trusting(pki),
            health_check={"active": ACTIVE},
        )
    )

    line = logged(records, "out of rotation after 1 failed health probe")
    assert "TLS: the target's certificate did not verify" in line, line
    with gateway.client() as http:
        check_problem(http.get("/orders/7"), 503, NO_HEALTHY)
    assert server.health_probes == 0 and server.count == 0


# -- relative files and reloads -----------------------------------------------------------------


def test_files_are_relative_to_the_config_files_directory(
    pki: PKI, backend: MakeBackend, tmp_path: Path
) -> None:
    server = backend(pki.server, client_ca=pki.ca)
    directory = tmp_path / "conf"
    (directory / "tls").mkdir(parents=True)
    shutil.copy(pki.ca.cert_path, directory / "tls" / "ca.pem")
    shutil.copy(pki.gateway.cert_path, directory / "tls" / "client.pem")
    shutil.copy(pki.gateway.key_path, directory / "tls" / "client.key")
    tls = {
        "trusted_ca": "tls/ca.pem",
        "certificate": "tls/client.pem",
        "private_key": "tls/client.key",
    }

    config = tls_proxy(server.url_for("localhost"), tls=tls)
    with running_gateway(directory, config) as gateway, gateway.client() as http:
        assert http.get("/orders/7").status_code == 200


def test_a_reload_takes_new_tls_files_for_new_connections_and_refuses_broken_ones(
    pki: PKI, backend: MakeBackend, tmp_path: Path
) -> None:
    server = backend(pki.server)
    ca_file = tmp_path / "backend-ca.pem"
    shutil.copy(pki.other_ca.cert_path, ca_file)  # the wrong CA, to begin with
    config = tls_proxy(
        server.url_for("localhost"),
        tls={"trusted_ca": str(ca_file)},
        retries=0,
        circuit_breaker=None,
    )
    process = PorticoProcess(tmp_path, config)
    try:
        with process.client() as http:
            check_problem(http.get("/orders/7"), 502, UNAVAILABLE)

            # The same path, new contents (a renewed bundle), then SIGHUP.
            shutil.copy(pki.ca.cert_path, ca_file)
            process.signal(signal.SIGHUP)
            wait_for(lambda: "config reloaded" in process.log(), what="the reload")
            assert http.get("/orders/7").status_code == 200

            ca_file.write_text("not a certificate\n")
            process.signal(signal.SIGHUP)
            wait_for(lambda: "config reload refused" in process.log(), what="the refusal")
            assert http.get("/orders/7").status_code == 200, "the previous snapshot serves"
        log = process.log()
        assert "services.main.tls.trusted_ca: " in log
        assert "is not a PEM file of CA certificates" in log
        assert "Traceback" not in log
    finally:
        process.stop()
