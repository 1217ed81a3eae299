"""The settings of the ``headers`` policy, validated when the config is loaded.

They live apart from the request-time code (:mod:`.policy`), which is compiled with mypyc, and
mypyc cannot compile pydantic models.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

from portico.config.model import HeaderName

__all__ = ["UNRENAMEABLE", "HeaderEdits", "HeadersSettings"]

UNRENAMEABLE = frozenset(
    {
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Fields that frame the message or belong to one hop: Portico sets them itself, so a rename
from or to one of them would either vanish or break the framing."""


class HeaderEdits(BaseModel):
    """Edits of one side's header fields, applied in the order ``remove``, ``rename``, ``set``,
    ``add`` (the order of Kong's request-transformer)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    set: dict[HeaderName, str] = {}
    """Replace every field of that name by one field with this value."""
    add: dict[HeaderName, str] = {}
    """Append a field, keeping the fields of that name already there."""
    remove: tuple[HeaderName, ...] = ()
    """Drop every field of that name."""
    rename: dict[HeaderName, HeaderName] = {}
    """Give every field of the first name the second name, keeping its value and place; when
    a field of the first name is there, the fields already called by the second are dropped (a
    client cannot send its own alongside). All renames apply at once: ``{A: B, B: C}`` swaps
    nothing twice."""

    @field_validator("rename")
    @classmethod
    def _renamable(cls, value: dict[str, str]) -> dict[str, str]:
        targets: dict[str, str] = {}
        sources = {old.lower() for old in value}
        if len(sources) != len(value):
            raise ValueError("a field is renamed twice (names are case-insensitive)")
        for old, new in value.items():
            for name in (old, new):
                lower = name.lower()
                if lower in UNRENAMEABLE or lower.startswith("x-portico-"):
                    raise ValueError(
                        f"{name!r} cannot be renamed: Portico sets it itself (framing, hop-by-hop "
                        "and X-Portico-* identity fields)"
                    )
            if old.lower() == new.lower():
                raise ValueError(f"{old!r} is renamed to itself")
            earlier = targets.get(new.lower())
            if earlier is not None:
                raise ValueError(f"{earlier!r} and {old!r} are both renamed to {new!r}")
            targets[new.lower()] = old
        return value


class HeadersSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    request: HeaderEdits = HeaderEdits()
    """Edits of the request before it goes upstream."""
    response: HeaderEdits = HeaderEdits()
    """Edits of the response before it goes to the client (Portico's own answers included)."""
