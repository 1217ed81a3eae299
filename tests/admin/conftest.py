"""A real ``portico serve`` with the admin API on, its tokens made with the real command, and a
consumer's key checked at the gateway: what every admin test talks to over real sockets."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.gateway import (
    Config,
    PorticoProcess,
    client,
    route,
    run_portico,
    service,
)
from tests.support.receivers import Receiver, running_receiver
from tests.support.upstreams import Upstream

ADMIN = {"listen": "127.0.0.1:0"}


def admin_config(upstream_url: str, **extra: Any) -> Config:
    """Two tenants (acme with two consumers, globex with one), a route that takes API keys,
    a route whose policy holds a secret, and the admin API on an ephemeral port."""
    return {
        "admin": ADMIN,
        "services": {"main": service(upstream_url, retries=0)},
        "routes": [
            route(
                "keyed",
                "/keyed/{rest:path}",
                strip_prefix="/keyed",
                policies=[{"type": "auth", "methods": ["api_key"]}],
            ),
            route(
                "secretive",
                "/secretive",
                policies=[
                    {"type": "headers", "request": {"set": {"Authorization": "Bearer s3cr3t-up"}}}
                ],
            ),
        ],
        "tenants": {
            "acme": {
                "consumers": {
                    "billing": {
                        "scopes": ["orders:read"],
                        "api_keys": [{"id": "declared01", "sha256": "0" * 64}],
                        "oauth": {"client_id": "acme-billing", "client_secret": "hunter2hunter2"},
                    },
                    "shop": {},
                }
            },
            "globex": {"consumers": {"app": {"metadata": {"team": "blue"}}}},
        },
        **extra,
    }


def make_token(config_path: Path, role: str, *extra: str) -> str:
    """``portico admin tokens create``: the token it prints once."""
    done = run_portico(
        "admin",
        "tokens",
        "create",
        "--role",
        role,
        *extra,
        "-c",
        str(config_path),
        cwd=config_path.parent,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@dataclass
class Admin:
    portico: PorticoProcess
    tokens: dict[str, str]
    """By name: ``admin``, ``operator``, ``viewer``, ``acme-operator``, ``acme-viewer``."""

    @property
    def url(self) -> str:
        return self.portico.admin_url + "/admin/v1"

    def client(self, token: str | None = "admin", **kwargs: Any) -> httpx.Client:  # noqa: S107
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {self.tokens.get(token, token)}"
        return client(self.url, headers=headers, **kwargs)

    def gateway(self) -> httpx.Client:
        return self.portico.client()


UPSTREAM_TOKEN = "up-token-value-93ac1"


def store_admin_config(upstream_url: str) -> dict[str, Any]:
    return {
        "admin": ADMIN,
        "entities": {"source": "store"},
        "services": {
            "main": service(upstream_url, retries=0),
            "pinned": {**service(upstream_url), "locked": True},
        },
        "routes": [
            route(
                "keyed", "/keyed/{rest:path}", policies=[{"type": "auth", "methods": ["api_key"]}]
            ),
            route("pinned", "/pinned", service="pinned"),
        ],
        "identity": {"oauth": {"issuer": "http://127.0.0.1"}},
        "tenants": {
            "acme": {
                "consumers": {"billing": {"scopes": ["orders:read"]}, "fixed": {"locked": True}}
            },
            "globex": {"consumers": {"app": {}}},
        },
    }


@pytest.fixture(scope="module")
def store_admin(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[Admin]:
    directory = tmp_path_factory.mktemp("store-admin")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("UPSTREAM_TOKEN", UPSTREAM_TOKEN)
        portico = PorticoProcess(directory, store_admin_config(upstream.url))
    try:
        path = portico.config_path
        tokens = {
            "admin": make_token(path, "admin"),
            "operator": make_token(path, "operator"),
            "viewer": make_token(path, "viewer"),
            "acme-operator": make_token(path, "operator", "--tenant", "acme"),
        }
        yield Admin(portico, tokens)
    finally:
        portico.stop()


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream("main")
    yield server
    server.close()


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[Admin]:
    directory = tmp_path_factory.mktemp("admin")
    portico = PorticoProcess(directory, admin_config(upstream.url))
    try:
        path = portico.config_path
        tokens = {
            "admin": make_token(path, "admin"),
            "operator": make_token(path, "operator"),
            "viewer": make_token(path, "viewer"),
            "acme-operator": make_token(path, "operator", "--tenant", "acme"),
            "acme-viewer": make_token(path, "viewer", "--tenant", "acme"),
        }
        yield Admin(portico, tokens)
    finally:
        portico.stop()


# -- events and webhooks ---------------------------------------------------------------------------

FAST_DELIVERY = {
    # The receiver is on 127.0.0.1 over http: the development mode and an allowlist open it.
    "allow_http": True,
    "allow_networks": ["127.0.0.0/8"],
    "schedule": [0, 0.05, 0.05],
    "jitter": 0,
    "timeout": 2,
    "claim_timeout": 5,
    "poll_interval": 0.05,
}
EVENT_TYPES = {
    "order.created": {
        "description": "An order was placed.",
        "version": "2",
        "owner": "team-orders",
        "schema": {
            "type": "object",
            "required": ["order_id"],
            "properties": {"order_id": {"type": "string"}, "total": {"type": "number"}},
        },
    },
    "order.shipped": {"description": "An order left the warehouse."},
}


@dataclass
class EventsAdmin(Admin):
    receiver: Receiver

    @property
    def config_path(self) -> Path:
        return self.portico.config_path


@pytest.fixture(scope="module")
def events_admin(
    tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
) -> Iterator[EventsAdmin]:
    """The admin API of a ``portico serve`` that delivers webhooks to a real receiver; the
    config declares one endpoint of its own (``ep_cfg_audit``, for acme/shop)."""
    directory = tmp_path_factory.mktemp("events-admin")
    with running_receiver() as receiver:
        events = {
            "types": EVENT_TYPES,
            "delivery": FAST_DELIVERY,
            "endpoints": {
                "audit": {
                    "consumer": "acme/shop",
                    "url": receiver.url("/config"),
                    "types": ["order.shipped"],
                    "secret": "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                }
            },
        }
        portico = PorticoProcess(directory, admin_config(upstream.url, events=events))
        try:
            path = portico.config_path
            tokens = {
                "admin": make_token(path, "admin"),
                "operator": make_token(path, "operator"),
                "viewer": make_token(path, "viewer"),
                "acme-operator": make_token(path, "operator", "--tenant", "acme"),
                "acme-viewer": make_token(path, "viewer", "--tenant", "acme"),
            }
            yield EventsAdmin(portico, tokens, receiver)
        finally:
            portico.stop()
