"""Standard Webhooks signatures as Portico makes them, checked by the receivers' own libraries
(the spec's reference ``standardwebhooks`` and Svix's ``svix``), by ``cryptography`` for Ed25519,
and against the spec's shared test vector; and Portico's :class:`Verifier` against what
``standardwebhooks`` signs and against the ways around it."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks
import svix.webhooks
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from portico.events.signing import (
    REJECTION_REASONS,
    InvalidSecret,
    SignatureRejected,
    Signer,
    Verifier,
    generate_secret,
    generate_signing_key,
    public_key_of,
    webhook_headers,
)

# The shared test vector of the Standard Webhooks libraries (each one's test_sign_function).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

BODY = b'{"type":"invoice.paid","data":{"id":"inv_1","amount":4200}}'


def _headers(secret: str, *others: str, msg_id: str = "msg_1", ts: int | None = None) -> dict:
    stamp = int(time.time()) if ts is None else ts
    signers = [Signer.from_secret(s) for s in (secret, *others)]
    return dict(webhook_headers(msg_id, stamp, BODY, signers))


# --- what Portico sends, as the receivers' libraries see it -------------------------------------


def test_the_spec_test_vector_is_reproduced_byte_for_byte() -> None:
    signer = Signer.from_secret(VECTOR_SECRET)
    assert signer.sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE
    reference = standardwebhooks.Webhook(VECTOR_SECRET).sign(
        VECTOR_ID, datetime.fromtimestamp(VECTOR_TIMESTAMP, tz=UTC), VECTOR_BODY.decode()
    )
    assert reference == VECTOR_SIGNATURE


def test_standardwebhooks_accepts_portico_v1_signatures() -> None:
    secret = generate_secret()
    headers = _headers(secret)
    assert list(headers) == ["webhook-id", "webhook-timestamp", "webhook-signature"]
    assert headers["webhook-signature"].startswith("v1,")
    payload = standardwebhooks.Webhook(secret).verify(BODY, headers)
    assert payload["data"]["id"] == "inv_1"


def test_svix_accepts_portico_v1_signatures() -> None:
    secret = generate_secret()
    svix.webhooks.Webhook(secret).verify(BODY, _headers(secret))
    with pytest.raises(svix.webhooks.WebhookVerificationError):
        svix.webhooks.Webhook(generate_secret()).verify(BODY, _headers(secret))


def test_during_a_rotation_both_signatures_are_sent_and_either_receiver_accepts() -> None:
    old, new = generate_secret(), generate_secret()
    headers = _headers(old, new)
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    for receiver_secret in (old, new):
        standardwebhooks.Webhook(receiver_secret).verify(BODY, headers)
        svix.webhooks.Webhook(receiver_secret).verify(BODY, headers)
        Verifier([receiver_secret]).verify(headers, BODY, time.time())
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(generate_secret()).verify(BODY, headers)


def test_a_v1a_signature_verifies_with_the_whpk_public_key_in_cryptography() -> None:
    key = generate_signing_key()
    public = public_key_of(key)
    assert key.startswith("whsk_") and public.startswith("whpk_")
    signature = Signer.from_secret(key).sign("msg_1", 1674087231, BODY)
    scheme, _, encoded = signature.partition(",")
    assert scheme == "v1a"
    raw_public = base64.b64decode(public.removeprefix("whpk_"))
    assert len(raw_public) == 32
    Ed25519PublicKey.from_public_bytes(raw_public).verify(
        base64.b64decode(encoded), b"msg_1.1674087231." + BODY
    )


def test_a_v1a_and_a_v1_signature_travel_together_and_v1_receivers_ignore_v1a() -> None:
    secret, key = generate_secret(), generate_signing_key()
    headers = _headers(key, secret)
    assert headers["webhook-signature"].startswith("v1a,")
    standardwebhooks.Webhook(secret).verify(BODY, headers)
    Verifier([public_key_of(key)]).verify(headers, BODY, time.time())


def test_a_signing_key_may_be_the_seed_alone_and_signs_the_same() -> None:
    key = generate_signing_key()
    raw = base64.b64decode(key.removeprefix("whsk_"))
    seed_only = "whsk_" + base64.b64encode(raw[:32]).decode()
    assert Signer.from_secret(seed_only).sign("m", 1, b"x") == Signer.from_secret(key).sign(
        "m", 1, b"x"
    )
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    mismatched = "whsk_" + base64.b64encode(raw[:32] + other).decode()
    with pytest.raises(InvalidSecret, match="does not belong"):
        Signer.from_secret(mismatched)


def test_generated_secrets_are_fresh_and_of_the_spec_size() -> None:
    secrets = {generate_secret() for _ in range(20)}
    assert len(secrets) == 20
    for secret in secrets:
        assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"))) <= 64


@pytest.mark.parametrize(
    "text",
    [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no prefix: no scheme
        "whsec_",
        "whsec_not base64!",
        "whsec_" + base64.b64encode(b"short").decode(),  # under 24 bytes
        "whsec_" + base64.b64encode(b"x" * 65).decode(),  # over 64 bytes
        "whsk_" + base64.b64encode(b"x" * 40).decode(),
        "whpk_" + base64.b64encode(b"x" * 32).decode(),  # a public key cannot sign
        "sk_live_123",
    ],
)
def test_signer_refuses_what_is_not_a_signing_secret_without_echoing_it(text: str) -> None:
    with pytest.raises(InvalidSecret) as caught:
        Signer.from_secret(text)
    message = str(caught.value)
    assert "\n" not in message
    if len(text) > 8:
        assert text not in message and text[6:] not in message


@pytest.mark.parametrize("msg_id", ["", "msg.1", "msg 1", "msg\r\nx: y", "é"])
def test_ids_the_signed_content_could_not_hold_unambiguously_are_refused(msg_id: str) -> None:
    with pytest.raises(ValueError):
        Signer.from_secret(generate_secret()).sign(msg_id, 1, BODY)


def test_webhook_headers_needs_a_signer() -> None:
    with pytest.raises(ValueError):
        webhook_headers("msg_1", 1, BODY, [])


# --- Portico's Verifier ------------------------------------------------------------------------


def _reference_headers(secret: str, *, msg_id: str = "msg_1", ts: float | None = None) -> dict:
    when = datetime.fromtimestamp(time.time() if ts is None else ts, tz=UTC)
    signature = standardwebhooks.Webhook(secret).sign(msg_id, when, BODY.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }


def _rejected(
    verifier: Verifier, headers: object, body: bytes = BODY, now: float | None = None
) -> str:
    with pytest.raises(SignatureRejected) as caught:
        verifier.verify(headers, body, time.time() if now is None else now)  # type: ignore[arg-type]
    assert caught.value.reason in REJECTION_REASONS
    return caught.value.reason


def test_verifier_accepts_what_standardwebhooks_signs() -> None:
    secret = generate_secret()
    Verifier([secret]).verify(_reference_headers(secret), BODY, time.time())
    Verifier([VECTOR_SECRET]).verify(
        {
            "webhook-id": VECTOR_ID,
            "webhook-timestamp": str(VECTOR_TIMESTAMP),
            "webhook-signature": VECTOR_SIGNATURE,
        },
        VECTOR_BODY,
        VECTOR_TIMESTAMP + 10,
    )


def test_tampered_body_id_or_timestamp_is_refused() -> None:
    secret = generate_secret()
    verifier = Verifier([secret])
    headers = _reference_headers(secret)
    assert _rejected(verifier, headers, BODY.replace(b"4200", b"4201")) == "no-matching-signature"
    assert _rejected(verifier, headers, BODY + b" ") == "no-matching-signature"
    assert _rejected(verifier, {**headers, "webhook-id": "msg_2"}) == "no-matching-signature"
    moved = str(int(headers["webhook-timestamp"]) + 1)
    assert _rejected(verifier, {**headers, "webhook-timestamp": moved}) == "no-matching-signature"
    # The same number, written otherwise, is not what was signed.
    padded = "0" + headers["webhook-timestamp"]
    assert _rejected(verifier, {**headers, "webhook-timestamp": padded}) == "no-matching-signature"


def test_old_and_future_timestamps_are_refused_both_ways() -> None:
    secret = generate_secret()
    verifier = Verifier([secret])
    now = time.time()
    for offset in (-301, 301, -86400, 86400):
        headers = _reference_headers(secret, ts=now + offset)
        assert _rejected(verifier, headers, now=now) == "timestamp-out-of-window"
    for offset in (-290, 290):
        verifier.verify(_reference_headers(secret, ts=now + offset), BODY, now)
    assert Verifier([secret], tolerance=10).tolerance == 10
    assert (
        _rejected(
            Verifier([secret], tolerance=10), _reference_headers(secret, ts=now - 60), now=now
        )
        == "timestamp-out-of-window"
    )


@pytest.mark.parametrize(
    "stamp",
    [
        "",
        "abc",
        "1.5e9",
        "+1674087231",
        " 1674087231",
        "1_674_087_231",
        "١٦٧٤٠٨٧٢٣١",
        "-5",
        "1674087231.0",
    ],
)
def test_timestamps_that_are_not_plain_seconds_are_refused(stamp: str) -> None:
    secret = generate_secret()
    headers = {**_reference_headers(secret), "webhook-timestamp": stamp}
    assert _rejected(Verifier([secret]), headers) in {"bad-timestamp", "missing-headers"}


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_or_empty_headers_are_refused(missing: str) -> None:
    secret = generate_secret()
    headers = _reference_headers(secret)
    assert (
        _rejected(Verifier([secret]), {k: v for k, v in headers.items() if k != missing})
        == "missing-headers"
    )
    assert _rejected(Verifier([secret]), {**headers, missing: ""}) == "missing-headers"


def test_header_names_are_read_lower_case_and_svix_names_are_not_ours() -> None:
    secret = generate_secret()
    headers = _reference_headers(secret)
    # The caller lower-cases names (HTTP field names are case-insensitive); a mapping with
    # other spellings is not looked through.
    assert (
        _rejected(Verifier([secret]), {k.title(): v for k, v in headers.items()})
        == "missing-headers"
    )
    svix_named = {k.replace("webhook-", "svix-"): v for k, v in headers.items()}
    assert _rejected(Verifier([secret]), svix_named) == "missing-headers"


def test_repeated_fields_given_as_pairs_are_refused() -> None:
    secret = generate_secret()
    headers = _reference_headers(secret)
    pairs = list(headers.items())
    Verifier([secret]).verify(pairs, BODY, time.time())
    Verifier([secret]).verify([(k.upper(), v) for k, v in pairs], BODY, time.time())
    forged = ("webhook-signature", "v1," + base64.b64encode(b"x" * 32).decode())
    assert _rejected(Verifier([secret]), [*pairs, forged]) == "duplicate-headers"
    assert _rejected(Verifier([secret]), [forged, *pairs]) == "duplicate-headers"
    assert _rejected(Verifier([secret]), [*pairs, ("Webhook-Id", "msg_2")]) == "duplicate-headers"


def test_wrong_secret_and_wrong_scheme_labels_are_refused() -> None:
    secret, key = generate_secret(), generate_signing_key()
    headers = _reference_headers(secret)
    assert _rejected(Verifier([generate_secret()]), headers) == "no-matching-signature"
    _, _, hmac_b64 = headers["webhook-signature"].partition(",")
    for label in ("v1a", "v2", "V1", "v1 ", ""):
        relabeled = {**headers, "webhook-signature": f"{label},{hmac_b64}"}
        assert _rejected(Verifier([secret]), relabeled) == "no-matching-signature"
    # An Ed25519 signature presented under v1, to a receiver holding both kinds of secret.
    ed_headers = _headers(key)
    _, _, ed_b64 = ed_headers["webhook-signature"].partition(",")
    both = Verifier([secret, public_key_of(key)])
    both.verify(ed_headers, BODY, time.time())
    as_v1 = {**ed_headers, "webhook-signature": f"v1,{ed_b64}"}
    assert _rejected(both, as_v1) == "no-matching-signature"
    # An HMAC presented under v1a.
    v1_headers = _headers(secret)
    _, _, mac = v1_headers["webhook-signature"].partition(",")
    assert (
        _rejected(both, {**v1_headers, "webhook-signature": f"v1a,{mac}"})
        == "no-matching-signature"
    )


@pytest.mark.parametrize(
    "signature",
    ["v1", "v1,", "v1,!!!!", "v1,abc", ",", "v1,,", "v1,Zm9v\n", "garbage"],
)
def test_malformed_signatures_are_no_match_not_an_error(signature: str) -> None:
    secret = generate_secret()
    headers = {**_reference_headers(secret), "webhook-signature": signature}
    assert _rejected(Verifier([secret]), headers) == "no-matching-signature"


def test_a_match_hidden_behind_many_signatures_is_not_searched_for_ever() -> None:
    secret = generate_secret()
    headers = _reference_headers(secret)
    junk = " ".join(["v1a," + base64.b64encode(b"x" * 64).decode()] * 40)
    buried = {**headers, "webhook-signature": junk + " " + headers["webhook-signature"]}
    assert _rejected(Verifier([secret]), buried) == "no-matching-signature"
    near = {**headers, "webhook-signature": "v1,AAAA " + headers["webhook-signature"]}
    Verifier([secret]).verify(near, BODY, time.time())


def test_verifier_refuses_signing_keys_and_unknown_secrets() -> None:
    with pytest.raises(InvalidSecret, match="public key"):
        Verifier([generate_signing_key()])
    with pytest.raises(InvalidSecret):
        Verifier(["plain-text"])
    with pytest.raises(InvalidSecret):
        Verifier([])
    with pytest.raises(TypeError):
        Verifier(generate_secret())  # type: ignore[arg-type]
