"""The settings of the ``validation`` policy, validated when the config is loaded.

They live apart from the request-time code (:mod:`.policy`), which is compiled with mypyc, and
mypyc cannot compile pydantic models.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from portico.config.model import Size

__all__ = ["ValidationSettings"]


class ValidationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    base_path: str | None = None
    """The part of the upstream path before the document's paths; by default the path of the
    document's first ``servers`` URL (none: the paths start at ``/``)."""
    undocumented: Literal["reject", "pass"] = "reject"
    """A request whose path (404) or method (405) the document does not describe."""
    max_body_size: Size = 1024 * 1024
    """The largest JSON body parsed (larger: 413)."""
    max_depth: int = Field(32, ge=1, le=500)
    """The deepest nesting of arrays and objects in a JSON body."""
    max_array_length: int = Field(10_000, ge=1)
    max_string_length: int = Field(100_000, ge=1)
    """In characters, for every string and key of a JSON body."""
    max_errors: int = Field(50, ge=1, le=1000)
    """The most errors one answer lists."""
    responses: Literal["off", "report"] = "off"
    """``report``: check the upstream's JSON responses too, and log and count what does not
    match the document (never blocking)."""
    response_max_body_size: Size = 1024 * 1024
    """The largest response body checked (larger ones pass unchecked)."""

    @field_validator("base_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and value and not value.startswith("/"):
            raise ValueError("base_path is a path such as /v1 (or empty)")
        return value
