"""The one extension mechanism (``portico.core.extensions.Catalogue``): built-in entries named by
reference and imported on first use, one clear error for an unknown name, and "not available in
this installation" for an entry whose module or dependency is missing. And every built-in
reference of Portico's catalogues (policy types, authentication methods, endpoint providers)
resolves to an entry of its catalogue's type."""

from __future__ import annotations

import re
import sys
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from portico.assembly import ENDPOINTS
from portico.core.extensions import Catalogue, Deferred, ExtensionUnavailable
from portico.identity.authn import METHODS, AuthMethod
from portico.identity.context import EndpointProvider
from portico.policies.catalogue import POLICIES
from portico.policies.registry import PolicyType


@dataclass(frozen=True)
class Widget:
    label: str


def write_module(directory: Path, source: str) -> str:
    """A module of its own name on ``sys.path``; returns that name."""
    name = f"widget_{uuid.uuid4().hex}"
    (directory / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return name


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_built_in_entry_is_imported_the_first_time_it_is_asked_for(modules: Path) -> None:
    name = write_module(
        modules,
        f"""
        from {__name__} import Widget

        WIDGET = Widget("lazy")
        """,
    )
    widgets = Catalogue("widget", Widget, {"lazy": f"{name}:WIDGET"})

    assert name not in sys.modules  # declaring costs nothing
    assert "lazy" in widgets
    assert widgets.get("lazy") == Widget("lazy")
    assert name in sys.modules
    assert widgets.get("lazy") is widgets.get("lazy")


def test_an_unknown_name_is_refused_with_every_known_one() -> None:
    widgets = Catalogue("widget", Widget, {"gear": "nowhere.gears:GEAR"})
    widgets.add("bolt", Widget("bolt"))

    with pytest.raises(ExtensionUnavailable) as caught:
        widgets.get("boltt")

    assert str(caught.value) == "unknown widget 'boltt' (known: bolt, gear)"
    assert isinstance(caught.value, ValueError)  # pydantic validators report it as a config error


def test_an_entry_whose_dependency_is_not_installed_is_not_available(modules: Path) -> None:
    name = write_module(
        modules,
        f"""
        import portico_no_such_dependency
        from {__name__} import Widget

        WIDGET = Widget("optional")
        """,
    )
    widgets = Catalogue(
        "widget", Widget, {"optional": f"{name}:WIDGET", "absent": "portico.no_such_module:WIDGET"}
    )

    with pytest.raises(ExtensionUnavailable) as dependency:
        widgets.get("optional")
    with pytest.raises(ExtensionUnavailable) as module:
        widgets.get("absent")

    assert str(dependency.value) == (
        "widget 'optional' is not available in this installation "
        "(no module named 'portico_no_such_dependency')"
    )
    assert str(module.value).startswith("widget 'absent' is not available in this installation")


def test_a_reference_to_something_else_fails_naming_the_reference(modules: Path) -> None:
    name = write_module(modules, 'WIDGET = "not a widget"\n')
    widgets = Catalogue("widget", Widget, {"odd": f"{name}:WIDGET", "gone": f"{name}:GONE"})

    with pytest.raises(TypeError, match=f"widget 'odd': {name}:WIDGET is str, not Widget"):
        widgets.get("odd")
    with pytest.raises(TypeError, match=f"widget 'gone': {name}:GONE is not defined"):
        widgets.get("gone")


def test_a_name_is_taken_once_and_a_reference_must_name_an_attribute() -> None:
    widgets = Catalogue("widget", Widget, {"gear": "nowhere.gears:GEAR"})

    with pytest.raises(ValueError, match="widget 'gear' is already in the catalogue"):
        widgets.add("gear", Widget("another gear"))
    with pytest.raises(ValueError, match=re.escape("is not 'package.module:NAME'")):
        widgets.declare("bolt", "nowhere.bolts")

    widgets.remove("gear")
    widgets.add("gear", Widget("another gear"))
    assert widgets.names() == ["gear"]
    assert widgets.get("gear") == Widget("another gear")


@pytest.mark.parametrize(
    ("catalogue", "entry_type"),
    [(POLICIES, PolicyType), (METHODS, AuthMethod), (ENDPOINTS, EndpointProvider)],
    ids=["policy types", "authentication methods", "endpoint providers"],
)
def test_every_built_in_reference_resolves_to_an_entry_of_its_catalogue(
    catalogue: Catalogue[object], entry_type: type
) -> None:
    loaded = {name: catalogue.get(name) for name in catalogue.names()}

    assert loaded
    assert all(isinstance(entry, entry_type) for entry in loaded.values())


def test_a_deferred_value_is_imported_when_first_asked_and_checked_then(modules: Path) -> None:
    name = write_module(modules, 'GEAR = Widget = None\nLABEL = "gear"\n')

    label: Deferred[str] = Deferred(f"{name}:LABEL", str)
    assert name not in sys.modules  # nothing imported yet
    assert label.reference == f"{name}:LABEL"
    assert label.get() == "gear" and name in sys.modules
    assert label.reference is None  # resolved once
    assert Deferred(42).get() == 42  # a value at hand is given back as it is

    with pytest.raises(TypeError, match=f"{name}:GEAR is NoneType, not str"):
        Deferred(f"{name}:GEAR", str).get()
    with pytest.raises(ValueError, match=re.escape("is not 'package.module:NAME'")):
        Deferred("nowhere.gears")  # the form is checked at once, not at the first build
    missing = Deferred("nowhere.gears:build")
    with pytest.raises(ExtensionUnavailable, match=re.escape("gears:build is not available")):
        missing.get()


@pytest.mark.parametrize(
    "entry",
    [*(POLICIES.get(n) for n in POLICIES.names()), *(METHODS.get(n) for n in METHODS.names())],
    ids=[*POLICIES.names(), *(f"auth method {n}" for n in METHODS.names())],
)
def test_every_built_in_policy_and_method_names_code_that_exists(
    entry: PolicyType[Any] | AuthMethod[Any],
) -> None:
    """Declared by reference so that ``portico check`` does not import them: each reference
    names a function of the module it points to."""
    assert callable(entry._build.get())
