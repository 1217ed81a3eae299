"""The ``auth`` policy at request time: who is calling (authentication) and whether they may
call this route (docs/identity.md, "The auth policy").

    policies:
      - type: auth
        methods: [api_key, "jwt:okta"]
        api_key: {header: X-Partner-Key}      # options of one method (optional)
        scopes: {all_of: [orders:read], any_of: [orders:admin, orders:support]}
        tenants: [acme]                       # only consumers of these tenants

For each request the listed methods are asked in order whether their credentials are present;
the first one that is decides (see :mod:`portico.identity.authn`). Then, in this order:

1. no credentials: 401 ``unauthorized`` with the challenge of every listed method;
   invalid credentials: 401 ``invalid-credentials`` with the challenge of the method that refused
   them,
   and the same body whatever the reason (unknown key, wrong secret, expired, revoked);
2. a consumer of a tenant not listed in ``tenants``: 403 ``forbidden``;
3. a client address denied by the consumer's ``ip_rules``: 403 ``ip-forbidden``;
4. a missing scope: 403 ``insufficient-scope`` with
   ``WWW-Authenticate: Bearer error="insufficient_scope", scope="..."`` (RFC 6750 §3.1).

Otherwise ``exchange.identity`` is set and the gateway forwards it upstream as the
``X-Portico-Consumer``, ``-Tenant``, ``-Scopes`` and ``-Auth-Method`` headers.

Compiled with mypyc (``[tool.portico.native]``); the settings it is built from are pydantic, in
:mod:`.settings`, which stays interpreted.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable

from portico.core.extensions import ExtensionUnavailable
from portico.core.http import REALM
from portico.gateway import problems
from portico.gateway.exchange import Exchange, Identity, Reply
from portico.gateway.headers import Headers
from portico.gateway.stats import LabelledCounter
from portico.identity.authn import Authenticator, AuthResult, Rejected, auth_method
from portico.identity.context import BuildContext
from portico.identity.state import IdentityState
from portico.policies.auth.settings import AuthSettings, ScopeRule

__all__ = ["Auth", "build"]

log = logging.getLogger("portico.auth")


class Auth:
    """Authenticates with the first method whose credentials are present, then authorizes."""

    __slots__ = (
        "_all_of",
        "_any_of",
        "_failures",
        "_insufficient",
        "_missing",
        "_route",
        "_scope_detail",
        "_state",
        "_steps",
        "_tenants",
        "needs_body",
    )

    def __init__(
        self,
        authenticators: tuple[Authenticator, ...],
        scopes: ScopeRule,
        tenants: tuple[str, ...],
        state: IdentityState,
        failures: LabelledCounter | None = None,
        route: str = "",
    ) -> None:
        self._failures = failures
        """Where refusals are counted (portico_auth_failures_total); ``None``: not counted."""
        self._route = route
        self._steps = authenticators
        self._all_of = frozenset(scopes.all_of) if scopes.all_of else None
        self._any_of = frozenset(scopes.any_of) if scopes.any_of else None
        self._tenants = frozenset(tenants) if tenants else None
        self._state = state
        # A method that checks the body (Content-Digest of a signed request) makes the route
        # read it whole before the pipeline runs.
        self.needs_body = any(a.needs_body for a in authenticators)
        missing = [("www-authenticate", a.challenge()) for a in authenticators]
        for authenticator in authenticators:
            proposal = authenticator.accept_signature
            if proposal:
                missing.append(("accept-signature", str(proposal)))
        self._missing = Headers(missing)
        required = " ".join(dict.fromkeys((*scopes.all_of, *scopes.any_of)))
        self._insufficient = Headers(
            [
                (
                    "www-authenticate",
                    f'Bearer realm="{REALM}", error="insufficient_scope", scope="{required}"',
                )
            ]
        )
        needs = []
        if scopes.all_of:
            needs.append("all of: " + ", ".join(scopes.all_of))
        if scopes.any_of:
            needs.append("one of: " + ", ".join(scopes.any_of))
        self._scope_detail = "This route needs the scopes " + "; and ".join(needs) + "."

    def on_request(self, exchange: Exchange) -> Reply | Awaitable[Reply | None] | None:
        for authenticator in self._steps:
            result = authenticator.identify(exchange)
            if result is None:
                continue
            # Two checks, not one on a tuple or a union: compiled, either is built on every call.
            if isinstance(result, Identity) or isinstance(result, Rejected):  # noqa: SIM101
                return self._decide(exchange, result, authenticator.method)
            return self._decide_later(exchange, result, authenticator.method)
        self._count("none", "missing")
        return problems.problem(
            problems.UNAUTHORIZED,
            exchange.request_id,
            "This route needs credentials.",
            headers=self._missing,
        )

    async def _decide_later(
        self, exchange: Exchange, pending: Awaitable[AuthResult], method: str
    ) -> Reply | None:
        return self._decide(exchange, await pending, method)

    def _count(self, method: str, reason: str) -> None:
        failures = self._failures
        if failures is not None:
            failures.inc((self._route, method, reason))

    def _decide(self, exchange: Exchange, result: AuthResult, method: str) -> Reply | None:
        if isinstance(result, Rejected):
            self._count(method, "invalid")
            if log.isEnabledFor(logging.DEBUG):
                log.debug("request %s: credentials refused: %s", exchange.request_id, result.reason)
            # One answer for every refusal (unknown id, wrong secret, expired, revoked...): the
            # caller learns nothing about which keys or clients exist; the debug log says why.
            return problems.problem(
                problems.INVALID_CREDENTIALS,
                exchange.request_id,
                "The credentials presented are not valid.",
                headers=Headers([("www-authenticate", result.challenge)]),
            )
        exchange.identity = result
        if self._tenants is not None and result.tenant not in self._tenants:
            self._count(method, "tenant")
            return problems.problem(
                problems.FORBIDDEN,
                exchange.request_id,
                "This route is not available to your tenant.",
            )
        ip_rules = self._state.directory.ip_rules
        if ip_rules:
            rules = ip_rules.get(result.consumer)
            if rules is not None and not rules.permits(exchange.client_ip):
                self._count(method, "ip")
                return problems.problem(problems.IP_FORBIDDEN, exchange.request_id)
        granted = result.scopes
        if (self._all_of is not None and not self._all_of <= granted) or (
            self._any_of is not None and self._any_of.isdisjoint(granted)
        ):
            self._count(method, "scope")
            return problems.problem(
                problems.INSUFFICIENT_SCOPE,
                exchange.request_id,
                self._scope_detail,
                headers=self._insufficient,
            )
        return None


def build(settings: AuthSettings, context: BuildContext) -> Auth:
    state = context.extensions.identity
    if state is None:
        # A runtime built outside `portico serve` (tests, tools): the config's identities only.
        state = IdentityState.for_config(context.config)
        context = dataclasses.replace(
            context, extensions=dataclasses.replace(context.extensions, identity=state)
        )
    authenticators = []
    for method in settings.methods:
        try:
            kind = auth_method(method)
        except ExtensionUnavailable as exc:
            raise ValueError(f"route {context.route_name!r}: {exc}") from None
        authenticators.append(kind.build(method, settings.options_for(method), context))
    stats = context.extensions.stats
    failures = stats.counter(
        "portico_auth_failures",
        "Requests refused by a route's auth policy, by method and reason: missing (no "
        "credentials), invalid, tenant, ip, scope.",
        ("route", "method", "reason"),
    )
    return Auth(
        tuple(authenticators),
        settings.scopes,
        settings.tenants,
        state,
        failures if stats.enabled else None,
        context.route_name,
    )
