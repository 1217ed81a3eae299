"""Every guide runs as printed against ``portico demo``: the README's tour and each page of docs/.

The guides name the demo's fixed ports (8080, 8443, 9180, 9190 and the backends' 9101-9301), so the
demo runs on exactly those, and the blocks run unchanged. So that neither collides with another
demo, another test run or a developer's own services, both run in a network namespace of their
own (``unshare``, Linux), with only a loopback interface. Where namespaces are not available, the
test uses the machine's ports if they are all free, and is skipped otherwise, saying so.

How the blocks are read and what each kind means: tests/e2e/guides.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from tests.e2e.guides import (
    Page,
    blocks_of,
    curl_expectations,
    last_status,
    response_json,
    script_of,
)

ROOT = Path(__file__).resolve().parents[2]
DEMO_PORTS = (8080, 8443, 9180, 9190, 9101, 9102, 9201, 9202, 9301)
STARTUP_TIMEOUT = 90.0
PAGE_TIMEOUT = 300.0
END_OF_TOUR = "Stop with Ctrl-C."

NOT_RUN = {
    "docs/architecture.md": "diagrams of the design, no commands",
    "docs/benchmarks.md": "runs the benchmarks for minutes against nginx; make bench runs them",
    "docs/extending.md": "Python fragments of a new policy, checked by ruff format in make lint",
    "docs/troubleshooting.md": (
        "reproduces failures on purpose (a port in use, a missing file); the CLI failure tests "
        "(issue 9, item 2) run each of them"
    ),
}
"""Pages of docs/ whose blocks are not about the demo."""


def pages() -> list[str]:
    names = ["README.md"] + [f"docs/{path.name}" for path in sorted((ROOT / "docs").glob("*.md"))]
    return [name for name in names if name not in NOT_RUN]


def read_page(name: str) -> Page:
    text = (ROOT / name).read_text(encoding="utf-8")
    if name == "README.md":
        # The tour: the quick start above it is `make demo` and `make test` themselves.
        start = text.index("## A five-minute tour")
        end = text.index("\n## ", start + 1)
        text = "\n" * text.count("\n", 0, start) + text[start:end]
    return blocks_of(name, text)


def runnable_pages() -> list[str]:
    return [name for name in pages() if any(block.runs for block in read_page(name).blocks)]


# -- the demo, in a network namespace of its own --------------------------------------------------


def _namespaces_work() -> bool:
    if not all(shutil.which(tool) for tool in ("unshare", "nsenter", "ip")):
        return False
    done = subprocess.run(
        ["unshare", "-rn", "ip", "link", "set", "lo", "up"], capture_output=True, check=False
    )
    return done.returncode == 0


def _ports_free() -> bool:
    for port in DEMO_PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


@dataclass
class GuideDemo:
    process: subprocess.Popen[bytes]
    scratch: Path
    bin: Path
    stdout: Path
    log: Path
    in_namespace: bool

    def run(self, script: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        command = ["bash", str(script)]
        if self.in_namespace:
            pid = str(self.process.pid)
            command = ["nsenter", "-t", pid, "-U", "-n", "--preserve-credentials", *command]
        return subprocess.run(
            command,
            cwd=self.scratch,
            env=env,
            capture_output=True,
            text=True,
            timeout=PAGE_TIMEOUT,
            check=False,
        )

    def tour(self) -> str:
        return self.stdout.read_text(encoding="utf-8", errors="replace")


def _wrappers(directory: Path) -> None:
    """``curl`` that records each status and body; the config editor of demo-edit blocks."""
    directory.mkdir()
    curl = shutil.which("curl")
    assert curl is not None, "the guides need curl"
    (directory / "curl").write_text(
        f"""#!/bin/bash
