"""The credentials of the demo's consumers, made once for each work directory.

Each authentication method of the guides has a consumer in the demo, and each needs material no
repository should ship: an API key (``demo/shop``), a signing key pair (``demo/billing``, signed
requests), a key pair for ``private_key_jwt`` (``demo/reports``), and a certificate authority with
a server certificate for the HTTPS listener and a client certificate (``demo/ledger``, mTLS).
They are made with ``cryptography`` when the demo writes its config, and the private halves are
written beside it, under the work directory, where the guides read them:

    keys/shop-api-key.txt     the API key of demo/shop (its hash is in portico.yaml)
    keys/billing-2026.key     demo/billing's Ed25519 private key (signed requests)
    keys/reports-app.key      demo/reports's P-256 private key (private_key_jwt, kid reports-1)
    tls/ca.pem, ca.key        the demo's CA: it signs the server's and the clients' certificates
    tls/server.pem, .key      the HTTPS listener's certificate (localhost, 127.0.0.1, ::1)
    tls/ledger.pem, .key      demo/ledger's client certificate (CN=ledger,O=Portico Demo)
    keys/webhook-secret.txt   the whsec_ secret of demo/shop's webhook endpoint (in portico.yaml
                              too, as its events.endpoints entry needs it): Portico signs with it,
                              the sample receiver verifies with it
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from jwt.algorithms import ECAlgorithm

from portico.events.signing import generate_secret
from portico.identity.apikeys import NewApiKey, generate_key

__all__ = [
    "LEDGER_SUBJECT",
    "REPORTS_KEY_ID",
    "WEBHOOK_SECRET_FILE",
    "DemoCredentials",
    "issue_credentials",
    "saved_api_key",
    "saved_webhook_secrets",
]

LEDGER_SUBJECT = "CN=ledger,O=Portico Demo"
REPORTS_KEY_ID = "reports-1"
# Long enough for a demo directory kept for months, short enough to be plainly a demo's.
_VALIDITY = datetime.timedelta(days=825)
_API_KEY_FILE = Path("keys") / "shop-api-key.txt"
WEBHOOK_SECRET_FILE = Path("keys") / "webhook-secret.txt"


@dataclass(frozen=True, slots=True)
class DemoCredentials:
    """What :func:`issue_credentials` made: the API key, and the values the config declares."""

    api_key: NewApiKey
    billing_public_key: str
    """PEM of demo/billing's Ed25519 public key."""
    reports_jwks: Mapping[str, object]
    """The JWK Set of demo/reports's public key, as the config's ``oauth.jwks`` takes it."""
    webhook_secret: str
    """The ``whsec_`` secret of demo/shop's webhook endpoint."""


def issue_credentials(workdir: Path) -> DemoCredentials:
    """Make every key and certificate of the demo under ``workdir``, replacing older ones."""
    keys = workdir / "keys"
    tls = workdir / "tls"
    keys.mkdir(parents=True, exist_ok=True)
    tls.mkdir(parents=True, exist_ok=True)

    api_key = generate_key()
    _write_secret(workdir / _API_KEY_FILE, api_key.key.encode() + b"\n")

    billing = ed25519.Ed25519PrivateKey.generate()
    _write_secret(keys / "billing-2026.key", _private_pem(billing))
    billing_public = billing.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    reports = ec.generate_private_key(ec.SECP256R1())
    _write_secret(keys / "reports-app.key", _private_pem(reports))
    jwk = json.loads(ECAlgorithm.to_jwk(reports.public_key()))
    jwk.update({"kid": REPORTS_KEY_ID, "alg": "ES256", "use": "sig"})

    webhook_secret = generate_secret()
    _write_secret(workdir / WEBHOOK_SECRET_FILE, webhook_secret.encode() + b"\n")

    _issue_tls(tls)
    return DemoCredentials(api_key, billing_public.decode(), {"keys": [jwk]}, webhook_secret)


def saved_api_key(workdir: Path) -> str | None:
    """The API key a previous run saved for demo/shop, if the file is still there."""
    try:
        text = (workdir / _API_KEY_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


def saved_webhook_secrets(workdir: Path) -> list[str]:
    """The webhook secret the demo made for this work directory (none before it is made)."""
    try:
        text = (workdir / WEBHOOK_SECRET_FILE).read_text(encoding="utf-8")
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def _issue_tls(directory: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Portico Demo CA")])
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    ca = (
        _builder(ca_name, ca_name, ca_key, now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_secret(directory / "ca.key", _private_pem(ca_key))
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    names = x509.SubjectAlternativeName(
        [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    )
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    server_usage = ExtendedKeyUsageOID.SERVER_AUTH
    _issue_leaf(directory / "server", server_name, server_usage, ca, ca_key, names)
    ledger_name = x509.Name.from_rfc4514_string(LEDGER_SUBJECT)
    _issue_leaf(directory / "ledger", ledger_name, ExtendedKeyUsageOID.CLIENT_AUTH, ca, ca_key)


def _issue_leaf(
    stem: Path,
    subject: x509.Name,
    purpose: x509.ObjectIdentifier,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    names: x509.SubjectAlternativeName | None = None,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        _builder(subject, ca.subject, key, now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
    )
    if names is not None:
        builder = builder.add_extension(names, critical=False)
    certificate = builder.sign(ca_key, hashes.SHA256())
    _write_secret(stem.with_suffix(".key"), _private_pem(key))
    stem.with_suffix(".pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    now: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # An hour back: a client whose clock is a little behind still accepts it.
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + _VALIDITY)
    )


def _private_pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_secret(path: Path, data: bytes) -> None:
    """Private keys are readable by their owner only, as ssh and openssl expect of them."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
