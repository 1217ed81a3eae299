"""Reading the guides' code blocks, and running them as printed in a shell against ``portico demo``.

A page's blocks run in order in one bash session, as a reader pastes them into one terminal
(variables and ``cd`` carry over), from a scratch directory laid out like the repository: ``.venv``
and ``examples`` are the repository's, ``.demo`` the running demo's work directory. What each
kind of block is:

- ``sh`` and ``bash``: run as they are;
- ``console``: the commands after ``$ `` (with their ``\\`` continuation lines) run; the other
  lines are the output a reader should see;
- ``python``: run by the repository's Python, from the same directory;
- ``yaml`` after ``<!-- e2e: demo-edit -->``: merged into the demo's ``portico.yaml``, as the guide
  tells the reader to do, then the run waits for the demo to reload it; a block after
  ``<!-- e2e: demo-undo -->`` runs once the config is as it was before that edit;
- a block after ``<!-- e2e: skip: <reason> -->`` does not run, for the reason given;
- the rest (``yaml`` fragments of a config, ``http`` exchanges, output) are illustrations.

Every ``curl`` of a shell block runs through a wrapper that records the status and the body, so a
guide's claims are checked: a comment naming a status (``# 401 ...``) is the status expected of
the curl lines under it (a trailing comment, of its own line), and 2xx is expected when none is
named; ``X-Portico-Name: value`` in that comment is a field the backend must report in its
``debug.portico_headers``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

__all__ = ["Block", "Expectation", "Page", "blocks_of", "curl_expectations", "script_of"]

_FENCE = re.compile(r"^```([A-Za-z0-9_-]*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
# Directly above a fence, possibly with other comments between (``<!-- example: ... -->``).
_MARKER = re.compile(
    r"<!--\s*e2e:\s*([a-z-]+)(?::\s*(.*?))?\s*-->\s*(?:<!--(?:(?!-->).)*-->\s*)*\Z", re.DOTALL
)
_STATUS = re.compile(r"(?<![\d.:/-])([1-5]\d\d)(?![\d.:/-])")
_IDENTITY = re.compile(r"(X-Portico-[A-Za-z-]+): ([^\s,;)]+)")
RUNNABLE = frozenset({"sh", "bash", "console", "python"})


@dataclass(frozen=True, slots=True)
class Block:
    page: str
    line: int
    language: str
    text: str
    marker: str | None = None
    reason: str | None = None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def runs(self) -> bool:
        if self.marker == "skip":
            return False
        return self.language in RUNNABLE or self.marker == "demo-edit"

    def commands(self) -> str:
        """The shell text of the block (console: its ``$`` commands only)."""
        if self.language != "console":
            return self.text
        lines: list[str] = []
        continuing = False
        for line in self.text.splitlines():
            if line.startswith("$ "):
                lines.append(line[2:])
            elif continuing:
                lines.append(line)
            else:
                continue
            continuing = line.rstrip().endswith("\\")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a guide says one curl line answers."""

    command: str
    status: int | None
    """None: any 2xx."""
    identity: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Page:
    name: str
    blocks: tuple[Block, ...]


def blocks_of(name: str, text: str) -> Page:
    blocks = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip()
        marker = _MARKER.search(before[-300:])
        line = text.count("\n", 0, match.start()) + 1
        blocks.append(
            Block(
                page=name,
                line=line,
                language=match.group(1).lower(),
                text=match.group(2),
                marker=marker.group(1) if marker else None,
                reason=marker.group(2) if marker else None,
            )
        )
    return Page(name, tuple(blocks))


def logical_lines(text: str) -> list[str]:
    """Lines with their ``\\`` continuations joined."""
    joined: list[str] = []
    pending = ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    if pending:
        joined.append(pending)
    return joined


def _trailing_comment(line: str) -> str:
    """The ``# ...`` comment ending a shell line, outside quotes ('' if none)."""
    for match in re.finditer(r"\s#\s", line):
        before = line[: match.start()]
        if before.count("'") % 2 == 0 and before.count('"') % 2 == 0:
            return line[match.end() :]
    return ""


def curl_expectations(block: Block) -> list[Expectation]:
    """Each curl line of a shell block, with what the comment above it (or after it) says."""
    expected: list[Expectation] = []
    comment = ""
    in_comment = False
    for line in logical_lines(block.commands()):
        text = line.strip()
        if not text:
            comment, in_comment = "", False
            continue
        if text.startswith("#"):
            comment = f"{comment} {text}" if in_comment else text
            in_comment = True
            continue
        in_comment = False
        if not re.search(r"(^|[\s($|])curl\s", text):
            continue
        said = _trailing_comment(text) or comment
        status = _STATUS.search(said)
        expected.append(
            Expectation(
                command=text,
                status=int(status.group(1)) if status else None,
                identity=dict(_IDENTITY.findall(said)),
            )
        )
    return expected


def script_of(page: Page) -> str:
    """One bash script running the page's blocks in order."""
    parts = ["set -eo pipefail"]
    for index, block in enumerate(page.blocks):
        if not block.runs:
            continue
        parts.append(f"export PORTICO_GUIDE_BLOCK={index}")
        if block.marker == "demo-undo":
            parts.append('"$PORTICO_GUIDE_EDIT" undo')
        if block.marker == "demo-edit":
            parts.append(_heredoc('"$PORTICO_GUIDE_EDIT" apply', block.text))
        elif block.language == "python":
            parts.append(_heredoc('"$PORTICO_GUIDE_PYTHON" -', block.text))
        else:
            parts.append(block.commands())
    parts.append("export PORTICO_GUIDE_BLOCK=end")
    return "\n".join(parts) + "\n"


def _heredoc(command: str, text: str) -> str:
    end = "PORTICO_GUIDE_BLOCK_END"
    assert end not in text
    return f"{command} <<'{end}'\n{text}{end}"


def response_json(body: bytes) -> object:
    """The JSON a curl printed, after the response head(s) when it ran with ``-i``."""
    text = body.decode("utf-8", "replace")
    while text.startswith("HTTP/"):
        _, _, text = text.partition("\r\n\r\n")
    return json.loads(text)


def last_status(head: str) -> int:
    statuses = [line.split()[1] for line in head.splitlines() if line.startswith("HTTP/")]
    return int(statuses[-1])
