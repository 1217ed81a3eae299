"""Time to first answer of ``make demo`` from a fresh clone, as a new user runs it.

    .venv/bin/python bench/first_run.py              # this repository's HEAD
    .venv/bin/python bench/first_run.py --ref f2c9d17

clones the repository with ``git clone`` into a temporary folder (package caches stay warm: pip's
and uv's, as on a machine that has installed Python packages before), runs ``make demo`` there in
the background and polls the first curl line of the tour (``curl -s <gateway>/v1/orders``, here
with urllib) every 0.2 s. It reports the seconds to its first 200, every line ``make demo``
printed with the second it appeared, and the longest silence before the first answer: each step
that takes more than two seconds should have said what it is doing.

Then (unless ``--first-only``) it stops the demo with Ctrl-C's signal, waits for the compiled hot
path that ``make demo`` builds in the background, and runs ``make demo`` again: the next start,
which should run compiled. Its figures are reported the same way.

Nothing is asserted: the figures go in docs/benchmarks.md and the README's quick start. A full
mypyc compile takes minutes of CPU; run this once, not in a loop, on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POLL_INTERVAL = 0.2
# Environment a new user's shell would not have: this session's venv and its choices.
UNSET = ("VIRTUAL_ENV", "PORTICO_NATIVE", "PYTHONPATH", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")
BACKGROUND_DONE = re.compile(r"^native: (compiled|not built|\d+ compiled|a build is already)")
COMPILED = re.compile(r"gateway code: (compiled \(\d+ modules\)|interpreted.*)")


@dataclass
class Start:
    """One ``make demo``: what it printed and when, and when the first curl line answered."""

    lines: list[tuple[float, str]] = field(default_factory=list)
    first_answer: float | None = None
    exit_code: int | None = None

    def longest_silence(self) -> tuple[float, str]:
        """The longest time before the first answer with nothing printed, and the line that
        ended it (or "first answer")."""
        end = self.first_answer if self.first_answer is not None else float("inf")
        marks = [(t, line) for t, line in self.lines if t <= end]
        marks.append((end, "first answer"))
        previous, longest, after = 0.0, 0.0, ""
        for t, line in marks:
            if t - previous > longest:
                longest, after = t - previous, line
            previous = t
        return longest, after

    def gateway_code(self) -> str:
        for _, line in self.lines:
            found = COMPILED.search(line)
            if found:
                return found.group(1)
        return "(not printed)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (a loopback URL)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def clean_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    # This session's venv first on the PATH would not be on a new user's.
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT / ".venv"))
    )
    return env


@contextlib.contextmanager
def make_demo(clone: Path, port: int, timeout: float) -> Iterator[Start]:
    """Run ``make demo`` in ``clone`` until its first curl line answers (or ``timeout``)."""
    start = Start()
    command = ["make", "demo"]
    if "DEMO_ARGS" in (clone / "Makefile").read_text(encoding="utf-8"):
        command.append(f"DEMO_ARGS=--port {port}")
    began = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=clone,
        env=clean_environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, to send it Ctrl-C's signal
    )

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            start.lines.append((time.monotonic() - began, line.rstrip("\n")))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}/v1/orders"
    try:
        while time.monotonic() - began < timeout and process.poll() is None:
            if answers(url):
                start.first_answer = time.monotonic() - began
                break
            time.sleep(POLL_INTERVAL)
        yield start
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        reader.join(timeout=5)
        start.exit_code = process.returncode


def wait_for_background_build(clone: Path, timeout: float) -> tuple[float, str]:
    """Seconds until the background build's last line, and that line."""
    log = clone / "build" / "native" / "background.log"
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        with contextlib.suppress(FileNotFoundError):
            for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
                if BACKGROUND_DONE.match(line):
                    return time.monotonic() - began, line
        time.sleep(1.0)
    return time.monotonic() - began, f"(no result within {timeout:.0f} s)"


def processes_in(folder: Path) -> list[int]:
    """Processes still working in ``folder`` (a background build this bench started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(os.readlink(entry / "cwd")).is_relative_to(folder):
                    found.append(int(entry.name))
    return found


def report(title: str, start: Start) -> None:
    print(f"\n== {title}")
    for t, line in start.lines:
        print(f"  {t:6.1f} s  {line}")
    if start.first_answer is None:
        print("  no answer to the first curl line")
        return
    silence, after = start.longest_silence()
    print(f"  time to first answer: {start.first_answer:.1f} s")
    print(f"  longest silence before it: {silence:.1f} s (ended by: {after})")
    print(f"  gateway code: {start.gateway_code()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", default=str(ROOT), help="what to clone (default: this one)")
    parser.add_argument("--ref", default="HEAD", help="the commit to check out (default HEAD)")
    parser.add_argument("--timeout", type=float, default=600.0, help="per start, in seconds")
    parser.add_argument("--first-only", action="store_true", help="skip the next start")
    parser.add_argument("--keep", action="store_true", help="keep the clone")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="portico-first-run-"))
    clone = folder / "portico"
    try:
        subprocess.run(["git", "clone", "--quiet", args.repo, str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", args.ref], check=True)
        sha = subprocess.run(
            ["git", "-C", str(clone), "rev-parse", "--short", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        print(f"fresh clone of {sha} in {clone}")
        port = free_port()
        if "DEMO_ARGS" not in (clone / "Makefile").read_text(encoding="utf-8"):
            port = 8080  # that Makefile runs the demo on its default port
        with make_demo(clone, port, args.timeout) as first:
            pass
        report("make demo, first run from a fresh clone", first)
        if first.first_answer is None or args.first_only:
            return 0 if first.first_answer is not None else 1
        if "--adopt" in (clone / "Makefile").read_text(encoding="utf-8"):
            took, line = wait_for_background_build(clone, args.timeout)
            print(f"\n== background build: done {took:.0f} s after the demo stopped: {line}")
        with make_demo(clone, port, args.timeout) as second:
            pass
        report("make demo, the next start", second)
        return 0 if second.first_answer is not None else 1
    finally:
        for pid in processes_in(folder):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if args.keep:
            print(f"kept {clone}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
