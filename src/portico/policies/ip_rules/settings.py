"""The settings of the ``ip-rules`` policy, validated when the config is loaded (interpreted:
mypyc cannot compile pydantic models)."""

from __future__ import annotations

from pydantic import model_validator

from portico.config.model import IPRules

__all__ = ["IPRulesSettings"]


class IPRulesSettings(IPRules):
    """The route's lists (CIDR networks or single addresses, IPv4 or IPv6)."""

    @model_validator(mode="after")
    def _not_empty(self) -> IPRulesSettings:
        if not self.allow and not self.deny:
            raise ValueError("give allow, deny or both")
        return self
