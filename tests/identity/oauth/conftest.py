"""Fixtures for the authorization server tests: a gateway serving as ``portico serve`` does, with
OAuth clients of two tenants and routes protected by the ``oauth`` method."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.oauth import (
    KeyPair,
    ServingGateway,
    StartGateway,
    free_port,
    oauth_config,
    rsa_key,
    serving_gateway,
)
from tests.support.upstreams import Upstream


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream("orders")
    yield server
    server.close()


@pytest.fixture(scope="session")
def warehouse_key() -> KeyPair:
    return rsa_key("warehouse-1")


@pytest.fixture
def start(tmp_path: Path, upstream: Upstream, warehouse_key: KeyPair) -> Iterator[StartGateway]:
    """Start a gateway; keyword arguments go to :func:`oauth_config`."""
    with contextlib.ExitStack() as stack:
        count = 0

        def start(**options: Any) -> ServingGateway:
            nonlocal count
            count += 1
            directory = tmp_path / f"gateway-{count}"
            directory.mkdir()
            config = oauth_config(free_port(), upstream, warehouse_key, **options)
            return stack.enter_context(serving_gateway(directory, config))

        yield start


@pytest.fixture
def gateway(start: StartGateway) -> ServingGateway:
    return start()
