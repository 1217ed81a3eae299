"""Signed requests (RFC 9421 with RFC 9530 Content-Digest) through a real gateway.

Requests are signed by the ``http-message-signatures`` library on ``httpx.Request`` objects, sent
over real sockets to a gateway whose route has the ``auth`` policy with ``methods: [signature]``,
and proxied to a real upstream that reports what it received.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import http_sf
import httpx
import pytest
from http_message_signatures import ContentDigest
from tests.support.gateway import RunningGateway, check_problem, running_gateway
from tests.support.signing import (
    SHA512Digest,
    Signer,
    consumer_config,
)
from tests.support.upstreams import Upstream

from portico.assembly import build_runtime, load_config, load_config_text
from portico.config.errors import ConfigError
from portico.gateway.exchange import Exchange
from portico.gateway.headers import Headers
from portico.identity.authn import MethodSettings, Rejected
from portico.identity.context import BuildContext, Extensions
from portico.identity.signatures import NonceStore, NonceStoreFull, build_authenticator

UNAUTHORIZED = "https://portico.dev/problems/unauthorized"
INVALID_CREDENTIALS = "https://portico.dev/problems/invalid-credentials"
INVALID = 'Signature realm="portico", error="invalid_signature"'
EMPTY_DIGEST = "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"


class SignedGateway:
    def __init__(self, gateway: RunningGateway, upstream: Upstream) -> None:
        self.gateway = gateway
        self.upstream = upstream
        self.http = gateway.client()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Request:
        return self.http.build_request(method, path, **kwargs)

    def send(self, request: httpx.Request) -> httpx.Response:
        return self.http.send(request)

    def resend(
        self,
        signed: httpx.Request,
        *,
        method: str | None = None,
        path: str | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send the signed request again, with some part of it changed."""
        fields = [(k, v) for k, v in signed.headers.multi_items() if k != "content-length"]
        for name, value in (headers or {}).items():
            fields = [(k, v) for k, v in fields if k != name] + [(name, value)]
        url = signed.url if path is None else signed.url.join(path)
        return self.http.request(
            method or signed.method,
            url,
            content=signed.content if content is None else content,
            headers=fields,
        )


StartSigned = Callable[..., SignedGateway]


@pytest.fixture
def start_signed(tmp_path: Path) -> Iterator[StartSigned]:
    """Start an upstream and a gateway whose route accepts the given signers' keys."""
    with contextlib.ExitStack() as stack:
        count = 0

        def start(*signers: Signer, **options: Any) -> SignedGateway:
            nonlocal count
            count += 1
            upstream = Upstream("signed")
            stack.callback(upstream.close)
            policy: dict[str, Any] = {"type": "auth", "methods": ["signature"]}
            if options:
                policy["signature"] = options
            config = {
                "services": {"main": {"targets": [upstream.url]}},
                "routes": [
                    {
                        "name": "orders",
                        "match": {"path": "/orders/{rest:path}"},
                        "service": "main",
                        "policies": [policy],
                    }
                ],
                "tenants": consumer_config(*signers),
            }
            directory = tmp_path / f"gateway-{count}"
            directory.mkdir()
            gateway = stack.enter_context(running_gateway(directory, config))
            signed = SignedGateway(gateway, upstream)
            stack.callback(signed.http.close)
            return signed

        yield start


@pytest.fixture(scope="module")
def ed25519() -> Signer:
    return Signer.generate("ed25519")


