"""The settings of the ``cache`` policy, validated when the config is loaded (docs/caching.md).

They live apart from the request-time code (:mod:`.policy`), which is compiled with mypyc, and
mypyc cannot compile pydantic models.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from portico.config.model import Duration, HeaderName, Size

__all__ = ["DEFAULT_STATUSES", "CacheSettings"]

DEFAULT_STATUSES = (200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501)
"""RFC 9110 §15.1's heuristically cacheable statuses, without 206 (no range requests here)."""


class CacheSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    ttl: Duration = Field(60.0, gt=0)
    """How long a response stays fresh when it says nothing itself (no ``s-maxage``,
    ``max-age`` or ``Expires``)."""
    max_ttl: Duration | None = Field(None, gt=0)
    """The longest any response stays, whatever its ``Cache-Control`` says."""
    scope: Literal["consumer", "tenant", "public"] = "consumer"
    """Whose responses are shared: each consumer has its own (``consumer``), a tenant's
    consumers share theirs (``tenant``), or everyone shares one (``public``)."""
    max_body_size: Size = Field(1024 * 1024, ge=0)
    """Larger responses stream through uncached."""
    statuses: tuple[int, ...] = DEFAULT_STATUSES
    """The statuses that may be stored."""
    key_headers: tuple[HeaderName, ...] = ()
    """Request fields the key includes besides those the upstream names in ``Vary``: fields
    the upstream reads without saying so."""
    on_redis_failure: Literal["open", "closed"] = "open"
    """Redis away: forward the request uncached (``open``) or answer 503 (``closed``)."""

    @model_validator(mode="after")
    def _statuses_are_http(self) -> CacheSettings:
        for status in self.statuses:
            if not 200 <= status <= 599 or status in (206, 304):
                raise ValueError(
                    f"status {status} cannot be cached (give 2xx to 5xx statuses, not 206 or 304)"
                )
        return self
