"""The ``ip-rules`` policy at request time: allow and deny lists of client addresses for one
route (docs/ip-rules.md).

    policies:
      - type: ip-rules
        allow: [10.0.0.0/8, "2001:db8::/32"]
        deny: [10.6.6.0/24]

Deny wins over allow; with no allow list, every address that is not denied may call the route.
The address checked is ``exchange.client_ip``: the TCP peer, or, when the peer is one of
``gateway.trusted_proxies``, the client named by its ``X-Forwarded-For``. A denied request gets
403 ``ip-forbidden``. ``gateway.ip_rules`` apply the same rules to every request before routing,
and a consumer's ``ip_rules`` apply once the ``auth`` policy knows the consumer.
"""

from __future__ import annotations

from portico.gateway import problems
from portico.gateway.exchange import Exchange, Reply
from portico.gateway.iprules import CompiledIPRules
from portico.identity.context import BuildContext
from portico.policies.ip_rules.settings import IPRulesSettings

__all__ = ["IPRulesPolicy", "build"]


class IPRulesPolicy:
    __slots__ = ("_rules", "needs_body")

    def __init__(self, rules: CompiledIPRules) -> None:
        self._rules = rules
        self.needs_body = False

    def on_request(self, exchange: Exchange) -> Reply | None:
        if self._rules.permits(exchange.client_ip):
            return None
        return problems.problem(problems.IP_FORBIDDEN, exchange.request_id)


def build(settings: IPRulesSettings, context: BuildContext) -> IPRulesPolicy:
    rules = CompiledIPRules.compile(settings)
    if rules is None:  # the settings require at least one list
        raise ValueError(f"route {context.route_name!r}: ip-rules needs allow, deny or both")
    return IPRulesPolicy(rules)
