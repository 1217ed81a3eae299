"""The settings of the ``headers`` policy, validated when the config is loaded.

They live apart from the request-time code (:mod:`.policy`), which is compiled with mypyc, and
mypyc cannot compile pydantic models.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from portico.config.model import HeaderName

__all__ = ["HeaderEdits", "HeadersSettings"]


class HeaderEdits(BaseModel):
    """Edits of one side's header fields, applied in the order ``remove``, ``set``, ``add``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    set: dict[HeaderName, str] = {}
    """Replace every field of that name by one field with this value."""
    add: dict[HeaderName, str] = {}
    """Append a field, keeping the fields of that name already there."""
    remove: tuple[HeaderName, ...] = ()
    """Drop every field of that name."""


class HeadersSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    request: HeaderEdits = HeaderEdits()
    """Edits of the request before it goes upstream."""
    response: HeaderEdits = HeaderEdits()
    """Edits of the response before it goes to the client (Portico's own answers included)."""
