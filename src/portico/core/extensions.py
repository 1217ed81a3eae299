"""The one way Portico is extended: a :class:`Catalogue` of named entries.

Policy types (``policies/catalogue.py``), authentication methods (``identity/authn.py``) and
built-in endpoint providers (``assembly.py``) are each one catalogue: a name a config or the
composition root uses, mapped to an entry of one type. A built-in entry is declared by reference,
``"portico.policies.auth:POLICY"`` (the ``module:attribute`` form of Python's entry points), and
its module is imported the first time the name is used. So a catalogue line costs nothing until a
config uses it, the catalogue module imports none of its entries (the layers stay one way), and an
entry whose module or optional dependency is not installed is reported as such ("not available
in this installation") when a config names it, instead of breaking every start.

An entry at hand (a test's policy type, a plugin) is added with :meth:`Catalogue.add`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Generic, TypeVar

__all__ = ["Catalogue", "ExtensionUnavailable"]

E = TypeVar("E")


class ExtensionUnavailable(ValueError):
    """A name that no entry of the catalogue has, or whose module is not part of this
    installation. A ``ValueError``, so that pydantic validators report it as a config error."""


class Catalogue(Generic[E]):
    """Names mapped to entries of one type, built-in ones imported on first use."""

    __slots__ = ("_declared", "_entries", "_entry_type", "kind")

    def __init__(self, kind: str, entry_type: type[E], builtin: Mapping[str, str]) -> None:
        self.kind = kind
        """What an entry is, for messages: ``policy type``, ``authentication method``."""
        self._entry_type = entry_type
        self._declared: dict[str, str] = {}
        self._entries: dict[str, E] = {}
        for name, reference in builtin.items():
            self.declare(name, reference)

    def declare(self, name: str, reference: str) -> None:
        """Name an entry by where it is defined, ``"package.module:ATTRIBUTE"``; the module is
        imported when :meth:`get` first asks for ``name``."""
        module, sep, attribute = reference.partition(":")
        if not (module and sep and attribute.isidentifier()):
            raise ValueError(f"{self.kind} {name!r}: {reference!r} is not 'package.module:NAME'")
        self._claim(name)
        self._declared[name] = reference

    def add(self, name: str, entry: E) -> None:
        """Add an entry at hand."""
        self._claim(name)
        self._entries[name] = entry

    def remove(self, name: str) -> None:
        """Forget ``name`` (an entry added for a while, by a test)."""
        self._declared.pop(name, None)
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        """Every name, sorted, whether or not its module was imported or is installed."""
        return sorted({*self._declared, *self._entries})

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._declared

    def get(self, name: str) -> E:
        """The entry named ``name``, its module imported the first time.

        :class:`ExtensionUnavailable` says ``unknown <kind> 'foo' (known: a, b, c)`` for a name
        that is not in the catalogue, and ``<kind> 'foo' is not available in this installation``
        when its module, or a module that one imports, is not installed."""
        entry = self._entries.get(name)
        if entry is not None:
            return entry
        reference = self._declared.get(name)
        if reference is None:
            known = ", ".join(self.names())
            raise ExtensionUnavailable(f"unknown {self.kind} {name!r} (known: {known})")
        module_name, _, attribute = reference.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # The missing module is named, so that a broken import inside an installed entry is
            # not mistaken for an optional part left out.
            raise ExtensionUnavailable(
                f"{self.kind} {name!r} is not available in this installation "
                f"(no module named {exc.name!r})"
            ) from None
        # A reference names one declared attribute (as an entry point does); the entry is then
        # checked to be of the catalogue's type, so a wrong reference fails here, by name.
        namespace = vars(module)
        if attribute not in namespace:
            raise TypeError(f"{self.kind} {name!r}: {reference} is not defined")
        found = namespace[attribute]
        if not isinstance(found, self._entry_type):
            raise TypeError(
                f"{self.kind} {name!r}: {reference} is "
                f"{type(found).__name__}, not {self._entry_type.__name__}"
            )
        self._entries[name] = found
        return found

    def _claim(self, name: str) -> None:
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is already in the catalogue")
