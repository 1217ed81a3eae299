"""The ``auth`` policy's checks of the config sections its methods need, located relative to the
policy entry; ``portico check``, ``serve`` and a reload run them with every other check."""

from __future__ import annotations

from portico.config.checks import Finding
from portico.config.model import PorticoConfig
from portico.identity.method_settings import NEEDS_CLIENT_CERTIFICATES
from portico.policies.auth.settings import AuthSettings

__all__ = ["auth_errors"]


def auth_errors(settings: AuthSettings, config: PorticoConfig) -> list[Finding]:
    """What a route's ``auth`` needs from other sections, located relative to the policy entry:
    ``oauth`` needs ``identity.oauth``, ``jwt:<provider>`` a provider of that name, ``mtls`` an
    HTTPS listener that asks for client certificates. ``serve`` and a reload refuse the same."""
    errors: list[Finding] = []
    providers = config.identity.providers
    tls = config.gateway.tls
    for k, method in enumerate(settings.methods):
        loc = ("methods", k)
        base, _, provider = method.partition(":")
        if base == "oauth" and config.identity.oauth is None:
            errors.append((loc, "the oauth method needs identity.oauth to be configured"))
        elif base == "jwt" and provider not in providers:
            known = ", ".join(sorted(providers)) or "none configured"
            errors.append(
                (loc, f"no identity provider {provider!r} in identity.providers ({known})")
            )
        elif base == "mtls" and (tls is None or tls.client_certificate == "none"):
            errors.append((loc, NEEDS_CLIENT_CERTIFICATES))
    return errors
