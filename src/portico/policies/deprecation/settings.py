"""The settings of the ``deprecation`` policy, validated when the config is loaded.

Dates are ISO 8601 in the YAML: a date (``2026-01-01``, midnight UTC) or a date and time with
its offset (``2026-01-01T09:00:00+01:00``). A time without an offset is refused: the moment a
route stops answering must not depend on the server's time zone.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

__all__ = ["DeprecationSettings"]


def _moment(value: object) -> object:
    """A YAML date or an ISO 8601 string as an aware datetime; anything else is left to
    pydantic's own message."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"{value!r} is not an ISO 8601 date (2026-01-01) or date and time "
                "(2026-01-01T09:00:00Z)"
            ) from None
        if len(value.strip()) == 10:
            return moment.replace(tzinfo=UTC)
    else:
        return value
    if moment.tzinfo is None:
        raise ValueError("give the time zone offset of a date and time (Z for UTC, or +01:00)")
    return moment


def _link(value: str | None) -> str | None:
    if value is None:
        return value
    if not value.startswith(("https://", "http://", "/")) or any(
        c in value for c in ' <>"\\\t\r\n'
    ):
        raise ValueError(
            f"{value!r} is not a link: write an absolute http(s) URL or a path starting with '/'"
        )
    return value


class DeprecationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    since: datetime
    """When the route is (or will be) deprecated: the ``Deprecation`` field (RFC 9745)."""
    sunset: datetime | None = None
    """When it stops answering: the ``Sunset`` field (RFC 8594); from then on, 410
    ``route-sunset``. Not before ``since``."""
    link: str | None = None
    """The migration guide: ``Link: <...>; rel="deprecation"``."""
    sunset_link: str | None = None
    """What the sunset means for callers: ``Link: <...>; rel="sunset"``."""

    _dates = field_validator("since", "sunset", mode="before")(_moment)
    _links = field_validator("link", "sunset_link")(_link)

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
