"""How a failed command ends: one line on standard error and a non-zero exit status.

Every error a user can fix is a :class:`~portico.core.errors.PorticoError` whose message already
says what failed, the likely cause and what to do (the store's for a database, the serving
module's for a listener, the config loader's for a file). This module is the one place that turns
an exception into what the user reads: those messages as they are, a refused config as its list
of ``file:line: field: problem`` lines, the few foreign exceptions that can still escape (a file
that vanished, a TLS library error) in the same shape, and anything else as a bug to report. The
traceback is shown only with ``--debug`` (or ``--log-level debug``).
"""

from __future__ import annotations

import ssl
import sys
import traceback

from portico.config.errors import ConfigError
from portico.core.errors import PorticoError

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "explain", "report"]

EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C


def explain(exc: BaseException) -> str:
    """What the user reads for ``exc``: one line (a refused config: one line per problem)."""
    if isinstance(exc, ConfigError):
        if len(exc.issues) == 1 and exc.issues[0].message == "file not found":
            return f"{exc}; `portico init {exc.issues[0].file}` writes a starter config there"
        return str(exc)
    if isinstance(exc, PorticoError):
        return _one_line(str(exc))
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or exc.strerror or str(exc)
        return (
            f"TLS could not be set up: {reason}; check the files of gateway.tls "
            "(`portico check` loads them)"
        )
    if isinstance(exc, OSError):
        subject = f" {exc.filename}" if exc.filename else ""
        return (
            f"cannot use{subject}: {exc.strerror or exc}; check that it exists and that Portico "
            "may read it"
        )
    return (
        f"unexpected {type(exc).__name__}: {_one_line(str(exc)) or 'no message'}; this is a bug "
        "in Portico: please report it with the output of the same command run with --debug"
    )


def report(exc: BaseException, command: str, *, debug: bool) -> int:
    """Print what ``command`` (``portico serve``) failed on and return its exit status."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    message = explain(exc)
    # A refused config is its list of file:line problems, each line already saying where.
    line = message if isinstance(exc, ConfigError) else f"{command}: error: {message}"
    print(line, file=sys.stderr, flush=True)
    return EXIT_FAILURE


def _one_line(text: str) -> str:
    return " ".join(text.split())
