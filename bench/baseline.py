"""Prepare another commit of Portico to be measured beside this tree, in the same benchmark run.

    .venv/bin/python bench/baseline.py 757cdb0
    .venv/bin/python bench/gateway.py --baseline /tmp/portico-baseline-757cdb0/portico

checks the commit out with ``git worktree`` into a temporary folder, compiles its hot path with
its own ``[tool.portico.native]`` list (``scripts/build_native.py --project``, using this
virtual environment's mypyc), and writes a ``portico`` executable there that runs that commit's
code with this environment's dependencies. It prints the executable's path. A change to the
gateway's hot path comes with such an A/B run (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("commit", help="the commit to measure against, e.g. HEAD~1")
    parser.add_argument("--into", type=Path, help="the folder (default /tmp/portico-baseline-SHA)")
    args = parser.parse_args(argv)
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.commit],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    into: Path = args.into or Path(f"/tmp/portico-baseline-{sha}")
    if not (into / ".git").exists():
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(into), sha],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    build = into / "scripts" / "build_native.py"
    subprocess.run([sys.executable, str(build), "--project", str(into)], check=True)
    executable = into / "portico"
    executable.write_text(
        "#!/bin/sh\n"
        f'PYTHONPATH="{into / "src"}" exec "{sys.executable}" '
        '-c "import sys; from portico.cli import main; sys.exit(main())" "$@"\n'
    )
    executable.chmod(0o755)
    print(executable)
    return 0


if __name__ == "__main__":
    sys.exit(main())
