"""A gateway in this process with the shared state a test chooses (a small MemoryState, a
RedisState), which ``tests.support.gateway.running_gateway`` does not take."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvloop
from tests.support.gateway import RunningGateway, with_defaults, write_config

from portico.assembly import build_runtime, load_config
from portico.gateway.app import Gateway
from portico.identity.context import Extensions
from portico.shared.state import SharedState


@contextlib.contextmanager
def gateway_with_state(
    tmp_path: Path, config: dict[str, Any], shared: SharedState
) -> Iterator[RunningGateway]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = write_config(tmp_path / "portico.yaml", with_defaults(config))
    runtime = build_runtime(load_config(path), extensions=Extensions(shared=shared))
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="gateway-loop", daemon=True)
    thread.start()

    async def start() -> Gateway:
        gateway = Gateway(runtime)
        await gateway.start()
        return gateway

    try:
        gateway = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
        try:
            yield RunningGateway(gateway, loop, path)
        finally:
            asyncio.run_coroutine_threadsafe(gateway.stop(), loop).result(timeout=30)
            asyncio.run_coroutine_threadsafe(shared.close(), loop).result(timeout=10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
