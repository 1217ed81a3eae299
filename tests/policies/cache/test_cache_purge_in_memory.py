"""A cache in the one gateway process's memory (no Redis), purged from the command line through
the admin API, which runs in that process: the entries go at once; the ways around the admin
API's authentication and roles do not purge anything."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.admin.conftest import make_token
from tests.policies.cache.origin import Origin
from tests.policies.cache.test_cache_redis import config, status_of
from tests.support.gateway import PorticoProcess, check_problem, client, run_portico
from tests.support.oauth import free_port

URL = "/products/1?h=Cache-Control:max-age%3D60"
PROBLEMS = "https://portico.dev/problems/"


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, origin: Origin
) -> Iterator[tuple[PorticoProcess, dict[str, str]]]:
    # A port of its own in the file: the command reads the admin listener's address there.
    admin = {"listen": f"127.0.0.1:{free_port()}"}
    tenants = {"acme": {"consumers": {"shop": {}}}}
    settings = {**config(origin, None), "admin": admin, "tenants": tenants}
    process = PorticoProcess(tmp_path_factory.mktemp("cache"), settings)
    try:
        path = process.config_path
        tokens = {
            "operator": make_token(path, "operator"),
            "viewer": make_token(path, "viewer"),
            "scoped": make_token(path, "operator", "--tenant", "acme"),
        }
        yield process, tokens
    finally:
        process.stop()


def _purge(process: PorticoProcess, *args: str, token: str | None) -> tuple[int, str]:
    env = {"PORTICO_ADMIN_TOKEN": token} if token is not None else {"PORTICO_ADMIN_TOKEN": ""}
    done = run_portico(
        "cache", "purge", "-c", str(process.config_path), *args, cwd=process.tmp_path, env=env
    )
    return done.returncode, done.stderr.strip()


def test_the_command_purges_a_path_of_the_cache_in_memory(
    gateway: tuple[PorticoProcess, dict[str, str]],
) -> None:
    process, tokens = gateway
    with process.client() as http:
        assert status_of(http.get(URL)) == "Portico; fwd=miss; stored"
        assert status_of(http.get(URL)).startswith("Portico; hit")
        assert status_of(http.get("/products/2?h=Cache-Control:max-age%3D60")).endswith("stored")

        code, said = _purge(
            process, "--route", "products", "--key", "/products/1", token=tokens["operator"]
        )
        assert (code, said) == (0, "purged 1 cache entries of paths /products/1 of route products")
        assert status_of(http.get(URL)) == "Portico; fwd=miss; stored"
        assert status_of(http.get("/products/2?h=Cache-Control:max-age%3D60")).startswith(
            "Portico; hit"
        )

        code, said = _purge(process, "--route", "products", token=tokens["operator"])
        assert code == 0 and said.startswith("purged 2 cache entries of route products")
        assert status_of(http.get(URL)) == "Portico; fwd=miss; stored"


def test_each_purge_is_in_the_audit_log(gateway: tuple[PorticoProcess, dict[str, str]]) -> None:
    process, tokens = gateway
    assert _purge(process, "--route", "prices", token=tokens["operator"])[0] == 0
    admin = make_token(process.config_path, "admin")
    with client(process.admin_url, headers={"Authorization": f"Bearer {admin}"}) as http:
        entries = http.get("/admin/v1/audit-log", params={"action": "cache.purge"}).json()["items"]
    assert any(e["entity"] == "prices" and e["detail"]["keys"] == [] for e in entries)


@pytest.mark.parametrize(
    ("token", "said"),
    [
        (None, "give an admin token (operator or admin role) with --admin-token or"),
        ("padm_not-a-token", "answered 401"),
        ("viewer", "answered 403: 'this needs the operator role; the token has viewer'"),
        ("scoped", "answered 403: 'the token sees tenant acme only'"),
    ],
)
def test_without_a_token_that_may_purge_nothing_is_purged(
    gateway: tuple[PorticoProcess, dict[str, str]], token: str | None, said: str
) -> None:
    process, tokens = gateway
    with process.client() as http:
        http.get(URL)
        assert status_of(http.get(URL)).startswith("Portico; hit")
        code, message = _purge(process, "--route", "products", token=tokens.get(token or "", token))
        assert code == 1 and said in message and len(message.splitlines()) == 1
        assert status_of(http.get(URL)).startswith("Portico; hit")


def test_the_admin_api_names_the_field_it_refuses(
    gateway: tuple[PorticoProcess, dict[str, str]],
) -> None:
    process, tokens = gateway
    headers = {"Authorization": f"Bearer {tokens['operator']}"}
    with client(process.admin_url, headers=headers) as http:
        unknown = http.post("/admin/v1/cache/purge", json={"route": "nowhere"})
        check_problem(unknown, 400, PROBLEMS + "validation-failed")
        assert unknown.json()["errors"][0]["pointer"] == "/route"
        uncached = http.post("/admin/v1/cache/purge", json={"route": "plain"})
        assert "has no cache policy" in uncached.json()["errors"][0]["message"]
        bad_key = http.post(
            "/admin/v1/cache/purge", json={"route": "products", "keys": ["/ok", "no-slash"]}
        )
        check_problem(bad_key, 400, PROBLEMS + "validation-failed")
        assert bad_key.json()["errors"][0]["pointer"] == "/keys/1"
        extra = http.post("/admin/v1/cache/purge", json={"route": "products", "all": True})
        check_problem(extra, 400, PROBLEMS + "validation-failed")
