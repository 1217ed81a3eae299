"""Use the mypyc-compiled hot path only while it matches its sources.

``make install`` compiles the modules listed under ``[tool.portico.native]`` in pyproject.toml
(``scripts/build_native.py``) into extension modules next to their ``.py`` files, and writes a
manifest, ``_native.json``, with the SHA-256 of the exact source each one was compiled from. The
import system prefers an extension module to a ``.py`` in the same folder, so after an edit the old
build would silently shadow the new code.

Before any of those modules is imported, :func:`guard` checks the manifest against the sources, the
extensions and this interpreter's ABI. If anything is off, a finder placed first on
``sys.meta_path`` loads *every* module of the manifest from its ``.py``: modules compiled together
call each other's native classes directly, so one group is either all compiled or all interpreted.
``PORTICO_NATIVE=0`` in the environment does the same, silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from dataclasses import dataclass
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec
from pathlib import Path
from types import ModuleType

MANIFEST_NAME = "_native.json"
MANIFEST_FORMAT = 1  # what scripts/build_native.py writes
DISABLED_VALUES = frozenset({"0", "false", "no", "off"})
ABI = EXTENSION_SUFFIXES[0].strip(".").removesuffix(".so")  # e.g. cpython-311-x86_64-linux-gnu


class StaleNativeBuildWarning(RuntimeWarning):
    """The compiled modules do not match their sources; they run as Python instead."""


@dataclass(frozen=True, slots=True)
class NativeState:
    """What :func:`guard` decided for one manifest."""

    compiled: bool
    modules: int
    reason: str = ""

    def describe(self) -> str:
        if self.compiled:
            return f"compiled ({self.modules} modules)"
        return f"interpreted: {self.reason}"


@dataclass(frozen=True, slots=True)
class CompiledModule:
    name: str  # portico.gateway.server
    source: str  # portico/gateway/server.py, relative to the import root
    extension: str  # portico/gateway/server.cpython-311-x86_64-linux-gnu.so
    sha256: str  # of the source it was compiled from


@dataclass(frozen=True, slots=True)
class Manifest:
    abi: str
    ext_suffix: str
    library: str  # the group's shared library, relative to the import root
    modules: tuple[CompiledModule, ...]

    @classmethod
    def parse(cls, raw: bytes) -> Manifest:
        data = json.loads(raw)
        if data["format"] != MANIFEST_FORMAT:
            raise ValueError(f"format {data['format']!r}, expected {MANIFEST_FORMAT}")
        modules = tuple(
            CompiledModule(
                name=name,
                source=str(entry["source"]),
                extension=str(entry["extension"]),
                sha256=str(entry["sha256"]),
            )
            for name, entry in data["modules"].items()
        )
        return cls(
            abi=str(data["abi"]),
            ext_suffix=str(data["ext_suffix"]),
            library=str(data["library"]),
            modules=modules,
        )


@dataclass(frozen=True, slots=True)
class SourceFinder:
    """A ``sys.meta_path`` finder that loads the named modules from their ``.py`` files."""

    sources: dict[str, Path]

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        source = self.sources.get(fullname)
        if source is None:
            return None
        from importlib.util import spec_from_file_location

        package_dir = [str(source.parent)] if source.name == "__init__.py" else None
        return spec_from_file_location(fullname, source, submodule_search_locations=package_dir)


_guarded: dict[Path, NativeState] = {}


def guard(manifest_path: Path, root: Path) -> NativeState:
    """Let the modules of ``manifest_path`` import compiled only if the build is current.

    ``root`` is the import root the manifest's paths are relative to (``src/`` for Portico); the
    manifest sits in the package it covers. Call this before any of its modules is imported;
    calling it again returns the first answer.
    """
    manifest_path = manifest_path.resolve()
    if manifest_path not in _guarded:
        _guarded[manifest_path] = _decide(manifest_path, root.resolve())
    return _guarded[manifest_path]


def _decide(manifest_path: Path, root: Path) -> NativeState:
    disabled = os.environ.get("PORTICO_NATIVE", "").strip().lower() in DISABLED_VALUES
    try:
        manifest = Manifest.parse(manifest_path.read_bytes())
    except FileNotFoundError:
        return _without_manifest(manifest_path, root, "no native build", disabled)
    except (ValueError, LookupError, TypeError, AttributeError) as exc:
        reason = f"unreadable {manifest_path.name} ({exc!r}); run make install"
        return _without_manifest(manifest_path, root, reason, disabled)

    sources = {module.name: root / module.source for module in manifest.modules}
    reason = "PORTICO_NATIVE=0" if disabled else _staleness(manifest, root)
    if not reason:
        return NativeState(compiled=True, modules=len(sources))
    sys.meta_path.insert(0, SourceFinder(sources))
    if not disabled:
        _warn(f"{reason} (until then its {len(sources)} modules run as Python)", manifest_path)
    return NativeState(compiled=False, modules=len(sources), reason=reason)


def _staleness(manifest: Manifest, root: Path) -> str:
    """Why the build does not match what would be imported, or "" when it does."""
    if manifest.ext_suffix != EXTENSION_SUFFIXES[0]:
        return f"built for {manifest.abi}, this interpreter is {ABI}; run make install"
    products = [manifest.library] + [module.extension for module in manifest.modules]
    missing = [product for product in products if not (root / product).is_file()]
    if missing:
        return f"{', '.join(missing)} missing; run make install"
    changed = [
        module.source
        for module in manifest.modules
        if _sha256(root / module.source) != module.sha256
    ]
    if changed:
        return f"{', '.join(changed)} changed since the build; run make install"
    return ""


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return "(no source)"


def _without_manifest(manifest_path: Path, root: Path, reason: str, disabled: bool) -> NativeState:
    """No usable manifest: nothing is known compiled, but extensions may be left next to sources.

    Such leftovers (a build interrupted before its manifest, a manifest deleted by hand) cannot be
    checked, so they are not used either.
    """
    leftovers = _extensions_beside_sources(manifest_path.parent, root)
    if disabled:
        reason = "PORTICO_NATIVE=0"
    if not leftovers:
        return NativeState(compiled=False, modules=0, reason=reason)
    sys.meta_path.insert(0, SourceFinder(leftovers))
    if not disabled:
        reason = f"{reason}, and compiled modules without a manifest are ignored; run make install"
        _warn(reason, manifest_path)
    return NativeState(compiled=False, modules=len(leftovers), reason=reason)


def _extensions_beside_sources(package: Path, root: Path) -> dict[str, Path]:
    """Module name -> ``.py`` for every extension module under ``package`` that shadows one."""
    found: dict[str, Path] = {}
    for folder, _, files in os.walk(package):
        for file in files:
            for suffix in EXTENSION_SUFFIXES:
                if file.endswith(suffix):
                    source = Path(folder, file.removesuffix(suffix) + ".py")
                    if source.is_file():
                        parts = source.relative_to(root).with_suffix("").parts
                        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
                        found[name] = source
                    break
    return found


def _warn(message: str, manifest_path: Path) -> None:
    # Attributed to the manifest, line 0: the warning names the build, with no line of this
    # module quoted under it.
    warnings.warn_explicit(message, StaleNativeBuildWarning, str(manifest_path), 0)


def install() -> NativeState:
    """Guard Portico's own compiled modules (``portico/__init__.py`` calls this first)."""
    package = Path(__file__).parent
    return guard(package / MANIFEST_NAME, package.parent)


def status() -> str:
    """One line for the logs: ``compiled (11 modules)`` or ``interpreted: <why>``."""
    return install().describe()
