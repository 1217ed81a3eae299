"""The admin API's catalog, against a real ``portico serve`` over real sockets: the list with
its filters, sorts and pages, one service's entry with its versions and the scopes of its
operations, the merged document of an audience; who may read them; and a change of lifecycle
that a reload applies, served at once and written to the audit log by ``serve``."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openapi_spec_validator import validate
from tests.admin.conftest import ADMIN, make_token
from tests.support.gateway import PorticoProcess, check_problem, client, route, wait_for
from tests.support.upstreams import Upstream

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {"title": "Orders", "version": "2"},
    "paths": {
        "/orders/{id}": {
            "get": {
                "operationId": "getOrder",
                "summary": "One order",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": {"description": "The order."}},
            }
        }
    },
}
PROBLEMS = "https://portico.dev/problems/"


def catalog_config(upstream: Upstream, v1_lifecycle: Any = "stable") -> dict[str, Any]:
    return {
        "admin": ADMIN,
        "services": {
            "orders-v1": {
                "targets": [upstream.url],
                "retries": 0,
                "api": "orders",
                "version": "1",
                "owner": "team-orders",
                "tags": ["orders"],
                "audience": "public",
                "lifecycle": v1_lifecycle,
            },
            "orders-v2": {
                "targets": [upstream.url],
                "retries": 0,
                "openapi": "orders.yaml",
                "api": "orders",
                "version": "2",
                "owner": "team-orders",
                "description": "Orders, second version.",
                "tags": ["orders", "beta-program"],
                "audience": "partner",
                "lifecycle": "beta",
            },
            "crm": {"targets": [upstream.url], "retries": 0, "owner": "team-crm"},
            "next": {"targets": [upstream.url], "lifecycle": "design", "audience": "public"},
        },
        "routes": [
            route("v1-orders", "/v1/orders/{id}", service="orders-v1", methods=["GET"]),
            route(
                "partner-order",
                "/partner/orders/{order}",
                service="orders-v2",
                upstream_path="/orders/{order}",
                policies=[
                    {
                        "type": "auth",
                        "methods": ["api_key", "oauth"],
                        "scopes": {"all_of": ["orders:read"], "any_of": ["eu", "us"]},
                    }
                ],
            ),
            route("crm", "/crm/{rest:path}", service="crm", strip_prefix="/crm"),
            route("next", "/next/orders", service="next"),
        ],
        "identity": {"oauth": {"issuer": "http://127.0.0.1:8080"}},
        "tenants": {"acme": {"consumers": {"shop": {}}}},
    }


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream("catalog")
    yield server
    server.close()


class Catalog:
    def __init__(self, portico: PorticoProcess, tokens: dict[str, str], upstream: Upstream):
        self.portico = portico
        self.tokens = tokens
        self.upstream = upstream

    def client(self, token: str | None = "viewer") -> httpx.Client:  # noqa: S107
        headers = {} if token is None else {"Authorization": f"Bearer {self.tokens[token]}"}
        return client(self.portico.admin_url + "/admin/v1", headers=headers)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[Catalog]:
    directory = tmp_path_factory.mktemp("catalog-api")
    (directory / "orders.yaml").write_text(yaml.safe_dump(DOCUMENT), encoding="utf-8")
    portico = PorticoProcess(directory, catalog_config(upstream))
    try:
        path = portico.config_path
        tokens = {
            "viewer": make_token(path, "viewer"),
            "acme-viewer": make_token(path, "viewer", "--tenant", "acme"),
        }
        yield Catalog(portico, tokens, upstream)
    finally:
        portico.stop()


def names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["items"]]


def test_the_list_has_every_service_with_its_catalog_settings(catalog: Catalog) -> None:
    with catalog.client() as http:
        response = http.get("/catalog")
        assert names(response) == ["crm", "next", "orders-v1", "orders-v2"]
        assert response.headers["cache-control"] == "no-store"
        crm = response.json()["items"][0]
        assert crm["audience"] == "internal"
        assert crm["lifecycle"] == {
            "state": "stable",
            "since": None,
            "sunset": None,
            "link": None,
            "sunset_link": None,
        }
        assert crm["api"] == "crm" and crm["versions"] == [
            {"service": "crm", "version": None, "lifecycle": "stable"}
        ]
        nothing_of_the_backend = response.text
        assert catalog.upstream.url not in nothing_of_the_backend


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"tag": "orders"}, ["orders-v1", "orders-v2"]),
        ({"tag": "beta-program"}, ["orders-v2"]),
        ({"owner": "team-crm"}, ["crm"]),
        ({"lifecycle": "design"}, ["next"]),
        ({"lifecycle": "beta", "tag": "orders"}, ["orders-v2"]),
        ({"audience": "public"}, ["next", "orders-v1"]),
        ({"audience": "internal"}, ["crm"]),
        ({"api": "orders"}, ["orders-v1", "orders-v2"]),
        ({"api": "orders", "sort": "-name"}, ["orders-v2", "orders-v1"]),
        ({"sort": "owner"}, ["next", "crm", "orders-v1", "orders-v2"]),
        ({"tag": "nothing"}, []),
    ],
)
def test_the_list_filters_and_sorts(
    catalog: Catalog, query: dict[str, str], expected: list[str]
) -> None:
    with catalog.client() as http:
        assert names(http.get("/catalog", params=query)) == expected


def test_the_list_is_paged_with_a_cursor(catalog: Catalog) -> None:
    seen: list[str] = []
    with catalog.client() as http:
        response = http.get("/catalog", params={"limit": 1, "sort": "-name"})
        while True:
            seen += names(response)
            following = response.json()["next"]
            if following is None:
                assert "link" not in response.headers
                break
            assert response.headers["link"] == f'<{following}>; rel="next"'
            response = http.get(following.removeprefix("/admin/v1"))
        assert seen == ["orders-v2", "orders-v1", "next", "crm"]
        refused = http.get("/catalog", params={"cursor": "bm90IGEgY3Vyc29y"})
        problem = check_problem(refused, 400, PROBLEMS + "validation-failed")
        assert problem["errors"][0]["pointer"] == "/query/cursor"
        wrong = http.get("/catalog", params={"lifecycle": "sunsetting"})
        problem = check_problem(wrong, 400, PROBLEMS + "validation-failed")
        assert problem["errors"][0]["pointer"] == "/query/lifecycle"


def test_an_entry_has_its_versions_routes_and_the_scopes_of_its_operations(
    catalog: Catalog,
) -> None:
    with catalog.client() as http:
        response = http.get("/catalog/orders-v2")
        assert response.status_code == 200
        entry = response.json()
        assert entry["description"] == "Orders, second version."
        assert entry["versions"] == [
            {"service": "orders-v1", "version": "1", "lifecycle": "stable"},
            {"service": "orders-v2", "version": "2", "lifecycle": "beta"},
        ]
        assert entry["openapi"] is True and entry["document_problem"] is None
        assert entry["served"] is True
        [partner] = entry["routes"]
        assert partner["name"] == "partner-order"
        assert partner["operations"] == [
            {
                "method": "GET",
                "path": "/partner/orders/{order}",
                "operation_id": "getOrder",
                "summary": "One order",
                "documented": True,
                "deprecated": False,
                "auth": {
                    "methods": ["api_key", "oauth"],
                    "scopes": {"all_of": ["orders:read"], "any_of": ["eu", "us"]},
                    "tenants": [],
                },
            }
        ]
        etag = response.headers["etag"]
        again = http.get("/catalog/orders-v2", headers={"If-None-Match": etag})
        assert again.status_code == 304

        crm = http.get("/catalog/crm").json()
        [operation] = crm["routes"][0]["operations"][:1]
        assert operation["documented"] is False and operation["auth"] is None
        assert http.get("/catalog/next").json()["served"] is False

        for missing in ("nope", "orders-v3", "ORDERS-V2", "orders-v2%00"):
            check_problem(http.get(f"/catalog/{missing}"), 404, PROBLEMS + "entity-not-found")


def test_the_merged_document_of_an_audience(catalog: Catalog) -> None:
    with catalog.client() as http:
        public = http.get("/catalog/openapi")
        assert public.status_code == 200
        document = public.json()
        validate(document)
        assert set(document["paths"]) == {"/v1/orders/{id}"}
        assert http.get("/catalog/openapi", params={"audience": "public"}).json() == document
        assert (
            http.get(
                "/catalog/openapi", headers={"If-None-Match": public.headers["etag"]}
            ).status_code
            == 304
        )
        partner = http.get("/catalog/openapi", params={"audience": "partner"}).json()
        assert set(partner["paths"]) == {"/v1/orders/{id}", "/partner/orders/{order}"}
        internal = http.get("/catalog/openapi", params={"audience": "internal"}).json()
        assert "/crm" in "".join(internal["paths"]) and "/next" not in "".join(internal["paths"])
        for bogus in ("everyone", "PUBLIC", "public,internal", ""):
            refused = http.get("/catalog/openapi", params={"audience": bogus})
            check_problem(refused, 400, PROBLEMS + "validation-failed")
        # Given twice, the last one counts, as for every parameter of the API: no mix of the
        # two, and nothing a token that reads the catalog could not read anyway.
        twice = http.get("/catalog/openapi?audience=public&audience=internal")
        assert twice.json() == internal


def test_a_services_own_document_holds_its_operations_alone(catalog: Catalog) -> None:
    with catalog.client() as http:
        response = http.get("/catalog/orders-v1/openapi")
        assert response.status_code == 200, response.text
        document = response.json()
        validate(document)
        assert set(document["paths"]) == {"/v1/orders/{id}"}
        assert [tag["name"] for tag in document["tags"]] == ["orders-v1"]
        again = http.get(
            "/catalog/orders-v1/openapi", headers={"If-None-Match": response.headers["etag"]}
        )
        assert again.status_code == 304
        # Internal or in design: its own document all the same.
        crm = http.get("/catalog/crm/openapi").json()
        assert {path.split("/")[1] for path in crm["paths"]} == {"crm"}
        assert set(http.get("/catalog/next/openapi").json()["paths"]) == {"/next/orders"}
        check_problem(http.get("/catalog/nothing/openapi"), 404, PROBLEMS + "entity-not-found")


def test_only_a_token_of_every_tenant_reads_the_catalog(catalog: Catalog) -> None:
    for path in (
        "/catalog",
        "/catalog/orders-v1",
        "/catalog/openapi?audience=internal",
        "/catalog/crm/openapi",
    ):
        with catalog.client(token=None) as http:
            check_problem(http.get(path), 401, PROBLEMS + "unauthorized")
        with catalog.client(token="acme-viewer") as http:
            check_problem(http.get(path), 403, PROBLEMS + "tenant-scoped")
        with client(
            catalog.portico.admin_url + "/admin/v1",
            headers={"Authorization": f"Bearer {catalog.tokens['viewer']}x"},
        ) as http:
            check_problem(http.get(path), 401, PROBLEMS + "invalid-credentials")


def test_a_lifecycle_changed_by_a_reload_is_served_and_in_the_audit_log(
    catalog: Catalog, upstream: Upstream
) -> None:
    deprecated = {
        "state": "deprecated",
        "since": "2026-01-01",
        "sunset": "2099-01-01",
        "link": "https://developer.example.com/orders/v2",
    }
    with catalog.portico.client() as gateway:
        assert "deprecation" not in gateway.get("/v1/orders/1").headers
        catalog.portico.write(catalog_config(upstream, deprecated))
        announced = wait_for(
            lambda: (r := gateway.get("/v1/orders/1")).headers.get("deprecation") and r,
            timeout=15,
            what="the reload",
        )
        assert announced.headers["sunset"] == "Thu, 01 Jan 2099 00:00:00 GMT"

    def entries() -> list[dict[str, Any]]:
        with catalog.client() as http:
            found = http.get("/audit-log", params={"action": "service.lifecycle"})
            assert found.status_code == 200, found.text
            return list(found.json()["items"])

    [entry] = wait_for(entries, timeout=10, what="the audit entry")
    assert entry["actor"] == "serve"
    assert entry["entity"] == "orders-v1"
    assert entry["before"] == {"state": "stable"}
    assert entry["after"] == {
        "state": "deprecated",
        "since": "2026-01-01T00:00:00Z",
        "sunset": "2099-01-01T00:00:00Z",
        "link": "https://developer.example.com/orders/v2",
    }
    assert entry["detail"]["from"] == "stable" and entry["detail"]["to"] == "deprecated"
    assert entry["detail"]["source"] == str(catalog.portico.config_path)
    assert isinstance(entry["detail"]["revision"], int)

    # A reload that changes something else writes no lifecycle entry.
    other = copy.deepcopy(catalog_config(upstream, deprecated))
    other["services"]["crm"]["owner"] = "team-customers"
    catalog.portico.write(other)
    with catalog.client() as http:
        wait_for(
            lambda: http.get("/catalog/crm").json()["owner"] == "team-customers",
            timeout=15,
            what="the second reload",
        )
    assert len(entries()) == 1

    # And a retirement is one more, from deprecated.
    catalog.portico.write(catalog_config(upstream, {"state": "retired"}))
    with catalog.portico.client() as gateway:
        wait_for(lambda: gateway.get("/v1/orders/1").status_code == 410, timeout=15)
    latest = wait_for(lambda: len(found := entries()) == 2 and found, timeout=10)[0]
    assert latest["before"]["state"] == "deprecated" and latest["after"] == {"state": "retired"}
    assert "config reloaded" in catalog.portico.log()
    assert "service orders-v1: lifecycle deprecated -> retired" in catalog.portico.log()


def test_the_document_of_the_admin_api_describes_the_catalog(catalog: Catalog) -> None:
    with catalog.client(token=None) as http:
        document = http.get("/openapi.json").json()
    validate(document)
    paths = document["paths"]
    for path in ("/admin/v1/catalog", "/admin/v1/catalog/{service}", "/admin/v1/catalog/openapi"):
        assert "get" in paths[path], path
    listed = {p["name"] for p in paths["/admin/v1/catalog"]["get"]["parameters"]}
    assert {"tag", "owner", "lifecycle", "audience", "api", "sort", "limit", "cursor"} <= listed


def test_with_several_gateway_processes_the_supervisor_writes_the_lifecycle_change(
    tmp_path: Path, upstream: Upstream
) -> None:
    (tmp_path / "orders.yaml").write_text(yaml.safe_dump(DOCUMENT), encoding="utf-8")
    portico = PorticoProcess(tmp_path, catalog_config(upstream), ("--workers", "2"))
    try:
        token = make_token(portico.config_path, "viewer")
        portico.write(catalog_config(upstream, {"state": "retired"}))
        with portico.client() as gateway:
            # Every process serves it: a few requests land on both.
            wait_for(
                lambda: all(gateway.get("/v1/orders/1").status_code == 410 for _ in range(6)),
                timeout=20,
                what="the reload in every process",
            )
        with client(
            portico.admin_url + "/admin/v1", headers={"Authorization": f"Bearer {token}"}
        ) as http:
            [entry] = wait_for(
                lambda: http.get("/audit-log", params={"action": "service.lifecycle"}).json()[
                    "items"
                ],
                timeout=10,
                what="the audit entry",
            )
        assert (entry["actor"], entry["entity"]) == ("serve", "orders-v1")
        assert entry["before"] == {"state": "stable"} and entry["after"] == {"state": "retired"}
    finally:
        portico.stop()
