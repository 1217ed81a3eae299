"""The settings of the ``concurrency`` policy, validated when the config is loaded
(docs/rate-limits.md#upstream-concurrency)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from portico.config.model import Duration

__all__ = ["ConcurrencySettings"]


class ConcurrencySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max: int = Field(ge=1, le=100_000)
    """Requests in progress at once, per gateway process: on a service's ``policies``, for all
    its routes together; on a route's, for that route."""
    queue: int = Field(0, ge=0, le=10_000)
    """Requests that may wait for a free place beyond ``max``; more get 503 at once."""
    queue_timeout: Duration = 1.0
    """The longest one request waits in the queue before it gets 503."""

    @field_validator("queue_timeout")
    @classmethod
    def _short(cls, value: float) -> float:
        if value > 60:
            raise ValueError("queue_timeout is at most 60s: a queue is for bursts, not backlogs")
        return value
