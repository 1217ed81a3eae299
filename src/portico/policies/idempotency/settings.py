"""The settings of the ``idempotency`` policy, validated when the config is loaded
(docs/idempotency.md).

They live apart from the request-time code (:mod:`.policy`), which is compiled with mypyc, and
mypyc cannot compile pydantic models.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from portico.config.model import Duration, Size

__all__ = ["IdempotencySettings"]

Method = Literal["POST", "PATCH", "PUT", "DELETE"]


class IdempotencySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    methods: tuple[Method, ...] = Field(("POST", "PATCH"), min_length=1)
    """The methods whose requests may carry an ``Idempotency-Key``."""
    required: bool = False
    """A request of those methods without a key is refused (400)."""
    retention: Duration = Field(86400.0, gt=0)
    """How long a stored response is replayed for its key."""
    lock_timeout: Duration = Field(120.0, gt=0)
    """How long a request in flight holds its key (a retry meanwhile gets 409): longer than the
    upstream may take to answer, short enough for a retry after a gateway process died with
    the request."""
    max_key_length: int = Field(255, ge=1, le=4096)
    max_body_size: Size = Field(1024 * 1024, ge=0)
    """A larger response is sent, and not stored: a retry runs the request again."""
    store_server_errors: bool = False
    """Store and replay 5xx answers too. Off: a 5xx releases the key, so the client's retry
    runs the request again (the draft leaves the choice to the server)."""
    on_redis_failure: Literal["open", "closed"] = "closed"
    """Redis away: let the request through without idempotency (``open``) or answer 503
    (``closed``, the default: a retry that runs twice is what the client asked to avoid)."""
