"""The control channel between the supervisor and one gateway process.

A Unix socket pair made by the supervisor, one end inherited by the process it starts; one JSON
object per line each way. The supervisor *asks* (``{"id": 7, "ask": "stats"}``) and the process
*replies* with the same ``id``; either side may also send an *event* (``{"event": "started"}``),
which has no reply. Ids let the supervisor give up on a late answer (a process stuck for a
while) without reading it as the answer to the next question.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["Channel", "ChannelClosed", "Message"]

Message = dict[str, Any]

LIMIT = 64 * 1024 * 1024
"""Longest line: a config file's text, or the counters of many routes."""


class ChannelClosed(ConnectionError):
    """The other side is gone (its process exited, or closed the channel)."""


class Channel:
    """One end of the channel; :meth:`run` reads until the other side closes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Message]] = {}
        self.closed = False

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=LIMIT)
        return cls(reader, writer)

    async def run(
        self,
        on_event: Callable[[Message], None],
        on_ask: Callable[[Message], Awaitable[Message]] | None = None,
    ) -> None:
        """Read messages until the other side closes: replies go to whoever asked, events to
        ``on_event``, questions to ``on_ask`` (each answered in a task of its own)."""
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    return
                message: Message = json.loads(line)
                if "ask" in message and on_ask is not None:
                    task = asyncio.get_running_loop().create_task(self._answer(message, on_ask))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                elif "ask" not in message and "id" in message:
                    waiting = self._waiting.pop(message["id"], None)
                    if waiting is not None and not waiting.done():
                        waiting.set_result(message)
                else:
                    on_event(message)
        except (ConnectionError, ValueError):
            return  # a broken channel ends like a closed one
        finally:
            self.closed = True
            for waiting in self._waiting.values():
                if not waiting.done():
                    waiting.set_exception(ChannelClosed("the other side closed the channel"))
            self._waiting.clear()

    async def ask(self, message: Message, timeout: float) -> Message:
        """Send a question and wait for its reply; ``TimeoutError`` or :class:`ChannelClosed`."""
        if self.closed:
            raise ChannelClosed("the channel is closed")
        ident = next(self._ids)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        try:
            await self.send({**message, "id": ident})
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._waiting.pop(ident, None)

    async def send(self, message: Message) -> None:
        if self.closed:
            raise ChannelClosed("the channel is closed")
        try:
            self._writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
            await self._writer.drain()
        except ConnectionError as exc:
            raise ChannelClosed(str(exc)) from exc

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):
            self._writer.close()

    async def _answer(
        self, message: Message, on_ask: Callable[[Message], Awaitable[Message]]
    ) -> None:
        reply = await on_ask(message)
        with contextlib.suppress(ChannelClosed):
            await self.send({**reply, "id": message["id"]})
