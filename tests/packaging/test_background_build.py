"""The build ``make demo`` does not wait for: ``build_native.py --stage`` and ``--adopt``.

A demo starts interpreted while the hot path compiles beside it into ``build/native/staged/``;
the next start adopts that build if it still matches the sources. Checked on the tiny two-module
package of tests/test_native.py, with the real build script, imported in fresh interpreters.
"""

from __future__ import annotations

import fcntl
import shutil
from pathlib import Path

import pytest
from tests.test_native import EXT_SUFFIX, PACKAGE, PYPROJECT, build, compiled, has_c_compiler, probe

NEEDS_BUILD = 3  # build_native.py --adopt: nothing to adopt, start a background build


def make_project(folder: Path) -> Path:
    (folder / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    package = folder / "src" / "shapes"
    package.mkdir(parents=True)
    for name, text in PACKAGE.items():
        (package / name).write_text(text, encoding="utf-8")
    return folder


def in_place(project: Path) -> list[Path]:
    """Build products in the import root: what a running interpreter could pick up."""
    package = project / "src" / "shapes"
    return [*package.glob(f"*{EXT_SUFFIX}"), *package.glob("_native.json")]


@pytest.fixture(scope="module")
def staged_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny project with a background build staged, compiled once for the module."""
    if not has_c_compiler():
        pytest.skip("no C compiler for mypyc")
    project = make_project(tmp_path_factory.mktemp("staged"))
    done = build(project, "--stage")
    log = project / "build" / "native" / "build.log"
    assert done.returncode == 0, done.stdout + done.stderr + log.read_text(encoding="utf-8")
    assert done.stdout.strip().startswith("native: compiled 2 modules with mypyc in ")
    assert done.stdout.strip().endswith("; the next start uses them")
    return project


@pytest.fixture
def project(staged_project: Path, tmp_path: Path) -> Path:
    """A copy of the staged project (the staged build, not the intermediates) to change."""
    copy = tmp_path / "project"
    shutil.copytree(staged_project, copy, ignore=shutil.ignore_patterns("build"))
    shutil.copytree(
        staged_project / "build" / "native" / "staged", copy / "build" / "native" / "staged"
    )
    return copy


def test_a_first_start_is_told_to_build_in_the_background(tmp_path: Path) -> None:
    fresh = make_project(tmp_path)

    done = build(fresh, "--adopt")

    assert done.returncode == NEEDS_BUILD, done.stdout + done.stderr
    assert "compiling the hot path (2 modules) with mypyc in the background" in done.stdout
    assert "this one runs interpreted" in done.stdout


def test_a_staged_build_leaves_the_import_root_alone(project: Path) -> None:
    assert in_place(project) == []

    result, stderr = probe(project)

    assert result["state"] == "interpreted: no native build"
    assert compiled(result) == [False, False]
    assert stderr == ""


def test_the_next_start_adopts_the_staged_build_and_runs_compiled(project: Path) -> None:
    done = build(project, "--adopt")

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "native: using the 2 modules compiled in the background"
    assert not (project / "build" / "native" / "staged").exists()
    result, stderr = probe(project)
    assert result["state"] == "compiled (2 modules)"
    assert compiled(result) == [True, True]
    assert stderr == ""
    again = build(project, "--adopt")
    assert (again.returncode, again.stdout.strip()) == (0, "native: 2 compiled modules up to date")


def test_a_staged_build_of_sources_edited_since_is_dropped(project: Path) -> None:
    square = project / "src/shapes/square.py"
    square.write_text(
        square.read_text(encoding="utf-8").replace('"square"', '"edited square"'),
        encoding="utf-8",
    )

    done = build(project, "--adopt")

    assert done.returncode == NEEDS_BUILD, done.stdout + done.stderr
    assert not (project / "build" / "native" / "staged").exists()
    assert in_place(project) == []
    result, _ = probe(project)
    assert result["kind"] == "edited square"
    assert compiled(result) == [False, False]


def test_an_in_place_build_takes_a_current_staged_build_instead_of_compiling(
    project: Path,
) -> None:
    done = build(project)

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().startswith("native: using the 2 modules compiled in the background")
    assert not (project / "build" / "native" / "build.log").exists()  # mypyc did not run
    result, _ = probe(project)
    assert compiled(result) == [True, True]


def test_while_a_build_runs_a_start_neither_waits_nor_starts_another(project: Path) -> None:
    lock = project / "build" / "native" / "lock"
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)

        adopting = build(project, "--adopt")
        staging = build(project, "--stage")

    assert adopting.returncode == 0, adopting.stdout + adopting.stderr
    assert "still compiling in the background" in adopting.stdout
    assert "this start runs interpreted" in adopting.stdout
    assert (staging.returncode, staging.stdout.strip()) == (
        0,
        "native: another build is running; this one is not needed",
    )
    assert in_place(project) == []
