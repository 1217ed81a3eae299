"""How the supervisor names the end of a gateway process in its log."""

from __future__ import annotations

import signal

__all__ = ["describe_exit"]


def describe_exit(returncode: int) -> str:
    """``was killed by SIGKILL`` or ``exited with status 3``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with status {returncode}"
