"""Verifying third parties' webhook signatures: GitHub's documented example, a Stripe-style
header with two v1 signatures and a timestamp, the generic HMAC scheme's options, and the ways
around them (tampering, other encodings, missing or repeated fields, old timestamps)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks

from portico.events.inbound_verify import HmacScheme, SignatureRejected, Verifier
from portico.events.signing import REJECTION_REASONS, generate_secret

# GitHub's "Validating webhook deliveries" page gives this secret, payload and signature for
# testing an implementation.
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_PAYLOAD = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

STRIPE_SECRET = "whsec_test_8f1c2d"
BODY = b'{"id":"evt_1","type":"payment_intent.succeeded"}'


def _rejected(scheme: HmacScheme | Verifier, headers: object, body: bytes, now: float) -> str:
    with pytest.raises(SignatureRejected) as caught:
        scheme.verify(headers, body, now)  # type: ignore[arg-type]
    assert caught.value.reason in REJECTION_REASONS
    return caught.value.reason


def _stripe_signature(timestamp: int, body: bytes, secret: str = STRIPE_SECRET) -> str:
    content = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), content, hashlib.sha256).hexdigest()


# --- GitHub -------------------------------------------------------------------------------------


def test_githubs_documented_example_verifies() -> None:
    github = HmacScheme.github(GITHUB_SECRET)
    github.verify({"x-hub-signature-256": GITHUB_SIGNATURE}, GITHUB_PAYLOAD, time.time())
    github.verify([("X-Hub-Signature-256", GITHUB_SIGNATURE)], GITHUB_PAYLOAD, time.time())
    # Upper-case hex is the same bytes.
    upper = "sha256=" + GITHUB_SIGNATURE.removeprefix("sha256=").upper()
    github.verify({"x-hub-signature-256": upper}, GITHUB_PAYLOAD, 0)


@pytest.mark.parametrize(
    "signature",
    [
        GITHUB_SIGNATURE.replace("757", "758"),
        GITHUB_SIGNATURE.removeprefix("sha256="),  # no prefix
        "sha1=" + GITHUB_SIGNATURE.removeprefix("sha256="),
        "SHA256=" + GITHUB_SIGNATURE.removeprefix("sha256="),
        GITHUB_SIGNATURE[:-2],  # truncated
        GITHUB_SIGNATURE + "00",
        "sha256="
        + base64.b64encode(bytes.fromhex(GITHUB_SIGNATURE.removeprefix("sha256="))).decode(),
        GITHUB_SIGNATURE.replace("75", "7 5", 1),  # bytes.fromhex would skip the space
        GITHUB_SIGNATURE + ", " + GITHUB_SIGNATURE,  # two fields joined by a proxy
        "sha256=",
    ],
)
def test_github_signatures_otherwise_written_or_changed_are_refused(signature: str) -> None:
    github = HmacScheme.github(GITHUB_SECRET)
    headers = {"x-hub-signature-256": signature}
    assert _rejected(github, headers, GITHUB_PAYLOAD, 0) in {
        "no-matching-signature",
        "missing-headers",
    }


def test_github_tampered_payload_or_wrong_secret_is_refused() -> None:
    headers = {"x-hub-signature-256": GITHUB_SIGNATURE}
    github = HmacScheme.github(GITHUB_SECRET)
    assert _rejected(github, headers, b"Hello, World?", 0) == "no-matching-signature"
    assert _rejected(github, headers, GITHUB_PAYLOAD + b"\n", 0) == "no-matching-signature"
    other = HmacScheme.github("It's a secret to everybody")
    assert _rejected(other, headers, GITHUB_PAYLOAD, 0) == "no-matching-signature"


def test_github_missing_or_repeated_header_is_refused() -> None:
    github = HmacScheme.github(GITHUB_SECRET)
    assert _rejected(github, {}, GITHUB_PAYLOAD, 0) == "missing-headers"
    assert _rejected(github, {"x-hub-signature-256": ""}, GITHUB_PAYLOAD, 0) == "missing-headers"
    # The older SHA-1 header alone is not the SHA-256 scheme's.
    sha1 = "sha1=" + hmac.new(GITHUB_SECRET.encode(), GITHUB_PAYLOAD, hashlib.sha1).hexdigest()
    assert _rejected(github, {"x-hub-signature": sha1}, GITHUB_PAYLOAD, 0) == "missing-headers"
    repeated = [
        ("x-hub-signature-256", "sha256=" + "0" * 64),
        ("X-Hub-Signature-256", GITHUB_SIGNATURE),
    ]
    assert _rejected(github, repeated, GITHUB_PAYLOAD, 0) == "duplicate-headers"


def test_the_sha1_header_with_its_own_scheme() -> None:
    sha1 = HmacScheme(GITHUB_SECRET, header="X-Hub-Signature", algorithm="sha1", prefix="sha1=")
    digest = hmac.new(GITHUB_SECRET.encode(), GITHUB_PAYLOAD, hashlib.sha1).hexdigest()
    sha1.verify({"x-hub-signature": f"sha1={digest}"}, GITHUB_PAYLOAD, 0)


# --- Stripe -------------------------------------------------------------------------------------


def test_a_stripe_header_with_two_v1_signatures_verifies_with_either_secret() -> None:
    now = time.time()
    stamp = int(now)
    old, new = "whsec_old_secret", "whsec_new_secret"
    header = (
        f"t={stamp},v1={_stripe_signature(stamp, BODY, new)},"
        f"v1={_stripe_signature(stamp, BODY, old)},v0={'0' * 64}"
    )
    for secret in (old, new):
        HmacScheme.stripe(secret).verify({"stripe-signature": header}, BODY, now)
    refused = _rejected(HmacScheme.stripe("whsec_third"), {"stripe-signature": header}, BODY, now)
    assert refused == "no-matching-signature"


def test_stripe_tampering_is_refused() -> None:
    now = time.time()
    stamp = int(now)
    stripe = HmacScheme.stripe(STRIPE_SECRET)
    good = f"t={stamp},v1={_stripe_signature(stamp, BODY)}"
    stripe.verify({"stripe-signature": good}, BODY, now)
    assert (
        _rejected(stripe, {"stripe-signature": good}, BODY.replace(b"evt_1", b"evt_2"), now)
        == "no-matching-signature"
    )
    # The timestamp is signed: moving it breaks the signature.
    moved = f"t={stamp - 1},v1={_stripe_signature(stamp, BODY)}"
    assert _rejected(stripe, {"stripe-signature": moved}, BODY, now) == "no-matching-signature"
    # A v0 (Stripe's test-mode scheme) or any other key is no v1.
    v0 = f"t={stamp},v0={_stripe_signature(stamp, BODY)}"
    assert _rejected(stripe, {"stripe-signature": v0}, BODY, now) == "missing-headers"


def test_stripe_old_and_future_timestamps_are_refused() -> None:
    now = time.time()
    stripe = HmacScheme.stripe(STRIPE_SECRET)
    for offset in (-301, 301, -3600):
        stamp = int(now) + offset
        header = f"t={stamp},v1={_stripe_signature(stamp, BODY)}"
        assert _rejected(stripe, {"stripe-signature": header}, BODY, now) == (
            "timestamp-out-of-window"
        )
    stamp = int(now) - 60
    header = f"t={stamp},v1={_stripe_signature(stamp, BODY)}"
    HmacScheme.stripe(STRIPE_SECRET).verify({"stripe-signature": header}, BODY, now)
    strict = HmacScheme.stripe(STRIPE_SECRET, tolerance=30)
    assert _rejected(strict, {"stripe-signature": header}, BODY, now) == "timestamp-out-of-window"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("v1={sig}", "missing-headers"),  # no timestamp
        ("t=,v1={sig}", "missing-headers"),
        ("t={stamp}", "missing-headers"),  # no signature
        ("t={stamp},t={stamp},v1={sig}", "duplicate-headers"),
        ("t=+{stamp},v1={sig}", "bad-timestamp"),
        ("t={stamp}.0,v1={sig}", "bad-timestamp"),
        ("t={stamp},v1={sig_b64}", "no-matching-signature"),  # base64 where hex is expected
        ("t={stamp},v1={sig_upper_typo}", "no-matching-signature"),
        ("", "missing-headers"),
    ],
)
def test_malformed_stripe_headers_are_refused(header: str, reason: str) -> None:
    now = time.time()
    stamp = int(now)
    sig = _stripe_signature(stamp, BODY)
    text = header.format(
        stamp=stamp,
        sig=sig,
        sig_b64=base64.b64encode(bytes.fromhex(sig)).decode(),
        sig_upper_typo=sig[:-1] + "g",
    )
    stripe = HmacScheme.stripe(STRIPE_SECRET)
    assert _rejected(stripe, {"stripe-signature": text}, BODY, now) == reason


# --- the generic scheme -------------------------------------------------------------------------


def test_a_base64_sha512_scheme_with_a_timestamp_header() -> None:
    secret = b"\x00binary secret\xff"
    scheme = HmacScheme(
        secret,
        header="X-Signature",
        algorithm="sha512",
        encoding="base64",
        prefix="v0=",
        template="v0:{timestamp}:{body}",
        timestamp_header="X-Request-Timestamp",
    )
    now = time.time()
    stamp = str(int(now))
    mac = hmac.new(secret, f"v0:{stamp}:".encode() + BODY, hashlib.sha512).digest()
    good = {"x-signature": "v0=" + base64.b64encode(mac).decode(), "x-request-timestamp": stamp}
    scheme.verify(good, BODY, now)
    hexed = {**good, "x-signature": "v0=" + mac.hex()}
    assert _rejected(scheme, hexed, BODY, now) == "no-matching-signature"
    unpadded = {**good, "x-signature": good["x-signature"].rstrip("=")}
    assert _rejected(scheme, unpadded, BODY, now) == "no-matching-signature"
    assert _rejected(scheme, {"x-signature": good["x-signature"]}, BODY, now) == "missing-headers"
    old = {**good, "x-request-timestamp": str(int(now) - 3600)}
    assert _rejected(scheme, old, BODY, now) == "timestamp-out-of-window"
    repeated = [*good.items(), ("X-Request-Timestamp", stamp)]
    assert _rejected(scheme, repeated, BODY, now) == "duplicate-headers"


@pytest.mark.parametrize(
    "options",
    [
        {"template": "{timestamp}.{body}"},  # a timestamp placeholder without a source
        {"template": "{body}", "timestamp_header": "x-ts"},  # a timestamp that is not signed
        {"template": "{body}{body}"},
        {"template": "{bodY}"},
        {"template": "{body}.{id}"},
        {"template": "{ body }"},
        {"timestamp_key": "t"},  # a key without a key=value header
        {"algorithm": "md5"},
        {"encoding": "base32"},
    ],
)
def test_schemes_that_cannot_work_are_refused_when_made(options: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        HmacScheme("secret", header="x-sig", **options)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        HmacScheme("", header="x-sig")


def test_standard_webhooks_senders_are_verified_by_the_verifier() -> None:
    secret = generate_secret()
    now = time.time()
    signature = standardwebhooks.Webhook(secret).sign(
        "msg_9", datetime.fromtimestamp(now, tz=UTC), BODY.decode()
    )
    headers = {
        "webhook-id": "msg_9",
        "webhook-timestamp": str(int(now)),
        "webhook-signature": signature,
    }
    Verifier([secret]).verify(headers, BODY, now)
    assert _rejected(Verifier([secret]), headers, BODY + b"x", now) == "no-matching-signature"