def upstream_saw(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    echoed: dict[str, Any] = response.json()
    return echoed


def header(echoed: dict[str, Any], name: str) -> str | None:
    return next((v for k, v in echoed["headers"] if k.lower() == name), None)


class CheckRefused(Protocol):
    def __call__(self, response: httpx.Response, because: str) -> None: ...


@pytest.fixture
def check_refused(caplog: pytest.LogCaptureFixture) -> CheckRefused:
    """Check a 401 for an invalid signature, and why it was refused (the gateway logs the reason
    at debug level; the client is told nothing more than the challenge)."""
    caplog.set_level(logging.DEBUG, logger="portico.auth")

    def check(response: httpx.Response, because: str) -> None:
        problem = check_problem(response, 401, INVALID_CREDENTIALS)
        assert problem["title"] == "The credentials are not valid"
        assert problem["detail"] == "The credentials presented are not valid."
        assert response.headers.get_list("www-authenticate") == [INVALID]
        accept = response.headers["accept-signature"]
        assert accept.startswith('sig1=("@method" "@authority" "@path"')
        reasons = [r.getMessage() for r in caplog.records if r.name.startswith("portico.auth")]
        assert any(because in reason for reason in reasons), reasons
        caplog.clear()

    return check


# -- accepted ----------------------------------------------------------------------------------


def test_request_signed_by_the_library_reaches_the_upstream_as_the_consumer(
    start_signed: StartSigned, ed25519: Signer
) -> None:
    gateway = start_signed(ed25519)
    request = ed25519.sign(gateway.request("GET", "/orders/42?expand=lines"))

    echoed = upstream_saw(gateway.send(request))

    assert echoed["target"] == "/orders/42?expand=lines"
    assert header(echoed, "x-portico-consumer") == "acme/billing"
    assert header(echoed, "x-portico-tenant") == "acme"
    assert header(echoed, "x-portico-scopes") == "orders:read"
    assert header(echoed, "x-portico-auth-method") == "signature"


@pytest.mark.parametrize(
    "algorithm", ["ed25519", "ecdsa-p256-sha256", "rsa-pss-sha512", "hmac-sha256"]
)
def test_each_algorithm_signs_a_request_with_a_body_that_is_accepted(
    start_signed: StartSigned, algorithm: str
) -> None:
    signer = Signer.generate(algorithm)
    gateway = start_signed(signer)
    body = json.dumps({"sku": "A-1", "quantity": 3}).encode()
    request = signer.sign(
        gateway.request(
            "POST", "/orders/", content=body, headers={"content-type": "application/json"}
        )
    )
    assert "content-digest" in request.headers["signature-input"]

    echoed = upstream_saw(gateway.send(request))

    assert echoed["body"] == body.decode()
    assert header(echoed, "x-portico-consumer") == "acme/billing"


def test_sha512_content_digest_is_verified_against_the_body(
    start_signed: StartSigned, ed25519: Signer, check_refused: CheckRefused
) -> None:
    gateway = start_signed(ed25519)

    def signed() -> httpx.Request:
        request = gateway.request("PUT", "/orders/7", content=b'{"state":"paid"}')
        return ed25519.sign(request, digest=SHA512Digest)

    accepted = signed()
    assert accepted.headers["content-digest"].startswith("sha-512=")
    assert gateway.send(accepted).status_code == 200
    check_refused(
        gateway.resend(signed(), content=b'{"state":"void"}'),
        because="Content-Digest does not match the message body",
    )


def test_chunked_body_is_read_whole_and_matches_its_digest(
    start_signed: StartSigned, ed25519: Signer
) -> None:
    gateway = start_signed(ed25519)
    parts = [b'{"lines": [', b'{"sku": "A-1"}', b"]}"]
    template = ed25519.sign(gateway.request("POST", "/orders/", content=b"".join(parts)))
    fields = [(k, v) for k, v in template.headers.multi_items() if k != "content-length"]
    streamed = gateway.request("POST", "/orders/", content=iter(parts), headers=fields)
    assert streamed.headers["transfer-encoding"] == "chunked"

    echoed = upstream_saw(gateway.send(streamed))

    assert echoed["body"] == b"".join(parts).decode()


def test_target_uri_may_stand_for_authority_path_and_query(
    start_signed: StartSigned, ed25519: Signer
) -> None:
    gateway = start_signed(ed25519)
    # The library's default coverage.
    request = ed25519.sign(
        gateway.request("GET", "/orders/42?page=2"),
        components=("@method", "@authority", "@target-uri"),
    )

    assert gateway.send(request).status_code == 200


def test_route_chooses_the_signature_with_its_tag_among_several(
    start_signed: StartSigned, ed25519: Signer
) -> None:
    stranger = Signer.generate("ed25519")
    gateway = start_signed(ed25519, tag="portico-partner")
    request = gateway.request("GET", "/orders/42")
    stranger.sign(request, tag="someone-else", label="other")
    ed25519.sign(request, tag="portico-partner", label="partner", append=True)

    assert gateway.send(request).status_code == 200


def test_small_clock_skew_of_the_signer_is_tolerated(
    start_signed: StartSigned, ed25519: Signer
) -> None:
    gateway = start_signed(ed25519, clock_skew="30s")
    ahead = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=10)
    request = ed25519.sign(gateway.request("GET", "/orders/42"), created=ahead)

    assert gateway.send(request).status_code == 200


