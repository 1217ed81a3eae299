"""Candidate (c): granian (Rust HTTP server, ASGI interface, uvloop) with the aiohttp client.

The app is candidate (b)'s; only the server differs.
"""

from __future__ import annotations

from _common import HOST, settings
from granian import Granian
from granian.constants import HTTPModes, Interfaces, Loops
from granian.log import LogLevels

if __name__ == "__main__":
    config = settings()
    # One worker process; the upstream reaches it through the environment (see _common).
    Granian(
        "uvicorn_aiohttp:app",
        address=HOST,
        port=config.port,
        interface=Interfaces.ASGI,
        workers=1,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        log_access=False,
        log_level=LogLevels.warning,
    ).serve()
