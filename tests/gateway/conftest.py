"""Fixtures for gateway behaviour tests: real upstream servers and an in-process gateway."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support.gateway import Config, RunningGateway, running_gateway
from tests.support.upstreams import Upstream, WebSocketEcho

StartGateway = Callable[[Config], RunningGateway]
MakeUpstream = Callable[..., Upstream]


@pytest.fixture
def make_upstream() -> Iterator[MakeUpstream]:
    made: list[Upstream] = []

    def make(name: str = "upstream") -> Upstream:
        upstream = Upstream(name)
        made.append(upstream)
        return upstream

    yield make
    for upstream in made:
        upstream.close()


@pytest.fixture
def upstream(make_upstream: MakeUpstream) -> Upstream:
    return make_upstream("main")


@pytest.fixture
def ws_echo() -> Iterator[WebSocketEcho]:
    server = WebSocketEcho()
    yield server
    server.close()


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[StartGateway]:
    with contextlib.ExitStack() as stack:
        count = 0

        def start(config: Config) -> RunningGateway:
            nonlocal count
            count += 1
            directory = tmp_path / f"gateway-{count}"
            directory.mkdir()
            return stack.enter_context(running_gateway(directory, config))

        yield start