n=$(ls "$PORTICO_GUIDE_RECORDS" | wc -l)
record="$PORTICO_GUIDE_RECORDS/$(printf %04d "$n")"
mkdir "$record"
echo "$PORTICO_GUIDE_BLOCK" > "$record/block"
{curl} -D "$record/head" "$@" | tee "$record/body"
status=${{PIPESTATUS[0]}}
echo "$status" > "$record/exit"
exit "$status"
"""
    )
    (directory / "portico-guide-edit").write_text(
        f'#!/bin/bash\nexec {ROOT}/.venv/bin/python {ROOT}/tests/e2e/guide_edit.py "$@"\n'
    )
    for path in directory.iterdir():
        path.chmod(0o755)


@pytest.fixture(scope="module")
def guide_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuideDemo]:
    in_namespace = _namespaces_work()
    if not in_namespace and not _ports_free():
        pytest.skip(
            "no network namespaces here (unshare), and the demo's ports "
            f"{', '.join(map(str, DEMO_PORTS))} are not all free: the guides name them"
        )
    base = tmp_path_factory.mktemp("guides")
    scratch = base / "repository"
    scratch.mkdir()
    # Laid out like the repository the guides are read from: .venv/bin/portico, .demo/...,
    # examples/ (docs/metrics.md checks examples/prometheus.yml)
    (scratch / ".venv").symlink_to(ROOT / ".venv")
    (scratch / "examples").symlink_to(ROOT / "examples")
    _wrappers(base / "bin")
    command = [str(scratch / ".venv" / "bin" / "portico"), "demo"]
    if in_namespace:
        command = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]
    stdout, log = base / "demo.out", base / "demo.log"
    with stdout.open("wb") as out, log.open("wb") as err:
        process = subprocess.Popen(command, cwd=scratch, stdout=out, stderr=err)
    demo = GuideDemo(process, scratch, base / "bin", stdout, log, in_namespace)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while END_OF_TOUR not in demo.tour():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the demo did not start:\n{demo.tour()}\n{log.read_text()}")
            time.sleep(0.1)
        yield demo
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# -- the tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", runnable_pages())
def test_every_block_of_the_guide_runs_as_printed_against_the_demo(
    name: str, guide_demo: GuideDemo, tmp_path: Path
) -> None:
    page = read_page(name)
    script = tmp_path / "page.sh"
    script.write_text(script_of(page), encoding="utf-8")
    records = tmp_path / "records"
    records.mkdir()
    env = {
        **os.environ,
        "PATH": f"{guide_demo.bin}:{os.environ['PATH']}",
        "PORTICO_GUIDE_RECORDS": str(records),
        "PORTICO_GUIDE_PYTHON": str(ROOT / ".venv" / "bin" / "python"),
        "PORTICO_GUIDE_EDIT": str(guide_demo.bin / "portico-guide-edit"),
        "PORTICO_GUIDE_CONFIG": str(guide_demo.scratch / ".demo" / "portico.yaml"),
        "PORTICO_GUIDE_DEMO_LOG": str(guide_demo.log),
    }
    done = guide_demo.run(script, env)
    ran = sorted(records.iterdir())
    last = (ran[-1] / "block").read_text().strip() if ran else "none"
    assert done.returncode == 0, (
        f"{name}: the shell stopped (exit {done.returncode}); last curl in block {last}\n"
        f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    )

    by_block: dict[str, list[Path]] = {}
    for record in ran:
        by_block.setdefault((record / "block").read_text().strip(), []).append(record)
    checked = 0
    for index, block in enumerate(page.blocks):
        if not block.runs or block.language == "python" or block.marker == "demo-edit":
            continue
        expected = curl_expectations(block)
        recorded = by_block.get(str(index), [])
        assert len(recorded) == len(expected), (
            f"{block.where}: {len(expected)} curl lines, {len(recorded)} ran"
        )
        for expectation, record in zip(expected, recorded, strict=True):
            where = f"{block.where}: {expectation.command}"
            assert (record / "exit").read_text().strip() == "0", f"{where}: curl failed"
            status = last_status((record / "head").read_text(encoding="latin-1"))
            if expectation.status is None:
                assert 200 <= status < 300, f"{where}: answered {status}"
            else:
                assert status == expectation.status, f"{where}: answered {status}"
            if expectation.identity:
                body = response_json((record / "body").read_bytes())
                assert isinstance(body, dict), where
                seen = body["debug"]["portico_headers"]
                for header, value in expectation.identity.items():
                    assert seen.get(header) == value, f"{where}: the backend saw {seen}"
            checked += 1
    assert checked + sum(b.language == "python" for b in page.blocks if b.runs) > 0


def test_every_page_of_docs_is_run_or_says_why_not() -> None:
    on_disk = {f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md")}
    assert set(NOT_RUN) - on_disk <= {"docs/troubleshooting.md"}, "a page listed is gone"
    for name in pages():
        for block in read_page(name).blocks:
            if block.marker is not None:
                assert block.marker in {"skip", "demo-edit", "demo-undo"}, block.where
            if block.marker == "skip":
                assert block.reason, f"{block.where}: a skipped block says why"
            if block.marker == "demo-edit":
                assert block.language == "yaml", block.where


def test_the_config_fragments_of_the_guides_are_valid_yaml() -> None:
    for name in pages():
        for block in read_page(name).blocks:
            if block.language == "yaml" and block.marker != "skip":
                try:
                    yaml.safe_load(block.text)
                except yaml.YAMLError as error:
                    pytest.fail(f"{block.where}: {error}")
