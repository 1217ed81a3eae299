"""Why a ``portico.yaml`` was refused: one issue per problem, each at a file line and field."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from portico.core.errors import PorticoError


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a config file.

    ``line`` and ``column`` are 1-based and ``None`` when the problem concerns the whole file (it
    cannot be read). ``path`` is the dotted field path, such as ``routes[2].match.path``, and empty
    for the document itself.
    """

    file: str
    line: int | None
    column: int | None
    path: str
    message: str
    warning: bool = False
    """A warning of ``portico check`` (the file is accepted), not a reason to refuse it."""

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.warning:
            where += ": warning"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"


class ConfigError(PorticoError):
    """A config file was refused; ``issues`` lists every problem found, in file order."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))

    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[ConfigIssue]]]:
        # The default would rebuild the exception from the joined message instead of the issues.
        return (type(self), (self.issues,))
