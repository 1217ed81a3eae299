"""The gateway's own checks of a config: what ``portico serve`` would refuse when it starts.

The HTTPS listener is opened once, at start (``gateway.tls`` takes effect on restart), so these
run for ``portico check`` and ``serve``, not for a reload: a reload that leaves ``gateway.tls``
alone is not refused because a certificate file is being renewed. The ``ssl`` module is imported
only for a config that has an HTTPS listener.
"""

from __future__ import annotations

from pathlib import Path

from portico.config.checks import Finding
from portico.config.model import PorticoConfig

__all__ = ["listener_errors"]


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
