"""What the API catalog says of a service (docs/catalog.md): its owner, description, tags, the
API and version it is, its lifecycle and its audience.

    services:
      orders-v1:
        targets: [http://orders-v1.internal:8080]
        api: orders
        version: "1"
        owner: team-orders
        description: Orders, first version.
        tags: [orders, commerce]
        audience: public
        lifecycle:
          state: deprecated
          since: 2026-01-01
          sunset: 2030-06-30
          link: https://developer.example.com/orders/migrate-to-v2

**A version is a service.** In Portico a version of an API is deployed, documented and routed
on its own (its targets, its OpenAPI document, its policies, its routes: ``/v1/...`` and
``/v2/...`` already reach two services), so it is the service that carries a ``version`` and
a lifecycle, and ``api`` names what the versions have in common. The catalog lists, for each
service, the versions of its API (every service of the same ``api``).

The lifecycle is more than a label: ``deprecated`` gives every route of the service the
``deprecation`` policy's fields, ``retired`` answers 410 on them, and ``design`` routes are not
served (:mod:`portico.policies.lifecycle` says how); a change of lifecycle is written to the
audit log (:mod:`portico.config.lifecycle`).

This module knows no capability, as the rest of ``config/``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from portico.config.fields import Model

__all__ = [
    "AUDIENCES",
    "LIFECYCLE_STATES",
    "Audience",
    "Lifecycle",
    "LifecycleState",
    "Link",
    "Moment",
    "Tag",
    "Version",
    "check_link",
    "parse_moment",
    "visible_to",
]

LifecycleState = Literal["design", "beta", "stable", "deprecated", "retired"]
LIFECYCLE_STATES: tuple[LifecycleState, ...] = ("design", "beta", "stable", "deprecated", "retired")
Audience = Literal["public", "partner", "internal"]
AUDIENCES: tuple[Audience, ...] = ("public", "partner", "internal")
"""Narrowest first: what the public sees, partners see too, and internal callers see all."""


def visible_to(service_audience: Audience, audience: Audience) -> bool:
    """Whether a service of ``service_audience`` is shown to ``audience`` (public ⊂ partner ⊂
    internal)."""
    return AUDIENCES.index(service_audience) <= AUDIENCES.index(audience)


def parse_moment(value: object) -> object:
    """A YAML date or an ISO 8601 string as an aware datetime (a plain date is midnight UTC);
    anything else is left to pydantic's own message. A date and time without an offset is
    refused: the moment a route stops answering must not depend on the server's time zone."""
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


def check_link(value: str | None) -> str | None:
    """A link given in a ``Link`` field: an absolute http(s) URL or a path, nothing that could
    break the field's syntax."""
    if value is None:
        return value
    if not value.startswith(("https://", "http://", "/")) or any(
        c in value for c in ' <>"\\\t\r\n'
    ):
        raise ValueError(
            f"{value!r} is not a link: write an absolute http(s) URL or a path starting with '/'"
        )
    return value


Moment = Annotated[datetime, BeforeValidator(parse_moment)]
Link = Annotated[str, AfterValidator(check_link)]
_TAG = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$"
Tag = Annotated[str, Field(pattern=_TAG)]


def _version_text(value: object) -> object:
    # `version: 2` is read by YAML as a number: the same as "2". A float (1.10) would not be.
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        raise ValueError(f"write the version in quotes: YAML reads {value!r} as a number")
    return value


Version = Annotated[
    str,
    BeforeValidator(_version_text),
    Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"),
]


class Lifecycle(Model):
    """Where a service is in its life: ``lifecycle: beta``, or with the dates and links of its
    deprecation."""

    state: LifecycleState = "stable"
    """``design`` (not served yet), ``beta``, ``stable``, ``deprecated`` (served, announced on
    every response), ``retired`` (410 on every route)."""
    since: Moment | None = None
    """When the service is (or will be) deprecated: the ``Deprecation`` field (RFC 9745).
    Needed by ``deprecated``."""
    sunset: Moment | None = None
    """When it stops answering: the ``Sunset`` field (RFC 8594), then 410."""
    link: Link | None = None
    """The migration guide: ``Link: <...>; rel="deprecation"``."""
    sunset_link: Link | None = None
    """What the sunset means for callers: ``Link: <...>; rel="sunset"``."""

    @model_validator(mode="before")
    @classmethod
    def _from_state(cls, value: Any) -> Any:
        return {"state": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Lifecycle:
        announced = any(
            v is not None for v in (self.since, self.sunset, self.link, self.sunset_link)
        )
        if announced and self.state not in ("deprecated", "retired"):
            raise ValueError(
                "since, sunset and the links announce a deprecation: they go with state "
                f"deprecated or retired, not {self.state}"
            )
        if self.state == "deprecated" and self.since is None:
            raise ValueError(
                "a deprecated service needs since: the date of its Deprecation field "
                "(2026-01-01, or a date and time with its offset)"
            )
        if self.since is not None and self.sunset is not None and self.sunset < self.since:
            raise ValueError(
                f"the sunset ({self.sunset.isoformat()}) is before the deprecation "
                f"(since: {self.since.isoformat()})"
            )
        return self

    def summary(self) -> dict[str, Any]:
        """As JSON, only what is set: what the audit log and the admin API show."""
        return self.model_dump(mode="json", exclude_none=True)
