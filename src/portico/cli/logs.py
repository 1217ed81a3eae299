"""Where the ``portico`` command's log goes and how it looks: ``--log-level``, ``--log-format``.

Two formats of the same records on standard error. ``text`` is for a person at a terminal:
``14:05:39 INFO portico.gateway: message key=value``. ``json`` is for a log collector: one
object per line with ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message``, and the
fields a record carries (``extra=``), so a program never parses a sentence. ``auto``, the default,
is ``text`` when standard error is a terminal and ``json`` otherwise.

Libraries log for their own developers: Alembic's six lines of migration context on every
start, httpx's line per request (a JWKS fetch). They are kept to warnings unless the level is
``debug``.

The JSON lines are written with the standard library's ``json``: the formatter is a dozen lines,
and python-json-logger would add a dependency for them.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["FORMATS", "LEVELS", "JSONFormatter", "StandardError", "TextFormatter", "configure"]

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("auto", "text", "json")

LogFormat = Literal["auto", "text", "json"]

# Loggers of libraries that say at INFO what only their own debugging needs.
_CHATTY_LIBRARIES = ("alembic", "httpx", "httpcore", "uvicorn")

# The attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def configure(level: str, log_format: LogFormat = "auto") -> None:
    """Send every record at ``level`` or above to standard error in ``log_format``."""
    if log_format == "auto":
        log_format = "text" if sys.stderr.isatty() else "json"
    handler = StandardError()
    handler.setFormatter(JSONFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = logging.getLevelNamesMapping()[level.upper()]
    root.setLevel(numeric)
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG else logging.WARNING)
    # Warnings (a stale compiled build, a deprecation) go through the same handler and format.
    logging.captureWarnings(True)


class StandardError(logging.Handler):
    """Writes each record to ``sys.stderr`` as it is when the record comes, not when the handler
    was made: ``main()`` run in-process (tests, embedding) may have its stderr swapped and closed
    afterwards, and the handler outlives the call."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES}


class TextFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL logger: message key=value ...``, then the traceback if there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if not fields:
            return line
        head, sep, tail = line.partition("\n")
        pairs = " ".join(f"{key}={value}" for key, value in fields.items())
        return f"{head} {pairs}{sep}{tail}"


class JSONFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback goes into ``exception``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False, separators=(",", ":"))