def test_nonce_may_be_omitted_when_the_route_allows_it(
    start_signed: StartSigned, ed25519: Signer
) -> None:
    gateway = start_signed(ed25519, require_nonce=False)
    request = ed25519.sign(gateway.request("GET", "/orders/42"), nonce=None)

    assert gateway.send(request).status_code == 200


# -- refused -----------------------------------------------------------------------------------

DOES_NOT_VERIFY = "the signature does not verify"


@pytest.mark.parametrize(
    ("change", "because"),
    [
        pytest.param({"method": "DELETE"}, DOES_NOT_VERIFY, id="method"),
        pytest.param({"path": "/orders/43?page=2"}, DOES_NOT_VERIFY, id="path"),
        pytest.param({"path": "/orders/42?page=3"}, DOES_NOT_VERIFY, id="query"),
        pytest.param({"headers": {"x-order-state": "void"}}, DOES_NOT_VERIFY, id="covered-header"),
        pytest.param({"headers": {"host": "evil.example"}}, DOES_NOT_VERIFY, id="authority"),
        pytest.param(
            {"content": b'{"amount": 9999}'},
            "Content-Digest does not match the message body",
            id="body-vs-content-digest",
        ),
        pytest.param(
            {"content": b"", "headers": {"content-digest": EMPTY_DIGEST}},
            DOES_NOT_VERIFY,
            id="body-and-content-digest",
        ),
    ],
)
def test_signed_request_altered_after_signing_is_refused(
    start_signed: StartSigned,
    ed25519: Signer,
    check_refused: CheckRefused,
    change: dict[str, Any],
    because: str,
) -> None:
    gateway = start_signed(ed25519)
    signed = ed25519.sign(
        gateway.request(
            "POST",
            "/orders/42?page=2",
            content=b'{"amount": 10}',
            headers={"x-order-state": "open"},
        ),
        components=("@method", "@authority", "@path", "@query", "x-order-state"),
    )

    response = gateway.resend(signed, **change)

    check_refused(response, because=because)
    assert gateway.upstream.count == 0


def test_the_same_signed_request_sent_twice_is_refused_the_second_time(
    start_signed: StartSigned, ed25519: Signer, check_refused: CheckRefused
) -> None:
    gateway = start_signed(ed25519)
    signed = ed25519.sign(gateway.request("POST", "/orders/", content=b'{"sku": "A-1"}'))

    assert gateway.send(signed).status_code == 200
    check_refused(gateway.resend(signed), because="nonce already used (replay)")
    assert gateway.upstream.count == 1


def test_replay_is_refused_after_the_runtime_is_rebuilt_by_a_reload(
    tmp_path: Path, ed25519: Signer, check_refused: CheckRefused
) -> None:
    # Nonces belong to the process, not to one runtime snapshot: a reload must not forget them.
    upstream = Upstream("signed")
    config = {
        "services": {"main": {"targets": [upstream.url]}},
        "routes": [
            {
                "name": "orders",
                "match": {"path": "/orders/{rest:path}"},
                "service": "main",
                "policies": [{"type": "auth", "methods": ["signature"]}],
            }
        ],
        "tenants": consumer_config(ed25519),
    }
    try:
        with running_gateway(tmp_path, config) as gateway, gateway.client() as http:
            signed = ed25519.sign(http.build_request("GET", "/orders/42"))
            assert http.send(signed).status_code == 200
            rebuilt = build_runtime(load_config(gateway.config_path))
            gateway.call(lambda: gateway.gateway.apply(rebuilt))
            assert gateway.gateway.runtime is rebuilt
            check_refused(http.send(signed), because="nonce already used (replay)")
    finally:
        upstream.close()


