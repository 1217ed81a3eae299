"""The root of Portico's exception hierarchy: an error the user can fix.

Each layer derives its own errors from :class:`PorticoError` (``ConfigError``, ``StoreError``,
the listener and command errors) and gives them a message that says what failed, the likely
cause and what to do. The ``portico`` command prints that message as it is, without a traceback
(``portico.cli.failures``); anything that is not a ``PorticoError`` is a bug, reported as one.
"""

from __future__ import annotations

__all__ = ["PorticoError"]


class PorticoError(Exception):
    """A failure the user can fix; ``str()`` says what failed, why, and what to do."""
