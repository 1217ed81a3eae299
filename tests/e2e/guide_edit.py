"""``apply`` (YAML on standard input) or ``undo`` an edit of the running demo's config, as a guide
tells its reader to, and wait until the demo has reloaded it.

Run by the guides' shell scripts (tests/e2e/guides.py) as ``$PORTICO_GUIDE_EDIT``, with
``PORTICO_GUIDE_CONFIG`` (the demo's portico.yaml) and ``PORTICO_GUIDE_DEMO_LOG`` (its log).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

RELOADED = "config reloaded"
TIMEOUT = 30.0


def merged(base: Any, edit: Any) -> Any:
    """``edit`` laid over ``base``: mappings merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(edit, dict):
        result = dict(base)
        for key, value in edit.items():
            result[key] = merged(base.get(key), value) if key in base else value
        return result
    return edit


def reloads(log: Path) -> int:
    return log.read_text(encoding="utf-8", errors="replace").count(RELOADED)


def write_and_wait(config: Path, text: str, log: Path) -> None:
    before = reloads(log)
    config.write_text(text, encoding="utf-8")
    deadline = time.monotonic() + TIMEOUT
    while reloads(log) == before:
        if time.monotonic() > deadline:
            sys.exit(f"the demo did not reload {config} within {TIMEOUT:.0f}s")
        time.sleep(0.1)


def main() -> None:
    config = Path(os.environ["PORTICO_GUIDE_CONFIG"])
    log = Path(os.environ["PORTICO_GUIDE_DEMO_LOG"])
    saved = config.with_name(config.name + ".before-guide-edit")
    if sys.argv[1] == "apply":
        original = config.read_text(encoding="utf-8")
        if not saved.exists():
            saved.write_text(original, encoding="utf-8")
        edited = merged(yaml.safe_load(original), yaml.safe_load(sys.stdin.read()))
        write_and_wait(config, yaml.safe_dump(edited, sort_keys=False), log)
    elif sys.argv[1] == "undo":
        write_and_wait(config, saved.read_text(encoding="utf-8"), log)
        saved.unlink()
    else:
        sys.exit(f"unknown command {sys.argv[1]!r}")


if __name__ == "__main__":
    main()
