"""The roles of admin tokens, and what each may do.

- ``viewer`` reads: every ``GET`` of the admin API.
- ``operator`` also changes credentials: creates, rotates and revokes API keys.
- ``admin`` also changes what every tenant depends on: rotates the OAuth signing keys.

A token may be scoped to one tenant: it then sees only that tenant, its consumers and their
credentials (anything of another tenant does not exist for it: 404), and none of what every
tenant shares (services, routes, signing keys: 403).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Role"]


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: Role) -> bool:
        """Whether this role may do what ``needed`` may (each role may do what those below it
        may)."""
        return self.rank >= needed.rank


_RANKS = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}
