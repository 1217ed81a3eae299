"""TLS contexts: the HTTPS listener's, from ``gateway.tls``, and the one a service uses to reach
its ``https://`` targets, from ``services.<name>.tls``.

Apart from the running gateway (:mod:`portico.gateway.app`, :mod:`portico.gateway.upstream`) so
that ``portico check``, which loads the same contexts to prove the files go together
(:mod:`portico.gateway.checks`), imports neither the event loop nor the connection code. Nothing
here runs per request: a context is made when the snapshot is built.
"""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

from portico.config.model import TLSListener, UpstreamTLS
from portico.core.errors import PorticoError

__all__ = [
    "UpstreamTLSError",
    "server_ssl_context",
    "upstream_ssl_context",
    "upstream_tls_fingerprint",
]

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_DEFAULTS = UpstreamTLS()
_FILES = ("trusted_ca", "certificate", "private_key")


def server_ssl_context(settings: TLSListener) -> ssl.SSLContext:
    """TLS 1.2+ server context; asks for and verifies client certificates when configured."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = _VERSIONS[settings.min_version]
    context.load_cert_chain(settings.certificate, settings.private_key)
    if settings.client_ca is not None:
        context.load_verify_locations(cafile=settings.client_ca)
    context.verify_mode = {
        "none": ssl.CERT_NONE,
        "optional": ssl.CERT_OPTIONAL,
        "required": ssl.CERT_REQUIRED,
    }[settings.client_certificate]
    return context


class UpstreamTLSError(PorticoError):
    """A file of a service's ``tls`` settings cannot be used; ``field`` names the setting."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"tls.{field}: {message}")
        self.field = field
        self.message = message


def upstream_ssl_context(settings: UpstreamTLS | None) -> ssl.SSLContext:
    """The client context of a service's ``https://`` targets.

    Verified by default: the targets' chains against ``trusted_ca`` (which replaces the system's
    CA store, as nginx's ``proxy_ssl_trusted_certificate`` does) or the system's store, and their
    names against the certificate. ``certificate`` and ``private_key`` are presented when a target
    asks. Raises :class:`UpstreamTLSError` naming the setting at fault.
    """
    settings = settings or _DEFAULTS
    files = {name: _read(name, getattr(settings, name)) for name in _FILES}
    if settings.verify:
        ca = settings.trusted_ca
        if ca is not None:
            _expect_pem("trusted_ca", ca, files["trusted_ca"], "CA certificates")
        try:
            # With a cafile, only that file is trusted; without, the system's store.
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        except ssl.SSLError as exc:
            raise UpstreamTLSError(
                "trusted_ca", f"{ca!r} does not load as PEM CA certificates ({_reason(exc)})"
            ) from None
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = _VERSIONS[settings.min_version]
    # HTTP/1.1 is all the upstream connections speak: say so, so that a server that would only
    # take h2 refuses the handshake instead of answering in a protocol Portico cannot read.
    context.set_alpn_protocols(["http/1.1"])
    if settings.certificate is not None and settings.private_key is not None:
        _load_client_certificate(context, settings.certificate, settings.private_key, files)
    return context


def upstream_tls_fingerprint(settings: UpstreamTLS | None) -> bytes:
    """A digest of the files ``settings`` names, as they are now (empty without files).

    A reload keeps a service whose settings did not change, with its pools; when one of its files
    did (a renewed certificate at the same path), the service is built again, so new connections
    use the new files.
    """
    if settings is None:
        return b""
    paths = [getattr(settings, name) for name in _FILES]
    if not any(paths):
        return b""
    digest = hashlib.sha256()
    for path in paths:
        try:
            data = Path(path).read_bytes() if path else b""
        except OSError as exc:
            data = f"unreadable: {exc}".encode()
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.digest()


def _read(field: str, path: str | None) -> bytes:
    if path is None:
        return b""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UpstreamTLSError(field, f"cannot read {path!r}: {exc.strerror or exc}") from None


def _expect_pem(field: str, path: str, data: bytes, kind: str) -> None:
    """A file OpenSSL would refuse with a bare "PEM lib": say what it should hold."""
    blocks = {
        "CA certificates": (b"-----BEGIN CERTIFICATE-----", "CERTIFICATE", "x509"),
        "certificates": (b"-----BEGIN CERTIFICATE-----", "CERTIFICATE", "x509"),
        "a private key": (b" PRIVATE KEY-----", "PRIVATE KEY", "pkey"),
    }
    marker, label, command = blocks[kind]
    if marker not in data:
        raise UpstreamTLSError(
            field,
            f"{path!r} is not a PEM file of {kind} (no -----BEGIN {label}----- block; "
            f"from DER: openssl {command} -inform der -in FILE -out FILE.pem)",
        )


def _load_client_certificate(
    context: ssl.SSLContext, certificate: str, private_key: str, files: dict[str, bytes]
) -> None:
    _expect_pem("certificate", certificate, files["certificate"], "certificates")
    key = files["private_key"]
    _expect_pem("private_key", private_key, key, "a private key")
    if b"ENCRYPTED" in key:
        # OpenSSL would ask for the passphrase on the terminal, and a gateway has none.
        raise UpstreamTLSError(
            "private_key",
            f"{private_key!r} is encrypted: Portico reads unencrypted keys only (write one with "
            "openssl pkey -in KEY -out PLAIN, and protect it by its file permissions)",
        )
    try:
        context.load_cert_chain(certificate, private_key, password=_no_passphrase)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise UpstreamTLSError(
                "private_key", f"{private_key!r} is not the key of the certificate {certificate!r}"
            ) from None
        raise UpstreamTLSError(
            "certificate",
            f"certificate and private_key do not load together ({_reason(exc)})",
        ) from None
    except _Encrypted:
        raise UpstreamTLSError(
            "private_key", f"{private_key!r} is encrypted: Portico reads unencrypted keys only"
        ) from None


class _Encrypted(Exception):
    """The key asked for a passphrase (a form the ``ENCRYPTED`` marker did not reveal)."""


def _no_passphrase() -> str:
    raise _Encrypted()


def _reason(exc: ssl.SSLError) -> str:
    return (exc.reason or str(exc)).lower().replace("_", " ")
