"""The settings of the ``publish`` policy, validated when the config is loaded
(docs/publish-policy.md).

They live apart from the request-time code (:mod:`.policy`), which is compiled with mypyc, and
mypyc cannot compile pydantic models.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from portico.config.events import EVENT_TYPE_PATTERN
from portico.config.model import Size

__all__ = ["PublishSettings"]

Status = Annotated[int, Field(ge=100, le=599)]


class PublishSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    event: str = Field(pattern=EVENT_TYPE_PATTERN, max_length=200)
    """The event type published (a type of ``events.types``)."""
    data: Literal["response", "request"] = "response"
    """Where the event's ``data`` comes from: the upstream's response body or the request's,
    which must be JSON."""
    pointer: str = Field("", pattern=r"^(/.*)?$", max_length=1000)
    """A JSON Pointer (RFC 6901) to the part of that body that is the event's data; ``""``:
    the whole body."""
    statuses: tuple[Status, ...] = ()
    """The upstream statuses that publish; none given: every 2xx."""
    max_body_size: Size = Field(1024 * 1024, ge=1)
    """The largest body read for the event; a larger one publishes nothing (a failure, counted
    and logged)."""
