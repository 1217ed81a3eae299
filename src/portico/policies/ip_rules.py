"""The ``ip-rules`` policy: allow and deny lists of client addresses for one route.

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

from pydantic import model_validator

from portico.config.model import IPRules
from portico.gateway import problems
from portico.gateway.exchange import Exchange, Reply
from portico.gateway.iprules import CompiledIPRules
from portico.policies.registry import BuildContext, register

__all__ = ["IPRulesPolicy", "IPRulesSettings"]


class IPRulesSettings(IPRules):
    """The route's lists (CIDR networks or single addresses, IPv4 or IPv6)."""

    @model_validator(mode="after")
    def _not_empty(self) -> IPRulesSettings:
        if not self.allow and not self.deny:
            raise ValueError("give allow, deny or both")
        return self


class IPRulesPolicy:
    __slots__ = ("_rules",)
    needs_body = False

    def __init__(self, rules: CompiledIPRules) -> None:
        self._rules = rules

    def on_request(self, exchange: Exchange) -> Reply | None:
        if self._rules.permits(exchange.client_ip):
            return None
        return problems.problem(problems.IP_FORBIDDEN, exchange.request_id)


@register("ip-rules", IPRulesSettings)
def build(settings: IPRulesSettings, context: BuildContext) -> IPRulesPolicy:
    rules = CompiledIPRules.compile(settings)
    assert rules is not None  # the settings require at least one list
    return IPRulesPolicy(rules)
