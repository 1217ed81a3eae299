"""The SSRF guard and the sender over real sockets on this machine only: a test resolver maps
names to addresses, local listeners count every connection they accept, so a refusal is shown to
have opened none; what is allowed reaches a real receiver, over TLS with the name's certificate
and SNI; redirects are not followed; Retry-After, timeouts, refused connections and huge
answers come back as results."""

from __future__ import annotations

import contextlib
import email.utils
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import standardwebhooks
from tests.support.pki import CertificateAuthority, client_context, server_context
from tests.support.upstreams import Upstream, pattern

from portico.events.sender import ERROR_CLASSES, Sender, parse_retry_after
from portico.events.signing import Signer, generate_secret, webhook_headers
from portico.events.ssrf import REFUSAL_REASONS, Destinations, RefusedDestination

pytestmark = pytest.mark.anyio

BODY = b'{"type":"invoice.paid","data":{"id":"inv_1"}}'
PUBLIC = "93.184.215.14"  # a globally routable address; no test connects to it


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class MapResolver:
    """Answers from a table; each name's answers may change from one look-up to the next."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        answers = self.table.get(host)
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers.pop(0) if len(answers) > 1 else answers[0]


class Canned:
    """A listener that answers every request with the same bytes and closes; counts accepts."""

    def __init__(self, response: bytes, host: str = "127.0.0.1") -> None:
        self.response = response
        self.accepted = 0
        self.requests: list[bytes] = []
        self._server = socket.create_server((host, 0))
        self.port: int = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data)
                conn.sendall(self.response)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self._server.close()
        self._thread.join(timeout=5)


@pytest.fixture
def listener() -> Iterator[Upstream]:
    upstream = Upstream("local")
    yield upstream
    upstream.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _signed() -> list[tuple[str, str]]:
    return webhook_headers("msg_1", int(time.time()), BODY, [Signer.from_secret(SECRET)])


SECRET = generate_secret()
LOCAL = Destinations(allow_http=True, allow_networks=["127.0.0.0/8"])


# --- refused at send time, without a connection -------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("127.0.0.1", "loopback-address"),
        ("10.1.2.3", "private-address"),
        ("169.254.169.254", "metadata-address"),
        ("::1", "loopback-address"),
        ("::ffff:127.0.0.1", "loopback-address"),
        ("0.0.0.0", "unspecified-address"),
        ("100.64.0.1", "private-address"),
        ("fd00:ec2::254", "metadata-address"),
        ("64:ff9b::7f00:1", "loopback-address"),
        ("2002:7f00:1::1", "loopback-address"),
    ],
)
async def test_a_name_resolving_inward_is_refused_at_send_time_without_connecting(
    listener: Upstream, answer: str, reason: str
) -> None:
    resolver = MapResolver({"hook.test": [[answer]]})
    sender = Sender(Destinations(allow_http=True), resolver)
    try:
        result = await sender.send(f"http://hook.test:{listener.port}/in", _signed(), BODY, 5)
    finally:
        await sender.close()
    assert (result.status, result.error) == (None, reason)
    assert resolver.calls == ["hook.test"]
    assert listener.accepted == 0


async def test_a_rebinding_name_is_refused_at_send_time_after_passing_registration(
    listener: Upstream,
) -> None:
    destinations = Destinations()
    resolver = MapResolver({"rebind.test": [[PUBLIC], ["127.0.0.1"]]})
    destinations.check_url(f"https://rebind.test:{listener.port}/hook")
    sender = Sender(destinations, resolver)
    try:
        assert await sender.resolver.addresses("rebind.test", listener.port) == [PUBLIC]
        result = await sender.send(f"https://rebind.test:{listener.port}/hook", [], BODY, 5)
    finally:
        await sender.close()
    assert result.error == "loopback-address"
    assert listener.accepted == 0


async def test_the_connection_goes_to_the_address_checked_not_to_a_second_answer() -> None:
    checked = Upstream("checked")
    other_server = socket.create_server(("127.0.0.2", checked.port), reuse_port=False)
    try:
        # Only 127.0.0.1 is allowed; a second look-up would answer 127.0.0.2, where a listener
        # on the same port waits.
        resolver = MapResolver({"flip.test": [["127.0.0.1"], ["127.0.0.2"]]})
        sender = Sender(Destinations(True, ["127.0.0.1/32"]), resolver)
        try:
            result = await sender.send(f"http://flip.test:{checked.port}/x", [], BODY, 5)
        finally:
            await sender.close()
        assert result.status == 200 and result.error is None
        assert resolver.calls == ["flip.test"]
        assert checked.count == 1
        other_server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            other_server.accept()
    finally:
        other_server.close()
        checked.close()


async def test_an_answer_mixing_public_and_internal_addresses_is_refused_whole(
    listener: Upstream,
) -> None:
    resolver = MapResolver({"mixed.test": [[PUBLIC, "127.0.0.1"]]})
    sender = Sender(Destinations(allow_http=True), resolver)
    try:
        result = await sender.send(f"http://mixed.test:{listener.port}/", [], BODY, 5)
    finally:
        await sender.close()
    assert result.error == "loopback-address" and listener.accepted == 0


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "0.0.0.0", "169.254.169.254", "127.1"]
)
async def test_ip_literals_are_refused_without_resolving(listener: Upstream, host: str) -> None:
    resolver = MapResolver({})
    sender = Sender(Destinations(allow_http=True), resolver)
    try:
        result = await sender.send(f"http://{host}:{listener.port}/", [], BODY, 5)
    finally:
        await sender.close()
    assert result.error in REFUSAL_REASONS and result.status is None
    assert resolver.calls == [] and listener.accepted == 0


async def test_a_name_without_address_is_unresolvable() -> None:
    sender = Sender(Destinations(), MapResolver({"empty.test": [[]]}))
    try:
        assert (await sender.send("https://empty.test/", [], BODY, 5)).error == "unresolvable"
        assert (await sender.send("https://nowhere.test/", [], BODY, 5)).error == "unresolvable"
    finally:
        await sender.close()


async def test_the_system_resolver_is_guarded_too(listener: Upstream) -> None:
    sender = Sender(Destinations(allow_http=True))
    try:
        result = await sender.send(f"http://localhost:{listener.port}/", [], BODY, 5)
    finally:
        await sender.close()
    assert result.error == "loopback-address" and listener.accepted == 0


async def test_http_is_refused_unless_allowed_before_any_lookup(listener: Upstream) -> None:
    resolver = MapResolver({"hook.test": [[PUBLIC]]})
    sender = Sender(Destinations(), resolver)
    try:
        result = await sender.send(f"http://hook.test:{listener.port}/", [], BODY, 5)
    finally:
        await sender.close()
    assert result.error == "scheme-not-allowed" and resolver.calls == []


# --- allowed, and what the receiver sees --------------------------------------------------------


async def test_an_allowlisted_network_reaches_a_real_receiver_with_the_webhook(
    listener: Upstream,
) -> None:
    resolver = MapResolver({"receiver.test": [["127.0.0.1"]]})
    sender = Sender(LOCAL, resolver)
    headers = _signed()
    try:
        first = await sender.send(
            f"http://receiver.test:{listener.port}/hook?a=1", headers, BODY, 5
        )
        second = await sender.send(f"http://receiver.test:{listener.port}/hook", headers, BODY, 5)
    finally:
        await sender.close()
    assert first.error is None and first.status == 200 and second.status == 200
    assert first.latency > 0
    echo = json.loads(first.body)
    assert echo["method"] == "POST" and echo["target"] == "/hook?a=1"
    received = {name.lower(): value for name, value in echo["headers"]}
    assert received["host"] == f"receiver.test:{listener.port}"
    assert received["content-type"] == "application/json"
    assert received["user-agent"].startswith("Portico-Webhooks/")
    assert "cookie" not in received and "accept-encoding" not in received
    assert echo["body"].encode() == BODY
    # The receiver's own library accepts what arrived.
    standardwebhooks.Webhook(SECRET).verify(echo["body"], received)
    # Keep-alive: both attempts on one connection, resolved and checked once.
    assert listener.accepted == 1 and resolver.calls == ["receiver.test"]
    assert ("content-type", "application/json") in first.headers


async def test_https_keeps_the_name_for_sni_and_the_certificate(tmp_path: Path) -> None:
    authority = CertificateAuthority(tmp_path)
    receiver = Upstream("tls", tls=server_context(authority.issue_server(("hooks.example.test",))))
    resolver = MapResolver({"hooks.example.test": [["127.0.0.1"]], "other.test": [["127.0.0.1"]]})
    sender = Sender(
        Destinations(allow_networks=["127.0.0.0/8"]),
        resolver,
        ssl_context=client_context(authority),
    )
    try:
        good = await sender.send(f"https://hooks.example.test:{receiver.port}/", [], BODY, 5)
        wrong_name = await sender.send(f"https://other.test:{receiver.port}/", [], BODY, 5)
    finally:
        await sender.close()
        receiver.close()
    assert good.status == 200 and good.error is None
    assert receiver.server_names[0] == "hooks.example.test"
    assert (wrong_name.status, wrong_name.error) == (None, "tls-error")


async def test_an_untrusted_certificate_is_a_tls_error(tmp_path: Path) -> None:
    authority = CertificateAuthority(tmp_path)
    receiver = Upstream("tls", tls=server_context(authority.issue_server(("hooks.example.test",))))
    sender = Sender(
        Destinations(allow_networks=["127.0.0.0/8"]),
        MapResolver({"hooks.example.test": [["127.0.0.1"]]}),
    )
    try:
        result = await sender.send(f"https://hooks.example.test:{receiver.port}/", [], BODY, 5)
    finally:
        await sender.close()
        receiver.close()
    assert result.error == "tls-error" and receiver.count == 0


async def test_a_redirect_is_a_status_and_its_target_sees_nothing(listener: Upstream) -> None:
    redirect = Canned(
        b"HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:%d/stolen\r\n"
        b"content-length: 0\r\nconnection: close\r\n\r\n" % listener.port
    )
    sender = Sender(LOCAL, MapResolver({}))
    try:
        result = await sender.send(f"http://127.0.0.1:{redirect.port}/", [], BODY, 5)
    finally:
        await sender.close()
        redirect.close()
    assert result.status == 302 and result.error is None
    assert ("location", f"http://127.0.0.1:{listener.port}/stolen") in result.headers
    assert listener.accepted == 0


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [("120", 120, 120), ("0", 0, 0), ("in a while", None, None), ("-5", None, None)],
)
async def test_retry_after_in_delay_seconds(
    value: str, low: float | None, high: float | None
) -> None:
    receiver = Canned(
        b"HTTP/1.1 503 Busy\r\nretry-after: %s\r\ncontent-length: 4\r\n\r\nbusy" % value.encode()
    )
    sender = Sender(LOCAL, MapResolver({}))
    try:
        result = await sender.send(f"http://127.0.0.1:{receiver.port}/", [], BODY, 5)
    finally:
        await sender.close()
        receiver.close()
    assert result.status == 503 and result.body == b"busy"
    if low is None:
        assert result.retry_after is None
    else:
        assert result.retry_after is not None and low <= result.retry_after <= (high or low)


async def test_retry_after_as_an_http_date() -> None:
    later = email.utils.formatdate(time.time() + 3600, usegmt=True)
    receiver = Canned(
        b"HTTP/1.1 429 Slow down\r\nRetry-After: %s\r\ncontent-length: 0\r\n\r\n" % later.encode()
    )
    sender = Sender(LOCAL, MapResolver({}))
    try:
        result = await sender.send(f"http://127.0.0.1:{receiver.port}/", [], BODY, 5)
    finally:
        await sender.close()
        receiver.close()
    assert result.status == 429
    assert result.retry_after is not None and 3500 < result.retry_after <= 3600
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now) == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 90, usegmt=True), now) == 90.0
    assert parse_retry_after("Wed, 32 Foo 2015 07:28:00 GMT", now) is None


async def test_a_slow_receiver_is_a_timeout(listener: Upstream) -> None:
    sender = Sender(LOCAL, MapResolver({}))
    try:
        result = await sender.send(f"http://127.0.0.1:{listener.port}/slow?head=5", [], BODY, 0.3)
    finally:
        await sender.close()
    assert (result.status, result.error) == (None, "timeout")
    assert result.error in ERROR_CLASSES


async def test_a_closed_port_is_connection_refused() -> None:
    sender = Sender(LOCAL, MapResolver({}))
    try:
        result = await sender.send(f"http://127.0.0.1:{_closed_port()}/", [], BODY, 5)
    finally:
        await sender.close()
    assert (result.status, result.error) == (None, "connection-refused")


async def test_an_answer_that_is_not_http_is_a_protocol_error(listener: Upstream) -> None:
    sender = Sender(LOCAL, MapResolver({}))
    try:
        result = await sender.send(f"http://127.0.0.1:{listener.port}/garbage", [], BODY, 5)
    finally:
        await sender.close()
    assert result.status is None and result.error in {"protocol-error", "connection-error"}


async def test_a_huge_answer_is_truncated_and_does_not_stall(listener: Upstream) -> None:
    sender = Sender(LOCAL, MapResolver({}), response_body_limit=1000)
    try:
        huge = await sender.send(f"http://127.0.0.1:{listener.port}/bytes/1000000000", [], BODY, 30)
        after = await sender.send(f"http://127.0.0.1:{listener.port}/", [], BODY, 5)
    finally:
        await sender.close()
    assert huge.status == 200 and huge.error is None
    assert huge.body == next(pattern(1000))[:1000]
    assert after.status == 200
    # The cut connection was not reused for the next attempt.
    assert listener.accepted == 2


async def test_the_sender_writes_framing_and_host_itself() -> None:
    sender = Sender(LOCAL, MapResolver({}))
    try:
        for name in ("Host", "content-length", "Transfer-Encoding", "Connection"):
            with pytest.raises(ValueError):
                await sender.send("http://127.0.0.1:9/", [(name, "x")], BODY, 5)
        with pytest.raises(ValueError):
            await sender.send("http://127.0.0.1:9/", [("x-a", "1\r\nx-b: 2")], BODY, 5)
    finally:
        await sender.close()


# --- the rules themselves -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://example.com/", "scheme-not-allowed"),
        ("ftp://example.com/", "scheme-not-allowed"),
        ("//example.com/", "scheme-not-allowed"),
        ("https://user:pw@example.com/", "userinfo-not-allowed"),
        ("https://example.com@127.0.0.1/", "userinfo-not-allowed"),
        ("https://example.com:0/", "bad-port"),
        ("https://example.com:65536/", "bad-port"),
        ("https://example.com:/", "bad-port"),
        ("https:///hook", "invalid-url"),
        ("https://exa mple.com/", "invalid-url"),
        ("https://example.com/\r\nx: y", "invalid-url"),
        ("https://exa\tmple.com/", "invalid-url"),
        ("https://bücher.example/", "invalid-url"),
        ("https://2130706433/", "invalid-url"),
        ("https://0x7f.0.0.1/", "invalid-url"),
        ("https://127.1/", "invalid-url"),
        ("https://127.0.0.1./", "invalid-url"),
        ("https://[::1]/", "loopback-address"),
        ("https://[::ffff:7f00:1]/", "loopback-address"),
        ("https://169.254.169.254/latest/meta-data/", "metadata-address"),
        ("https://[fe80::1]/", "link-local-address"),
    ],
)
def test_check_url_refuses(url: str, reason: str) -> None:
    with pytest.raises(RefusedDestination) as caught:
        Destinations().check_url(url)
    assert caught.value.reason == reason
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hook",
        "HTTPS://Example.COM:8443/a?b=c",
        "https://xn--bcher-kva.example/",
        "https://8.8.8.8/",
        "https://[2606:4700::1111]/",
    ],
)
def test_check_url_accepts_public_https(url: str) -> None:
    Destinations().check_url(url)
    Destinations(allow_http=True).check_url(
        url.replace("https", "http", 1).replace("HTTPS", "http")
    )


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("127.0.0.1", "loopback-address"),
        ("10.0.0.1", "private-address"),
        ("172.31.255.255", "private-address"),
        ("192.168.1.1", "private-address"),
        ("100.64.0.1", "private-address"),
        ("fc00::1", "private-address"),
        ("fd12:3456::1", "private-address"),
        ("169.254.1.1", "link-local-address"),
        ("fe80::1", "link-local-address"),
        ("169.254.169.254", "metadata-address"),
        ("fd00:ec2::254", "metadata-address"),
        ("100.100.100.200", "metadata-address"),
        ("224.0.0.1", "multicast-address"),
        ("ff02::1", "multicast-address"),
        ("0.0.0.0", "unspecified-address"),
        ("::", "unspecified-address"),
        ("255.255.255.255", "reserved-address"),
        ("240.0.0.1", "reserved-address"),
        ("192.0.2.1", "reserved-address"),
        ("198.18.0.1", "reserved-address"),
        ("2001:db8::1", "reserved-address"),
        ("::ffff:10.0.0.1", "private-address"),
        ("::ffff:169.254.169.254", "metadata-address"),
        ("::ffff:0:127.0.0.1", "loopback-address"),
        ("::127.0.0.1", "loopback-address"),
        ("64:ff9b::a9fe:a9fe", "metadata-address"),
        ("64:ff9b:1::a00:1", "private-address"),
        ("2002:a00:1::", "private-address"),
        ("not an address", "unresolvable"),
    ],
)
def test_check_address_refuses(ip: str, reason: str) -> None:
    with pytest.raises(RefusedDestination) as caught:
        Destinations().check_address(ip)
    assert caught.value.reason == reason


@pytest.mark.parametrize("ip", ["8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1"])
def test_check_address_accepts_public_addresses(ip: str) -> None:
    Destinations().check_address(ip)


def test_the_allowlist_opens_networks_but_not_the_metadata_service_inside_them() -> None:
    allowing = Destinations(allow_networks=["10.0.0.0/8", "169.254.0.0/16", "100.64.0.0/10"])
    allowing.check_address("10.1.2.3")
    allowing.check_address("::ffff:10.1.2.3")
    allowing.check_address("169.254.10.10")
    for metadata in ("169.254.169.254", "100.100.100.200", "::ffff:169.254.169.254"):
        with pytest.raises(RefusedDestination) as caught:
            allowing.check_address(metadata)
        assert caught.value.reason == "metadata-address"
    Destinations(allow_networks=["169.254.169.254/32"]).check_address("169.254.169.254")
    with pytest.raises(RefusedDestination):
        allowing.check_address("192.168.0.1")
    with pytest.raises(ValueError, match="not a network"):
        Destinations(allow_networks=["10.0.0.0/33"])