@pytest.mark.parametrize(
    ("options", "age", "because"),
    [
        pytest.param({}, 400, "maximum allowable age 0:05:00", id="default-window"),
        pytest.param({"max_age": "1m"}, 120, "maximum allowable age 0:01:00", id="route-window"),
        pytest.param({}, -120, '"created" parameter is set to a time in the future', id="future"),
    ],
)
def test_signature_created_outside_the_window_is_refused(
    start_signed: StartSigned,
    ed25519: Signer,
    check_refused: CheckRefused,
    options: dict[str, Any],
    age: int,
    because: str,
) -> None:
    gateway = start_signed(ed25519, **options)
    created = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=age)
    request = ed25519.sign(gateway.request("GET", "/orders/42"), created=created)

    check_refused(gateway.send(request), because=because)


def test_expired_signature_is_refused(
    start_signed: StartSigned, ed25519: Signer, check_refused: CheckRefused
) -> None:
    gateway = start_signed(ed25519)
    now = datetime.datetime.now(datetime.UTC)
    request = gateway.request("GET", "/orders/42")
    ed25519.signer.sign(
        request,
        key_id=ed25519.keyid,
        created=now - datetime.timedelta(seconds=60),
        expires=now - datetime.timedelta(seconds=30),
        nonce=secrets.token_urlsafe(16),
        covered_component_ids=("@method", "@authority", "@path"),
    )

    check_refused(gateway.send(request), because='"expires" parameter is set to a time in the past')


def test_unknown_keyid_is_refused(
    start_signed: StartSigned, ed25519: Signer, check_refused: CheckRefused
) -> None:
    gateway = start_signed(ed25519)
    unknown = Signer.generate("ed25519", keyid="not-a-key-of-anyone")
    request = unknown.sign(gateway.request("GET", "/orders/42"))

    check_refused(gateway.send(request), because="unknown keyid 'not-a-key-of-anyone'")


@pytest.mark.parametrize("algorithm", ["ed25519", "ecdsa-p256-sha256", "hmac-sha256"])
def test_signature_made_with_another_key_under_a_known_keyid_is_refused(
    start_signed: StartSigned, check_refused: CheckRefused, algorithm: str
) -> None:
    genuine = Signer.generate(algorithm)
    impostor = Signer.generate(algorithm, keyid=genuine.keyid)
    gateway = start_signed(genuine)

    response = gateway.send(impostor.sign(gateway.request("GET", "/orders/42")))

    check_refused(response, because=f"keyid {genuine.keyid!r}")


def test_signature_naming_another_algorithm_than_the_key_is_refused(
    start_signed: StartSigned, check_refused: CheckRefused
) -> None:
    # The key's algorithm is the configured one: a signer cannot choose hmac for an ed25519 key.
    genuine = Signer.generate("ed25519")
    forged = Signer.generate("hmac-sha256", keyid=genuine.keyid)
    gateway = start_signed(genuine)

    response = gateway.send(forged.sign(gateway.request("GET", "/orders/42")))

    check_refused(response, because="Unexpected algorithm specified in the signature")


def test_signature_without_nonce_is_refused_by_default(
    start_signed: StartSigned, ed25519: Signer, check_refused: CheckRefused
) -> None:
    gateway = start_signed(ed25519)
    request = ed25519.sign(gateway.request("GET", "/orders/42"), nonce=None)

    check_refused(gateway.send(request), because="the signature has no nonce")


