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

An entry may itself name its code by reference (:class:`Deferred`): a policy type or an
authentication method is declared with its settings model, which ``portico check`` needs, and
the reference of its request-time code, which only building a gateway imports. So checking a
config loads neither the compiled request-time modules nor their libraries (cryptography, PyJWT,
the signatures library).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Generic, TypeVar

__all__ = ["Catalogue", "Deferred", "ExtensionUnavailable", "resolve"]

E = TypeVar("E")
T = TypeVar("T")


class ExtensionUnavailable(ValueError):
    """A name that no entry of the catalogue has, or whose module is not part of this
    installation. A ``ValueError``, so that pydantic validators report it as a config error."""


def _split(reference: str) -> tuple[str, str]:
    module, sep, attribute = reference.partition(":")
    if not (module and sep and attribute.isidentifier()):
        raise ValueError(f"{reference!r} is not 'package.module:NAME'")
    return module, attribute


def resolve(reference: str) -> object:
    """What ``"package.module:NAME"`` names, its module imported (``ModuleNotFoundError`` when
    it, or a module it imports, is not installed; ``TypeError`` when it defines no ``NAME``)."""
    module_name, attribute = _split(reference)
    namespace = vars(importlib.import_module(module_name))
    if attribute not in namespace:
        raise TypeError(f"{reference} is not defined")
    return namespace[attribute]


class Deferred(Generic[T]):
    """A value given at hand, or by reference and imported the first time :meth:`get` asks.

    The reference's form is checked at once; its target, when first resolved: a module that is
    not installed is :class:`ExtensionUnavailable` (a ``ValueError``: building the gateway that
    needs it fails as a config error does), and a target not of ``kind`` a ``TypeError``."""

    __slots__ = ("_kind", "_reference", "_value")

    def __init__(self, value: T | str, kind: type | None = None) -> None:
        self._kind = kind
        self._value: T | None = None
        self._reference: str | None = None
        if isinstance(value, str):
            _split(value)
            self._reference = value
        else:
            self._value = value

    @property
    def reference(self) -> str | None:
        """The reference, until the value is resolved; ``None`` for a value given at hand."""
        return self._reference

    def get(self) -> T:
        if self._reference is not None:
            try:
                found = resolve(self._reference)
            except ModuleNotFoundError as exc:
                raise ExtensionUnavailable(
                    f"{self._reference} is not available in this installation "
                    f"(no module named {exc.name!r})"
                ) from None
            if self._kind is not None and not isinstance(found, self._kind):
                raise TypeError(
                    f"{self._reference} is {type(found).__name__}, not {self._kind.__name__}"
                )
            self._value = found  # type: ignore[assignment]
            self._reference = None
        return self._value  # type: ignore[return-value]


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
        try:
            _split(reference)
        except ValueError as exc:
            raise ValueError(f"{self.kind} {name!r}: {exc}") from None
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
        try:
            found = resolve(reference)
        except ModuleNotFoundError as exc:
            # The missing module is named, so that a broken import inside an installed entry is
            # not mistaken for an optional part left out.
            raise ExtensionUnavailable(
                f"{self.kind} {name!r} is not available in this installation "
                f"(no module named {exc.name!r})"
            ) from None
        except TypeError as exc:
            raise TypeError(f"{self.kind} {name!r}: {exc}") from None
        # A reference names one declared attribute (as an entry point does); the entry is then
        # checked to be of the catalogue's type, so a wrong reference fails here, by name.
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
