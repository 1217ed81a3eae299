"""The settings of the ``deprecation`` policy, validated when the config is loaded.

Dates are ISO 8601 in the YAML: a date (``2026-01-01``, midnight UTC) or a date and time with
its offset (``2026-01-01T09:00:00+01:00``). A time without an offset is refused: the moment a
route stops answering must not depend on the server's time zone.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from portico.config.catalog import check_link, parse_moment

__all__ = ["DeprecationSettings"]


class DeprecationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    retired: StrictBool = False
    """Answer 410 ``route-sunset`` from now on, whatever ``sunset`` says: what the routes of a
    service whose ``lifecycle`` is ``retired`` run (docs/catalog.md). First, so that ``since``
    is checked knowing it."""
    since: datetime | None = Field(None, validate_default=True)
    """When the route is (or will be) deprecated: the ``Deprecation`` field (RFC 9745).
    Needed, unless ``retired``."""
    sunset: datetime | None = None
    """When it stops answering: the ``Sunset`` field (RFC 8594); from then on, 410
    ``route-sunset``. Not before ``since``."""
    link: str | None = None
    """The migration guide: ``Link: <...>; rel="deprecation"``."""
    sunset_link: str | None = None
    """What the sunset means for callers: ``Link: <...>; rel="sunset"``."""

    _dates = field_validator("since", "sunset", mode="before")(parse_moment)
    _links = field_validator("link", "sunset_link")(check_link)

    @field_validator("sunset")
    @classmethod
    def _after_since(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        since = info.data.get("since")
        if value is not None and since is not None and value < since:
            raise ValueError(
                f"the sunset ({value.isoformat()}) is before the deprecation "
                f"(since: {since.isoformat()})"
            )
        return value

    @field_validator("since", mode="after")
    @classmethod
    def _since_unless_retired(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        if value is None and not info.data.get("retired", False):
            raise PydanticCustomError("missing", "Field required")
        return value
