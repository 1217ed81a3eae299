"""Compile the gateway's hot modules with mypyc, in place, and record what was compiled.

The modules are listed once, under ``[tool.portico.native]`` in pyproject.toml::

    [tool.portico.native]
    root = "src"                              # the import root the paths are relative to
    manifest = "src/portico/_native.json"     # written last, read by portico._native
    modules = ["portico/gateway/server.py", ...]

``make install`` runs this when a listed source, the list or this script changed. It compiles the
modules as one mypyc group (one shared library, ``<package>/_compiled__mypyc.<abi>.so``, and a
small extension per module next to its ``.py``), keeps every intermediate in ``build/native/``,
removes the extensions of a previous build, and writes the manifest: the SHA-256 of each source
it compiled and the ABI. ``portico._native`` refuses a build that no longer matches.

``make demo`` does not wait for a build (it takes minutes): ``--adopt`` puts a build finished in
the background into place, or says that one is needed, and ``--stage`` is that background build.
It compiles into ``build/native/staged/`` and never touches ``src/``: a running demo imports some
modules late, and must not find compiled ones among its interpreted ones. The next start adopts
the staged build when it still matches the sources. One build runs at a time (a lock in
``build/native/``); an in-place build waits for a background one and adopts it when it can.

When there is no C compiler or the build fails, it says so in one line, leaves no compiled module
behind, and exits 1 (the Makefile carries on: Portico runs as pure Python).

    python scripts/build_native.py            build, unless the manifest already matches
    python scripts/build_native.py --force    build even so
    python scripts/build_native.py --stage    build into build/native/staged/ (for the next start)
    python scripts/build_native.py --adopt    use a staged build; exit 3 when a build is needed
    python scripts/build_native.py --sources  print the listed source paths (for make)
    python scripts/build_native.py --requirements  print what compiling needs (pyproject's
                                              [native] extra, for the installer)
    python scripts/build_native.py --clean    remove the extensions, the manifest and build/native
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
MANIFEST_FORMAT = 1  # the format portico._native reads
LIBRARY_STEM = "_compiled"  # <package>._compiled__mypyc: the group's shared library
STAGED_MANIFEST = "manifest.json"  # in build/native/staged/, beside the staged products
NEEDS_BUILD = 3  # --adopt's exit status when there is nothing to adopt and a build is needed


class BuildFailed(Exception):
    """The build could not run or did not succeed; the message says why, in a few words."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What to compile, read from ``[tool.portico.native]`` of a project's pyproject.toml."""

    project: Path
    root: Path
    manifest: Path
    sources: tuple[str, ...]  # relative to root, e.g. "portico/gateway/server.py"

    @classmethod
    def load(cls, project: Path) -> Plan:
        with (project / "pyproject.toml").open("rb") as f:
            table = tomllib.load(f)["tool"]["portico"]["native"]
        sources = tuple(table["modules"])
        if len(set(sources)) != len(sources) or not all(s.endswith(".py") for s in sources):
            raise SystemExit("[tool.portico.native] modules: distinct .py paths, please")
        packages = {s.split("/")[0] for s in sources}
        if len(packages) != 1:
            raise SystemExit("[tool.portico.native] modules: one top-level package, please")
        return cls(
            project=project,
            root=project / table.get("root", "src"),
            manifest=project / table["manifest"],
            sources=sources,
        )

    @property
    def build_dir(self) -> Path:
        return self.project / "build" / "native"

    @property
    def staged_dir(self) -> Path:
        """A finished background build, with the layout of ``root``, waiting for a start."""
        return self.build_dir / "staged"

    @property
    def background_log(self) -> Path:
        return self.build_dir / "background.log"

    @property
    def package(self) -> str:
        return self.sources[0].split("/")[0]

    @property
    def group(self) -> str:
        return f"{self.package}.{LIBRARY_STEM}"

    @staticmethod
    def module_name(source: str) -> str:
        return source.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def ext_suffix() -> str:
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    assert isinstance(suffix, str)
    return suffix


def extension_path(source: str) -> str:
    """Where the compiled form of ``source`` goes (relative to the root, next to the .py)."""
    return source.removesuffix(".py") + ext_suffix()


def library_path(plan: Plan) -> str:
    return f"{plan.package}/{LIBRARY_STEM}__mypyc{ext_suffix()}"


def mypy_version() -> str:
    try:
        from mypy.version import __version__
    except ImportError:
        raise BuildFailed("mypyc is not installed (it comes with mypy, a dev dependency)") from None
    return __version__


def hashes(plan: Plan) -> dict[str, str]:
    return {s: hashlib.sha256((plan.root / s).read_bytes()).hexdigest() for s in plan.sources}


def manifest_for(plan: Plan, digests: dict[str, str]) -> dict[str, object]:
    suffix = ext_suffix()
    return {
        "format": MANIFEST_FORMAT,
        "abi": suffix.strip(".").removesuffix(".so"),
        "ext_suffix": suffix,
        "compiler": f"mypyc {mypy_version()}",
        "library": library_path(plan),
        "modules": {
            plan.module_name(source): {
                "source": source,
                "sha256": digests[source],
                "extension": extension_path(source),
            }
            for source in plan.sources
        },
    }


