"""The compiled hot path: ``scripts/build_native.py`` and the guard in ``portico._native``.

The guard is exercised on a tiny package of two modules (one uses the other's class), built with
the real build script in a temporary project, and imported in fresh interpreters: compiled when
the build is current, from the sources (both modules, with a warning naming the cause) when it is
not, and from the sources silently with ``PORTICO_NATIVE=0``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path
from typing import Any

import pytest
from tests.support.gateway import ROOT, PorticoProcess, route, service

import portico
import portico.gateway.connection
from portico import _native

BUILD_SCRIPT = ROOT / "scripts" / "build_native.py"
EXT_SUFFIX = str(sysconfig.get_config_var("EXT_SUFFIX"))
STALE_WARNING = "StaleNativeBuildWarning"

PYPROJECT = f"""\
[tool.portico.native]
root = "src"
manifest = "src/shapes/_native.json"
modules = ["shapes/square.py", "shapes/area.py"]

[tool.mypy]
strict = true
mypy_path = "{ROOT / "src"}"
"""

PACKAGE = {
    "__init__.py": """\
from pathlib import Path

from portico._native import guard

state = guard(Path(__file__).with_name("_native.json"), Path(__file__).parent.parent)
""",
    "square.py": """\
KIND = "square"


class Square:
    def __init__(self, side: int) -> None:
        self.side = side
""",
    "area.py": """\
from shapes.square import Square


def area(square: Square) -> int:
    return square.side * square.side