@pytest.mark.parametrize(
    ("path", "components", "missing"),
    [
        pytest.param("/orders/42", ("@authority", "@path"), "@method", id="no-method"),
        pytest.param("/orders/42", ("@method", "@path"), "@authority", id="no-authority"),
        pytest.param("/orders/42", ("@method", "@authority"), "@path", id="no-path"),
        pytest.param(
            "/orders/42?page=2", ("@method", "@authority", "@path"), "@query", id="no-query"
        ),
    ],
)
def test_signature_not_covering_the_request_target_is_refused(
    start_signed: StartSigned,
    ed25519: Signer,
    check_refused: CheckRefused,
    path: str,
    components: tuple[str, ...],
    missing: str,
) -> None:
    gateway = start_signed(ed25519)
    request = ed25519.sign(gateway.request("GET", path), components=components)

    check_refused(gateway.send(request), because=f"the signature does not cover {missing}")


def test_signature_must_cover_the_header_fields_the_route_requires(
    start_signed: StartSigned, ed25519: Signer, check_refused: CheckRefused
) -> None:
    gateway = start_signed(ed25519, headers=["X-Partner-Date"])
    fields = {"x-partner-date": "2026-01-01T00:00:00Z"}

    uncovered = ed25519.sign(gateway.request("GET", "/orders/42", headers=fields))
    covered = ed25519.sign(
        gateway.request("GET", "/orders/42", headers=fields),
        components=("@method", "@authority", "@path", "x-partner-date"),
    )

    check_refused(gateway.send(uncovered), because="the signature does not cover x-partner-date")
    assert gateway.send(covered).status_code == 200


def test_body_without_a_signed_content_digest_is_refused(
    start_signed: StartSigned, ed25519: Signer, check_refused: CheckRefused
) -> None:
    gateway = start_signed(ed25519)
    request = gateway.request("POST", "/orders/", content=b'{"sku": "A-1"}')
    ed25519.signer.sign(
        request,
        key_id=ed25519.keyid,
        nonce=secrets.token_urlsafe(16),
        covered_component_ids=("@method", "@authority", "@path"),
    )
    assert "content-digest" not in request.headers

    response = gateway.send(request)

    check_refused(response, because="The message body requires a signed Content-Digest")
    assert gateway.upstream.count == 0


def test_body_that_was_not_read_is_refused_rather_than_left_unverified(ed25519: Signer) -> None:
    # A route whose policies do not read the body streams it: the digest cannot be checked.
    config = load_config_text(json.dumps({"tenants": consumer_config(ed25519)}), "portico.yaml")
    context = BuildContext(config=config, route_name="orders", extensions=Extensions())
    authenticator = build_authenticator(MethodSettings("signature"), context)
    signed = ed25519.sign(httpx.Request("POST", "http://api.example/orders/", content=b"{}"))
    exchange = Exchange(
        method="POST",
        path="/orders/",
        query="",
        headers=Headers((k.lower(), v) for k, v in signed.headers.multi_items()),
        http_version="1.1",
        scheme="http",
        host="api.example",
        client_ip="127.0.0.1",
        peer_ip="127.0.0.1",
        request_id="r1",
        route=None,
        path_params={},
        upstream_path="/orders/",
        body=None,
    )

    result = authenticator.authenticate(exchange)

    assert isinstance(result, Rejected)
    assert result.reason == "the body was not read; the signature method needs it"
    assert authenticator.needs_body is True


def test_several_signatures_without_a_route_tag_are_refused(
    start_signed: StartSigned, ed25519: Signer, check_refused: CheckRefused
) -> None:
    other = Signer.generate("ed25519")
    gateway = start_signed(ed25519, other)
    request = gateway.request("GET", "/orders/42")
    ed25519.sign(request, label="first")
    other.sign(request, label="second", append=True)

    check_refused(gateway.send(request), because="several signatures and no tag to choose one")


