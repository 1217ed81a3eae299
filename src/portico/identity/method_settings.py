"""The per-route options of the authentication methods, as the ``auth`` policy validates them.

They live apart from the methods themselves: the methods' request-time code is compiled with
mypyc (see docs/architecture.md, "Compiled hot path"), which cannot compile pydantic models.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from portico.config.model import HeaderName

__all__ = ["ApiKeySettings", "BearerSettings"]


class ApiKeySettings(BaseModel):
    """Per-route settings of the method: ``api_key: {header: X-Partner-Key}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    header: HeaderName = "X-API-Key"
    authorization: bool = True
    """Also accept ``Authorization: ApiKey <key>``."""
    hide_credentials: bool = True
    """Remove the key from the request sent upstream."""


class BearerSettings(BaseModel):
    """Per-route options of the ``oauth`` and ``jwt:<provider>`` methods:
    ``oauth: {hide_credentials: false}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    hide_credentials: bool = True
    """Remove the ``Authorization`` field from the request sent upstream once the token is
    verified (the upstream gets the identity headers). ``false`` passes the token on, for an
    upstream that verifies it again or relays it."""
