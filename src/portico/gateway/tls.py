"""The HTTPS listener's TLS context, made from ``gateway.tls``.

Apart from the running gateway (:mod:`portico.gateway.app`) so that ``portico check``, which loads
the same context to prove the files go together (:mod:`portico.gateway.checks`), imports neither
the event loop nor the connection code.
"""

from __future__ import annotations

import ssl

from portico.config.model import TLSListener

__all__ = ["server_ssl_context"]


def server_ssl_context(settings: TLSListener) -> ssl.SSLContext:
    """TLS 1.2+ server context; asks for and verifies client certificates when configured."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if settings.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    context.load_cert_chain(settings.certificate, settings.private_key)
    if settings.client_ca is not None:
        context.load_verify_locations(cafile=settings.client_ca)
    context.verify_mode = {
        "none": ssl.CERT_NONE,
        "optional": ssl.CERT_OPTIONAL,
        "required": ssl.CERT_REQUIRED,
    }[settings.client_certificate]
    return context