@pytest.mark.parametrize(
    ("fields", "because"),
    [
        pytest.param(
            {"signature-input": 'sig1=("@method");keyid="x"'},
            "Signature-Input and Signature must both be present",
            id="input-only",
        ),
        pytest.param(
            {"signature": "sig1=:AAAA:"},
            "Signature-Input and Signature must both be present",
            id="signature-only",
        ),
        pytest.param(
            {"signature-input": "sig1=not a list", "signature": "sig1=:AAAA:"},
            "malformed Signature-Input",
            id="malformed",
        ),
        pytest.param(
            {"signature-input": 'sig1=("@method");created=1', "signature": "sig1=:AAAA:"},
            "the signature has no keyid",
            id="no-keyid",
        ),
    ],
)
def test_incomplete_or_malformed_signature_fields_are_refused(
    start_signed: StartSigned,
    ed25519: Signer,
    check_refused: CheckRefused,
    fields: dict[str, str],
    because: str,
) -> None:
    gateway = start_signed(ed25519)

    check_refused(gateway.http.get("/orders/42", headers=fields), because=because)


def test_unsigned_request_is_challenged_to_sign(start_signed: StartSigned, ed25519: Signer) -> None:
    gateway = start_signed(ed25519)

    response = gateway.http.get("/orders/42")

    check_problem(response, 401, UNAUTHORIZED)
    assert response.headers.get_list("www-authenticate") == ['Signature realm="portico"']
    # RFC 9421 §5.1: the challenge also says what to sign.
    assert response.headers["accept-signature"].startswith('sig1=("@method" "@authority" "@path"')


def sign_as_asked(signer: Signer, request: httpx.Request, accept_signature: str) -> None:
    """Sign ``request`` in place with exactly what ``accept_signature`` asks: its label, its
    components in its order, and its parameters (RFC 9421 §5.1), as a client following it would."""
    proposals = http_sf.parse(accept_signature.encode(), tltype="dictionary")
    assert isinstance(proposals, dict) and len(proposals) == 1
    label, (items, params) = next(iter(proposals.items()))
    components = tuple(name for name, _ in items)
    unknown = set(params) - {"created", "nonce", "tag"}
    assert not unknown, f"a parameter this client cannot provide: {unknown}"
    signer.signer.content_digest_class = ContentDigest
    signer.signer.sign(
        request,
        key_id=signer.keyid,
        label=label,
        covered_component_ids=components,
        created=datetime.datetime.now(datetime.UTC) if "created" in params else None,
        nonce=secrets.token_urlsafe(16) if "nonce" in params else None,
        tag=params.get("tag"),
        # The digest of the content, also of empty content when "content-digest" is asked for.
        body=request.content if "content-digest" in components else None,
    )
    signed = http_sf.parse(request.headers["signature-input"].encode(), tltype="dictionary")
    assert isinstance(signed, dict)
    assert tuple(name for name, _ in signed[label][0]) == components  # nothing added by the library


@pytest.mark.parametrize(
    ("method", "path", "content"),
    [
        pytest.param("POST", "/orders/", b'{"sku": "A-1"}', id="post-with-body"),
        pytest.param(
            "POST", "/orders/?dry-run=1", b'{"sku": "A-1"}', id="post-with-query-and-body"
        ),
        pytest.param("GET", "/orders/42?expand=lines", b"", id="get-with-query"),
        pytest.param("GET", "/orders/42", b"", id="get"),
    ],
)
def test_unsigned_request_signed_as_accept_signature_asks_gets_through(
    start_signed: StartSigned, ed25519: Signer, method: str, path: str, content: bytes
) -> None:
    gateway = start_signed(ed25519, headers=["x-partner-date"], tag="partner-app")
    fields = {"x-partner-date": "2025-01-01"}
    challenged = gateway.send(gateway.request(method, path, content=content, headers=fields))
    check_problem(challenged, 401, UNAUTHORIZED)
    accept = challenged.headers["accept-signature"]

    request = gateway.request(method, path, content=content, headers=fields)
    sign_as_asked(ed25519, request, accept)
    response = gateway.send(request)

    echoed = upstream_saw(response)
    assert header(echoed, "x-portico-consumer") == "acme/billing"
    assert echoed["body"] == content.decode()


