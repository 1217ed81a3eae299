"""``python -m portico.cli.worker``: one gateway process of ``portico serve --workers``.

The supervisor starts it (never a person): the command's log options, ``--``, then the
process's :class:`~portico.supervisor.worker.WorkerSpec`. Its log records carry ``worker`` (its
slot, 1 to N) and ``pid``, so the lines of N processes on one standard error tell apart. A
failure to start is sent to the supervisor, which prints it as ``portico serve``'s one line.
"""

from __future__ import annotations

import logging
import os
import sys

from portico.cli import logs
from portico.cli.failures import explain
from portico.supervisor.worker import WorkerSpec, serve_as_worker

__all__ = ["main"]


class _Labelled(logging.Filter):
    def __init__(self, slot: int) -> None:
        super().__init__()
        self._slot = slot
        self._pid = os.getpid()

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self._slot
        record.pid = self._pid
        return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    at = args.index("--")
    options = dict(zip(args[:at:2], args[1:at:2], strict=True))
    spec = WorkerSpec.from_argv(args[at + 1 :])
    log_format = options.get("--log-format")
    logs.configure(
        options.get("--log-level", "info"),
        "text" if log_format == "text" else "json" if log_format == "json" else "auto",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Labelled(spec.slot))
    try:
        return serve_as_worker(spec, explain)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