def current_manifest(plan: Plan) -> dict[str, object] | None:
    try:
        manifest = json.loads(plan.manifest.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def up_to_date(plan: Plan, wanted: dict[str, object]) -> bool:
    if current_manifest(plan) != wanted:
        return False
    products = [str(wanted["library"])] + [extension_path(s) for s in plan.sources]
    return all((plan.root / p).is_file() for p in products)


def remove_products(plan: Plan) -> None:
    """Remove every extension module under the package, then the manifest.

    Every extension module under ``src/`` is a product of this script (``.gitignore`` says so),
    so this also catches those of modules that left the list. The manifest goes last: while it
    is there, ``portico._native`` sees missing extensions and falls back to the sources.
    """
    package_dir = plan.root / plan.package
    for suffix in ("*.so", "*.pyd"):
        for path in package_dir.rglob(suffix):
            path.unlink()
    plan.manifest.unlink(missing_ok=True)


def find_compiler() -> str | None:
    """The C compiler Python's build machinery would use, if it is installed."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    program = str(cc).split()[0]
    return shutil.which(program)


def compile_group(plan: Plan, log: Path) -> None:
    """Run mypyc and the C compiler in a child process, its output into ``log``."""
    plan.build_dir.mkdir(parents=True, exist_ok=True)
    lib_dir = plan.build_dir / "lib"
    shutil.rmtree(lib_dir, ignore_errors=True)
    with log.open("w", encoding="utf-8") as out:
        result = subprocess.run(
            [sys.executable, __file__, "--compile-step", "--project", str(plan.project)],
            cwd=plan.project,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        raise BuildFailed(f"mypyc or the C compiler failed, see {relative(log)}")


def compile_step(plan: Plan) -> None:
    """The child process: mypycify, then setuptools' build_ext into build/native/lib."""
    from mypyc.build import mypycify
    from setuptools import Distribution
    from setuptools.command.build_ext import build_ext

    paths = [str(plan.root / s) for s in plan.sources]
    extensions = mypycify(
        [
            "--config-file",
            str(plan.project / "pyproject.toml"),
            "--cache-dir",
            str(plan.build_dir / "mypy_cache"),
            *paths,
        ],
        only_compile_paths=paths,
        target_dir=str(plan.build_dir / "c"),
        group_name=plan.group,
    )
    # A bare Distribution: setup() would read this project's pyproject.toml as setuptools
    # metadata, and it is hatchling's.
    command = build_ext(Distribution({"name": "native", "ext_modules": extensions}))
    command.build_lib = str(plan.build_dir / "lib")
    command.build_temp = str(plan.build_dir / "temp")
    command.ensure_finalized()
    command.run()


def relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def products(plan: Plan, manifest: dict[str, object]) -> list[str]:
    """The files a build of ``manifest`` consists of, relative to the import root."""
    return [str(manifest["library"])] + [extension_path(s) for s in plan.sources]


@contextlib.contextmanager
def build_lock(plan: Plan, *, wait: bool) -> Iterator[bool]:
    """Hold ``build/native/lock`` while compiling or swapping builds; yield whether it is held.

    Without ``wait``, yield ``False`` at once when another build holds it. The kernel releases
    an ``flock`` when its holder dies, so a killed build never leaves the lock behind.
    """
    plan.build_dir.mkdir(parents=True, exist_ok=True)
    with (plan.build_dir / "lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            print(
                f"native: waiting for the build running in the background "
                f"({relative(plan.background_log)})",
                flush=True,
            )
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield True


def install_products(plan: Plan, built: Path, wanted: dict[str, object]) -> None:
    """Swap the build in ``built`` into the import root: old extensions out, new ones in, the
    manifest last (until it is there, ``portico._native`` runs everything from source)."""
    remove_products(plan)
    for product in products(plan, wanted):
        target = plan.root / product
        staging = target.with_name(target.name + ".tmp")
        shutil.copyfile(built / product, staging)
        os.replace(staging, target)
    staging = plan.manifest.with_name(plan.manifest.name + ".tmp")
    staging.write_text(json.dumps(wanted, indent=2) + "\n", encoding="utf-8")
    os.replace(staging, plan.manifest)


def staged_matches(plan: Plan, wanted: dict[str, object]) -> bool:
    try:
        staged = json.loads((plan.staged_dir / STAGED_MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return False
    if staged != wanted:
        return False
    return all((plan.staged_dir / p).is_file() for p in products(plan, wanted))


def compile_current(plan: Plan, digests: dict[str, str]) -> float:
    """Compile the sources of ``digests`` into ``build/native/lib``; the seconds it took."""
    if find_compiler() is None:
        raise BuildFailed("no C compiler found")
    started = time.monotonic()
    compile_group(plan, plan.build_dir / "build.log")
    if hashes(plan) != digests:
        raise BuildFailed("a source changed during the build; run it again")
    return time.monotonic() - started


def build(plan: Plan, *, force: bool) -> str:
    """Build in place if needed; return the one line to print."""
    digests = hashes(plan)
    wanted = manifest_for(plan, digests)
    with build_lock(plan, wait=True):
        if not force and up_to_date(plan, wanted):
            plan.manifest.touch()  # make compares times: this build is current
            return f"native: {len(plan.sources)} compiled modules up to date"
        if not force and staged_matches(plan, wanted):
            install_products(plan, plan.staged_dir, wanted)
            shutil.rmtree(plan.staged_dir)
            return (
                f"native: using the {len(plan.sources)} modules compiled in the background "
                f"({relative(plan.manifest)})"
            )
        try:
            took = compile_current(plan, digests)
        except BuildFailed:
            # The previous build is stale (that is why this one ran): none rather than a stale one.
            remove_products(plan)
            raise
        install_products(plan, plan.build_dir / "lib", wanted)
    return (
        f"native: compiled {len(plan.sources)} modules with mypyc in {took:.0f} s "
        f"({relative(plan.manifest)})"
    )


def stage(plan: Plan) -> str:
    """Build into ``build/native/staged/`` for the next start, leaving ``src/`` alone."""
    with build_lock(plan, wait=False) as held:
        if not held:
            return "native: another build is running; this one is not needed"
        digests = hashes(plan)
        wanted = manifest_for(plan, digests)
        if up_to_date(plan, wanted):
            return f"native: {len(plan.sources)} compiled modules up to date"
        if staged_matches(plan, wanted):
            return "native: a build is already waiting for the next start"
        shutil.rmtree(plan.staged_dir, ignore_errors=True)
        took = compile_current(plan, digests)
        # Complete or absent: the products and the manifest are copied beside, then renamed.
        partial = plan.build_dir / "staged.tmp"
        shutil.rmtree(partial, ignore_errors=True)
        for product in products(plan, wanted):
            (partial / product).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(plan.build_dir / "lib" / product, partial / product)
        (partial / STAGED_MANIFEST).write_text(json.dumps(wanted, indent=2) + "\n", "utf-8")
        os.replace(partial, plan.staged_dir)
    return (
        f"native: compiled {len(plan.sources)} modules with mypyc in {took:.0f} s; "
        "the next start uses them"
    )


def adopt(plan: Plan) -> tuple[str, int]:
    """At a start that will not wait for a build: use a staged one, or say a build is needed.

    Returns the line to print and the exit status: :data:`NEEDS_BUILD` when the caller should
    start a background build (``--stage``), else 0.
    """
    n = len(plan.sources)
    needed = (
        f"native: compiling the hot path ({n} modules) with mypyc in the background, for the "
        f"next start (a few minutes; {relative(plan.background_log)}); this one runs interpreted"
    )
    with build_lock(plan, wait=False) as held:
        if not held:
            return (
                "native: the hot path is still compiling in the background "
                f"({relative(plan.background_log)}); this start runs interpreted",
                0,
            )
        digests = hashes(plan)
        try:
            wanted = manifest_for(plan, digests)
        except BuildFailed:
            # mypy is not installed yet (a first run): the background build installs it.
            return needed, NEEDS_BUILD
        if up_to_date(plan, wanted):
            plan.manifest.touch()
            return f"native: {n} compiled modules up to date", 0
        if staged_matches(plan, wanted):
            install_products(plan, plan.staged_dir, wanted)
            shutil.rmtree(plan.staged_dir)
            return f"native: using the {n} modules compiled in the background", 0
        shutil.rmtree(plan.staged_dir, ignore_errors=True)
        # A stale build in place would only make this start warn that it is not used.
        remove_products(plan)
        if find_compiler() is None:
            return "native: not built (no C compiler found); Portico runs as pure Python", 0
        return needed, NEEDS_BUILD


def native_requirements(project: Path) -> list[str]:
    """The ``native`` extra of pyproject.toml: what compiling needs besides the runtime."""
    with (project / "pyproject.toml").open("rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    return [str(requirement) for requirement in extras["native"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=PROJECT, help="the project directory")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--force", action="store_true", help="build even if up to date")
    action.add_argument("--stage", action="store_true", help="build for the next start")
    action.add_argument("--adopt", action="store_true", help="use a staged build if current")
    action.add_argument("--sources", action="store_true", help="print the listed sources")
    action.add_argument("--requirements", action="store_true", help="print what compiling needs")
    action.add_argument("--clean", action="store_true", help="remove every build product")
    action.add_argument("--compile-step", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    plan = Plan.load(args.project.resolve())

    if args.sources:
        print(" ".join(str((plan.root / s).relative_to(plan.project)) for s in plan.sources))
        return 0
    if args.requirements:
        print("\n".join(native_requirements(plan.project)))
        return 0
    if args.clean:
        remove_products(plan)
        shutil.rmtree(plan.build_dir, ignore_errors=True)
        return 0
    if args.compile_step:
        compile_step(plan)
        return 0
    if args.adopt:
        line, status = adopt(plan)
        print(line, flush=True)
        return status
    try:
        print(stage(plan) if args.stage else build(plan, force=args.force), flush=True)
    except BuildFailed as exc:
        print(f"native: not built ({exc}); Portico runs as pure Python", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