def test_refusal_proposes_the_components_to_sign_in_accept_signature(
    start_signed: StartSigned, ed25519: Signer
) -> None:
    gateway = start_signed(ed25519, headers=["x-partner-date"])
    request = gateway.request("POST", "/orders/?dry-run=1", content=b"{}")
    request.headers["signature-input"] = 'sig1=("@method");keyid="unknown";created=1'
    request.headers["signature"] = "sig1=:AAAA:"

    response = gateway.send(request)

    check_problem(response, 401, INVALID_CREDENTIALS)
    assert response.headers["accept-signature"] == (
        'sig1=("@method" "@authority" "@path" "@query" "x-partner-date" "content-digest")'
        ";created;nonce"
    )


# -- configuration -----------------------------------------------------------------------------


def _config_with_keys(*entries: dict[str, Any]) -> str:
    return json.dumps(
        {
            "tenants": {
                "acme": {
                    "consumers": {
                        "billing": {"signature_keys": list(entries)},
                        "shipping": {"signature_keys": []},
                    }
                }
            }
        }
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        pytest.param(
            {"keyid": "k", "algorithm": "ed25519", "public_key": "not pem"},
            "not a PEM public key",
            id="bad-pem",
        ),
        pytest.param(
            {
                "keyid": "k",
                "algorithm": "ecdsa-p256-sha256",
                "public_key": Signer.generate("ed25519").entry["public_key"],
            },
            "not an EC P-256 key",
            id="wrong-key-type",
        ),
        pytest.param(
            {"keyid": "k", "algorithm": "hmac-sha256", "secret": "short"},
            "at least 32 bytes",
            id="short-hmac-secret",
        ),
        pytest.param(
            {"keyid": "k", "algorithm": "ed25519"},
            "takes a PEM public_key",
            id="missing-public-key",
        ),
    ],
)
def test_invalid_signature_key_is_a_config_error_at_its_line(
    entry: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config_text(_config_with_keys(entry), "portico.yaml")

    issue = refused.value.issues[0]
    assert message in issue.message
    assert issue.path.startswith("tenants.acme.consumers.billing.signature_keys[0]")
    assert issue.line is not None


def test_keyid_used_by_two_consumers_is_a_config_error() -> None:
    key = Signer.generate("ed25519").entry
    text = json.dumps(
        {
            "tenants": {
                "acme": {
                    "consumers": {
                        "billing": {"signature_keys": [key]},
                        "shipping": {"signature_keys": [key]},
                    }
                }
            }
        }
    )
    with pytest.raises(ConfigError) as refused:
        load_config_text(text, "portico.yaml")

    assert [issue.path for issue in refused.value.issues] == [
        "tenants.acme.consumers.shipping.signature_keys[0].keyid"
    ]
    assert "already used by acme/billing" in refused.value.issues[0].message


# -- the nonce store ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_nonce_store_refuses_a_nonce_until_its_window_has_passed() -> None:
    clock = FakeClock()
    store = NonceStore(capacity=10, clock=clock)

    assert store.remember("key", "n1", until=clock.now + 300)
    assert not store.remember("key", "n1", until=clock.now + 300)
    assert store.remember("other-key", "n1", until=clock.now + 300)
    clock.now += 301
    assert store.remember("key", "n1", until=clock.now + 300)


def test_full_nonce_store_refuses_new_nonces_rather_than_forget_live_ones() -> None:
    clock = FakeClock()
    store = NonceStore(capacity=2, clock=clock)
    store.remember("key", "n1", until=clock.now + 10)
    store.remember("key", "n2", until=clock.now + 20)

    with pytest.raises(NonceStoreFull):
        store.remember("key", "n3", until=clock.now + 30)
    assert not store.remember("key", "n1", until=clock.now + 10)

    clock.now += 11
    assert store.remember("key", "n3", until=clock.now + 30)
    assert len(store) == 2
