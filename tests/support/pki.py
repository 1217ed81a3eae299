"""A throwaway public key infrastructure for TLS tests, made with ``cryptography``.

:class:`CertificateAuthority` creates a self-signed CA and issues server and client certificates
(ECDSA P-256, valid from a day ago to a day ahead), writing each certificate and key as PEM files
in a directory so they can be given to Portico's config, to ``ssl`` contexts and to curl.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate with its key, as files and as the values a config maps it by."""

    cert_path: Path
    key_path: Path
    der: bytes

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the DER: the certificate's fingerprint."""
        return hashlib.sha256(self.der).hexdigest()

    @property
    def subject(self) -> str:
        """The subject as an RFC 4514 string."""
        return x509.load_der_x509_certificate(self.der).subject.rfc4514_string()


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


class CertificateAuthority:
    def __init__(self, directory: Path, name: str = "Portico Test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.slug = name.lower().replace(" ", "-")
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert_path = directory / f"{self.slug}.pem"
        self.cert_path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue_server(
        self, hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"), *, expired: bool = False
    ) -> Issued:
        """A server certificate for ``hosts`` (DNS names and IP addresses in its SAN);
        ``expired``: its validity ended an hour ago."""
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
        return self._issue(
            "server-"
            + "-".join(h.replace(":", "_") for h in hosts)
            + ("-expired" if expired else ""),
            subject,
            ExtendedKeyUsageOID.SERVER_AUTH,
            x509.SubjectAlternativeName(names),
            expired=expired,
        )

    def issue_client(
        self, common_name: str, organization: str = "Acme", *, dns_names: tuple[str, ...] = ()
    ) -> Issued:
        """A client certificate (extended key usage clientAuth only); ``dns_names`` in its SAN
        make one that names a host, as a server certificate would."""
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        alt_names = (
            x509.SubjectAlternativeName([x509.DNSName(name) for name in dns_names])
            if dns_names
            else None
        )
        return self._issue(
            f"client-{common_name}", subject, ExtendedKeyUsageOID.CLIENT_AUTH, alt_names
        )

    def _issue(
        self,
        stem: str,
        subject: x509.Name,
        usage: x509.ObjectIdentifier,
        alt_names: x509.SubjectAlternativeName | None = None,
        *,
        expired: bool = False,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        until = now - datetime.timedelta(hours=1) if expired else now + _DAY
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if alt_names is not None:
            builder = builder.add_extension(alt_names, critical=False)
        certificate = builder.sign(self._key, hashes.SHA256())
        cert_path = self.directory / f"{self.slug}-{stem}.pem"
        key_path = self.directory / f"{self.slug}-{stem}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        return Issued(cert_path, key_path, certificate.public_bytes(serialization.Encoding.DER))


def client_context(
    trust: CertificateAuthority, identity: Issued | None = None, **versions: ssl.TLSVersion
) -> ssl.SSLContext:
    """A client context trusting ``trust`` and presenting ``identity`` (if any).

    ``versions`` may set ``minimum_version`` and ``maximum_version``.
    """
    context = ssl.create_default_context(cafile=str(trust.cert_path))
    if identity is not None:
        context.load_cert_chain(identity.cert_path, identity.key_path)
    for name, version in versions.items():
        setattr(context, name, version)
    return context


def server_context(
    identity: Issued,
    client_ca: CertificateAuthority | None = None,
    **versions: ssl.TLSVersion,
) -> ssl.SSLContext:
    """A server context presenting ``identity``; with ``client_ca``, it requires a client
    certificate of that CA. ``versions`` may set ``minimum_version`` and ``maximum_version``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(identity.cert_path, identity.key_path)
    if client_ca is not None:
        context.load_verify_locations(cafile=str(client_ca.cert_path))
        context.verify_mode = ssl.CERT_REQUIRED
    for name, version in versions.items():
        setattr(context, name, version)
    return context