""",
}

# Prints, as JSON, what a fresh interpreter imported and what the guard said.
PROBE = """\
import json
import shapes, shapes.area, shapes.square
print(json.dumps({
    "state": shapes.state.describe(),
    "files": {m.__name__: m.__file__ for m in (shapes.square, shapes.area)},
    "kind": shapes.square.KIND,
    "area": shapes.area.area(shapes.square.Square(3)),
}))
"""


def has_c_compiler() -> bool:
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shutil.which(str(cc).split()[0]) is not None


def build(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--project", str(project), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def probe(project: Path, **env: str) -> tuple[dict[str, Any], str]:
    """Import the package in a fresh interpreter: (what PROBE printed, its stderr)."""
    environ = {k: v for k, v in os.environ.items() if k != "PORTICO_NATIVE"}
    environ.update(env, PYTHONPATH=str(project / "src"))
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=project,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout), done.stderr


def compiled(result: dict[str, Any]) -> list[bool]:
    return [path.endswith(EXT_SUFFIX) for path in result["files"].values()]


@pytest.fixture(scope="module")
def built_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny project, built once with the real build script."""
    if not has_c_compiler():
        pytest.skip("no C compiler for mypyc")
    project = tmp_path_factory.mktemp("native")
    (project / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    package = project / "src" / "shapes"
    package.mkdir(parents=True)
    for name, text in PACKAGE.items():
        (package / name).write_text(text, encoding="utf-8")
    done = build(project)
    log = project / "build" / "native" / "build.log"
    assert done.returncode == 0, done.stdout + done.stderr + log.read_text(encoding="utf-8")
    assert "compiled 2 modules" in done.stdout
    return project


@pytest.fixture
def project(built_project: Path, tmp_path: Path) -> Path:
    """A copy of the built project this test may change."""
    copy = tmp_path / "project"
    shutil.copytree(built_project, copy, ignore=shutil.ignore_patterns("build"))
    return copy


def test_a_fresh_build_is_imported_compiled(project: Path) -> None:
    result, stderr = probe(project)

    assert result["state"] == "compiled (2 modules)"
    assert compiled(result) == [True, True]
    assert result["area"] == 9
    assert stderr == ""


def test_the_manifest_records_each_source_hash_and_the_abi(project: Path) -> None:
    manifest = json.loads((project / "src/shapes/_native.json").read_text(encoding="utf-8"))

    assert manifest["ext_suffix"] == EXT_SUFFIX
    assert manifest["abi"] == EXT_SUFFIX.strip(".").removesuffix(".so")
    entry = manifest["modules"]["shapes.square"]
    assert entry["source"] == "shapes/square.py"
    assert (
        entry["sha256"]
        == hashlib.sha256((project / "src/shapes/square.py").read_bytes()).hexdigest()
    )
    assert (project / "src" / entry["extension"]).is_file()
    assert (project / "src" / manifest["library"]).is_file()


def test_after_an_edit_the_whole_group_runs_from_source_with_a_warning(project: Path) -> None:
    square = project / "src/shapes/square.py"
    square.write_text(
        square.read_text(encoding="utf-8").replace('"square"', '"edited square"'),
        encoding="utf-8",
    )

    result, stderr = probe(project)

    assert result["kind"] == "edited square"
    # area.py did not change, but it is compiled against square's native class: both go.
    assert compiled(result) == [False, False]
    assert result["area"] == 9
    assert result["state"] == (
        "interpreted: shapes/square.py changed since the build; run make install"
    )
    assert stderr.count(STALE_WARNING) == 1
    assert "shapes/square.py changed since the build; run make install" in stderr


def test_portico_native_0_runs_the_sources_silently(project: Path) -> None:
    result, stderr = probe(project, PORTICO_NATIVE="0")

    assert compiled(result) == [False, False]
    assert result["state"] == "interpreted: PORTICO_NATIVE=0"
    assert stderr == ""


def test_a_missing_extension_runs_the_sources_with_a_warning(project: Path) -> None:
    (project / "src/shapes" / f"area{EXT_SUFFIX}").unlink()

    result, stderr = probe(project)

    assert compiled(result) == [False, False]
    assert f"shapes/area{EXT_SUFFIX} missing; run make install" in stderr


def test_extensions_left_without_a_manifest_are_not_used(project: Path) -> None:
    (project / "src/shapes/_native.json").unlink()

    result, stderr = probe(project)

    assert compiled(result) == [False, False]
    assert "compiled modules without a manifest are ignored; run make install" in stderr


def test_a_build_for_another_interpreter_runs_the_sources_with_a_warning(project: Path) -> None:
    manifest_path = project / "src/shapes/_native.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest.update(abi="cpython-399-x86_64-linux-gnu", ext_suffix=".cpython-399.so")
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")

    result, stderr = probe(project)

    assert compiled(result) == [False, False]
    assert "built for cpython-399-x86_64-linux-gnu" in stderr


def test_an_up_to_date_build_is_not_compiled_again(project: Path) -> None:
    extension = project / "src/shapes" / f"square{EXT_SUFFIX}"
    before = extension.stat().st_mtime_ns

    done = build(project)

    assert done.returncode == 0
    assert done.stdout.strip() == "native: 2 compiled modules up to date"
    assert extension.stat().st_mtime_ns == before


def test_a_rebuild_removes_the_extensions_of_modules_left_out_of_the_list(
    project: Path,
) -> None:
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text(encoding="utf-8").replace(', "shapes/area.py"', ""),
        encoding="utf-8",
    )

    done = build(project)

    assert done.returncode == 0, done.stdout + done.stderr
    assert not (project / "src/shapes" / f"area{EXT_SUFFIX}").exists()
    manifest = json.loads((project / "src/shapes/_native.json").read_text(encoding="utf-8"))
    assert list(manifest["modules"]) == ["shapes.square"]
    result, stderr = probe(project)
    assert compiled(result) == [True, False]
    assert result["area"] == 9
    assert stderr == ""


def test_this_suite_runs_the_compiled_gateway() -> None:
    """``make test`` builds the hot path first, so the suite tests the code that is deployed."""
    if not has_c_compiler():
        pytest.skip("no C compiler: the gateway runs as pure Python")
    if os.environ.get("PORTICO_NATIVE", "").lower() in _native.DISABLED_VALUES:
        pytest.skip("PORTICO_NATIVE=0: the gateway runs as pure Python")
    with (ROOT / "pyproject.toml").open("rb") as f:
        listed = tomllib.load(f)["tool"]["portico"]["native"]["modules"]

    assert _native.status() == f"compiled ({len(listed)} modules)", "run make install"
    assert portico.gateway.connection.__file__ is not None
    assert portico.gateway.connection.__file__.endswith(EXT_SUFFIX)


def test_portico_serve_logs_how_its_gateway_code_runs(tmp_path: Path) -> None:
    config = {
        "services": {"main": service("http://127.0.0.1:9")},
        "routes": [route("main", "/{rest:path}")],
    }
    portico_process = PorticoProcess(tmp_path, config)
    try:
        assert f"gateway code: {_native.status()}" in portico_process.log()
    finally:
        portico_process.stop()
