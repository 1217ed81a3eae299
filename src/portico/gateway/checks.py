"""The gateway's own checks of a config: the files its TLS contexts are made of.

- :func:`listener_errors`: the HTTPS listener is opened once, at start (``gateway.tls`` takes
  effect on restart), so it runs for ``portico check`` and ``serve``, not for a reload: a reload
  that leaves ``gateway.tls`` alone is not refused because a certificate file is being renewed.
- :func:`upstream_tls_errors`: each snapshot makes the services' upstream TLS contexts, so it runs
  for every load, reloads included: a reload with a broken file is refused at its line and the
  previous snapshot keeps serving. :func:`upstream_tls_warnings` says what ``check`` warns of.

The ``ssl`` module is imported only for a config that has TLS files to read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from portico.config.checks import Finding
from portico.config.model import PorticoConfig

__all__ = ["listener_errors", "upstream_tls_errors", "upstream_tls_warnings"]


def listener_errors(config: PorticoConfig) -> list[Finding]:
    """Files of ``gateway.tls`` that cannot be read, or that do not load as a certificate chain,
    its private key and the client CA."""
    tls = config.gateway.tls
    if tls is None:
        return []
    files = (
        ("certificate", tls.certificate),
        ("private_key", tls.private_key),
        ("client_ca", tls.client_ca),
    )
    errors: list[Finding] = []
    for field, path in files:
        if path is None:
            continue
        try:
            Path(path).read_bytes()
        except OSError as exc:
            errors.append((("gateway", "tls", field), f"cannot read {path!r}: {exc.strerror}"))
    if errors:
        return errors
    import ssl

    from portico.gateway.tls import server_ssl_context

    try:
        server_ssl_context(tls)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        errors.append(
            (
                ("gateway", "tls", "certificate"),
                f"certificate, private_key and client_ca do not load together: {reason}",
            )
        )
    return errors


def upstream_tls_errors(config: PorticoConfig) -> list[Finding]:
    """Services whose ``tls`` settings cannot be used: on a plain ``http://`` target, or with a
    file that cannot be read or does not load (not PEM, an encrypted key, a key that is not the
    certificate's)."""
    errors: list[Finding] = []
    for name, service in config.services.items():
        tls = service.tls
        if tls is None:
            continue
        for index, target in enumerate(service.targets):
            if urlsplit(target.url).scheme != "https":
                # Refused rather than ignored: whoever wrote tls expects encrypted, verified
                # traffic, and this target would get plain text.
                errors.append(
                    (
                        ("services", name, "targets", index, "url"),
                        "the service has tls settings, and they apply to https:// targets "
                        "only: this target would get plain text (use https://, or move it to a "
                        "service of its own)",
                    )
                )
        errors.extend(_file_errors(name, tls.trusted_ca, tls.certificate, tls.private_key))
        if any((tls.trusted_ca, tls.certificate)) and not _unreadable(errors, name):
            from portico.gateway.tls import UpstreamTLSError, upstream_ssl_context

            try:
                upstream_ssl_context(tls)
            except UpstreamTLSError as exc:
                errors.append((("services", name, "tls", exc.field), exc.message))
    return errors


def upstream_tls_warnings(config: PorticoConfig) -> Iterator[Finding]:
    """What ``portico check`` warns of, without refusing: certificate verification turned off."""
    for name, service in config.services.items():
        if service.tls is not None and not service.tls.verify:
            yield (
                ("services", name, "tls", "verify"),
                "certificate verification is off: whoever answers at a target's address gets "
                "the traffic, credentials included; for a private CA, set trusted_ca instead",
            )


def _file_errors(
    service: str, trusted_ca: str | None, certificate: str | None, private_key: str | None
) -> Iterator[Finding]:
    """Every file that cannot be read, at once (loading stops at the first)."""
    files = (("trusted_ca", trusted_ca), ("certificate", certificate), ("private_key", private_key))
    for field, path in files:
        if path is None:
            continue
        try:
            Path(path).read_bytes()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            yield ("services", service, "tls", field), f"cannot read {path!r}: {reason}"


def _unreadable(errors: list[Finding], service: str) -> bool:
    return any(loc[:3] == ("services", service, "tls") for loc, _ in errors)
