"""Identity's own checks of a config: what only identity can judge, and what spans sections.

Run by ``portico check`` (and before ``serve`` or a reload accepts a file) through the
:class:`~portico.config.checks.Checks` of the composition root; each finding names its field.

The X.509 and JWK parsers (cryptography, PyJWT) are imported by the check that needs them, when
the config has something for them to parse: ``portico check`` of a config without certificate
subjects or JWK Sets loads neither.
"""

from __future__ import annotations

from portico.config.checks import Finding, Location
from portico.config.model import PorticoConfig

__all__ = ["identity_errors"]


def identity_errors(config: PorticoConfig) -> list[Finding]:
    return [
        *_certificate_subjects(config),
        *_client_keys(config),
        *_provider_algorithms(config),
        *_credential_clashes(config),
        *_client_ids(config),
    ]


def _certificate_subjects(config: PorticoConfig) -> list[Finding]:
    errors: list[Finding] = []
    for tenant_name, tenant in config.tenants.items():
        for name, consumer in tenant.consumers.items():
            for c, cert in enumerate(consumer.certificates):
                if cert.subject is not None and _subject(cert.subject) is None:
                    loc = ("tenants", tenant_name, "consumers", name, "certificates", c, "subject")
                    errors.append((loc, f"{cert.subject!r} is not an RFC 4514 distinguished name"))
    return errors


def _subject(text: str) -> object | None:
    from portico.identity.certificates import distinguished_name

    try:
        return distinguished_name(text)
    except ValueError:
        return None


def _client_keys(config: PorticoConfig) -> list[Finding]:
    errors: list[Finding] = []
    for tenant_name, tenant in config.tenants.items():
        for name, consumer in tenant.consumers.items():
            oauth = consumer.oauth
            if oauth is not None and oauth.jwks is not None and _usable_keys(oauth.jwks) == 0:
                errors.append(
                    (
                        ("tenants", tenant_name, "consumers", name, "oauth"),
                        "jwks holds no usable public signing key (RSA, EC or OKP)",
                    )
                )
    return errors


def _usable_keys(jwks: object) -> int:
    from portico.identity.keyset import usable_key_count

    return usable_key_count(jwks)


def _provider_algorithms(config: PorticoConfig) -> list[Finding]:
    if not config.identity.providers:
        return []
    from portico.identity.keyset import ASYMMETRIC_ALGORITHMS

    errors: list[Finding] = []
    for name, provider in config.identity.providers.items():
        refused = [a for a in provider.algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if refused:
            errors.append(
                (
                    ("identity", "providers", name, "algorithms"),
                    f"{refused[0]!r} is not accepted: a JWKS holds public keys, so only "
                    "asymmetric algorithms can be verified "
                    f"({', '.join(sorted(ASYMMETRIC_ALGORITHMS))})",
                )
            )
    return errors


def _credential_clashes(config: PorticoConfig) -> list[Finding]:
    # A signature keyid or a client certificate identifies exactly one consumer.
    errors: list[Finding] = []
    owners: dict[object, str] = {}

    def claim(ident: object, owner: str, loc: Location, what: str) -> None:
        if ident in owners:
            errors.append((loc, f"{what} is already used by {owners[ident]}"))
        else:
            owners[ident] = owner

    for tenant_name, tenant in config.tenants.items():
        for name, consumer in tenant.consumers.items():
            owner = f"{tenant_name}/{name}"
            base: Location = ("tenants", tenant_name, "consumers", name)
            for k, key in enumerate(consumer.signature_keys):
                loc = (*base, "signature_keys", k, "keyid")
                claim(("keyid", key.keyid), owner, loc, f"keyid {key.keyid!r}")
            for c, cert in enumerate(consumer.certificates):
                ident: object
                if cert.sha256_fingerprint is not None:
                    ident = ("fingerprint", cert.sha256_fingerprint)
                else:
                    subject = _subject(cert.subject or "")
                    if subject is None:
                        continue  # reported by _certificate_subjects
                    ident = ("subject", subject)
                claim(ident, owner, (*base, "certificates", c), "this certificate")
    return errors


def _client_ids(config: PorticoConfig) -> list[Finding]:
    """An OAuth client id names exactly one consumer."""
    errors: list[Finding] = []
    owners: dict[str, str] = {}
    for tenant_name, tenant in config.tenants.items():
        for name, consumer in tenant.consumers.items():
            if consumer.oauth is None:
                continue
            client_id = consumer.oauth.client_id
            loc: Location = ("tenants", tenant_name, "consumers", name, "oauth", "client_id")
            if client_id in owners:
                errors.append(
                    (loc, f"client_id {client_id!r} is already used by {owners[client_id]}")
                )
            else:
                owners[client_id] = f"{tenant_name}/{name}"
    return errors
