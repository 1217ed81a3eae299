"""The audit log (filters, cursor, the JSON lines export) and the running config's entities
(read-only, secrets redacted, sorted, paged, with ETags), through the admin API."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from tests.admin.conftest import Admin
from tests.admin.test_authentication import check_problem


def test_the_audit_log_filters_by_actor_action_entity_and_time(admin: Admin) -> None:
    started = datetime.now(UTC) - timedelta(seconds=1)
    with admin.client("operator") as http:
        key = http.post("/api-keys", json={"consumer": "globex/app"}).json()
        http.post(f"/api-keys/{key['id']}/revoke")
    actor = "admin-token:" + admin.tokens["operator"].split("_")[1]
    with admin.client("viewer") as http:
        by_entity = http.get("/audit-log", params={"entity": key["id"]}).json()["items"]
        assert [e["action"] for e in by_entity] == ["api_key.revoke", "api_key.create"]
        assert all(e["actor"] == actor and e["role"] == "operator" for e in by_entity)
        revokes = http.get(
            "/audit-log",
            params={"action": "api_key.revoke", "actor": actor, "since": started.isoformat()},
        ).json()["items"]
        assert key["id"] in {e["entity"] for e in revokes}
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert http.get("/audit-log", params={"since": future}).json()["items"] == []
        before = http.get("/audit-log", params={"until": started.isoformat(), "entity": key["id"]})
        assert before.json()["items"] == []
        naive = http.get("/audit-log", params={"since": "2026-01-01T00:00:00"})
        check_problem(naive, 400, "validation-failed")


def test_the_audit_log_pages_newest_first_without_gaps(admin: Admin) -> None:
    with admin.client("operator") as http:
        for _ in range(3):
            http.post("/api-keys", json={"consumer": "acme/shop"})
    with admin.client("viewer") as http:
        everything = [
            e["id"] for e in http.get("/audit-log", params={"limit": 200}).json()["items"]
        ]
        assert everything == sorted(everything, reverse=True)
        paged: list[int] = []
        url: str | None = "/audit-log?limit=2"
        while url is not None:
            page = http.get(url.removeprefix("/admin/v1")).json()
            paged += [e["id"] for e in page["items"]]
            url = page["next"]
        assert paged[: len(everything)] == everything[: len(paged)]
        assert len(paged) >= len(everything)


def test_the_export_streams_every_entry_as_json_lines(admin: Admin) -> None:
    with admin.client("viewer") as http:
        listed = http.get("/audit-log", params={"limit": 200, "sort": "at"}).json()["items"]
        with http.stream("GET", "/audit-log/export") as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/x-ndjson"
            lines = [json.loads(line) for line in response.iter_lines() if line]
    assert [e["id"] for e in lines[: len(listed)]] == [e["id"] for e in listed]
    assert set(lines[0]) == set(listed[0])


def test_a_tenant_scoped_token_reads_only_its_tenants_audit_entries(admin: Admin) -> None:
    with admin.client("operator") as http:
        http.post("/api-keys", json={"consumer": "globex/app"})
        http.post("/api-keys", json={"consumer": "acme/shop"})
    with admin.client("acme-viewer") as http:
        tenants = {
            e["tenant"] for e in http.get("/audit-log", params={"limit": 200}).json()["items"]
        }
        assert tenants == {"acme"}
        assert http.get("/audit-log", params={"tenant": "globex"}).json()["items"] == []
        with http.stream("GET", "/audit-log/export") as response:
            exported = {json.loads(line)["tenant"] for line in response.iter_lines() if line}
        assert exported == {"acme"}


def test_config_entities_are_read_from_the_running_config_with_secrets_redacted(
    admin: Admin,
) -> None:
    with admin.client("viewer") as http:
        routes = http.get("/routes").json()["items"]
        assert [r["name"] for r in routes] == ["keyed", "secretive"]
        secretive = http.get("/routes/secretive").json()
        assert secretive["policies"][0]["request"]["set"]["Authorization"] == "[redacted]"
        assert "s3cr3t-up" not in http.get("/routes").text
        service = http.get("/services/main").json()
        assert service["routes"] == ["keyed", "secretive"]
        consumer = http.get("/tenants/acme/consumers/billing").json()
        assert consumer["id"] == "acme/billing" and consumer["oauth_client_id"] == "acme-billing"
        assert consumer["api_keys"] == [{"id": "declared01", "expires_at": None}]
        clients = http.get("/oauth-clients").json()["items"]
        assert clients == [
            {
                "client_id": "acme-billing",
                "consumer": "acme/billing",
                "tenant": "acme",
                "authentication": ["client_secret"],
                "jwks_uri": None,
                "introspect_any": False,
            }
        ]
        assert "hunter2" not in http.get("/oauth-clients/acme-billing").text
        check_problem(http.get("/routes/nothing"), 404, "entity-not-found")
        check_problem(http.get("/tenants/acme/consumers/nobody"), 404, "entity-not-found")


def test_config_lists_sort_filter_and_page(admin: Admin) -> None:
    with admin.client("viewer") as http:
        by_name = [
            c["id"] for c in http.get("/consumers", params={"sort": "-name"}).json()["items"]
        ]
        assert by_name == ["acme/shop", "acme/billing", "globex/app"]
        assert [
            c["id"] for c in http.get("/consumers", params={"tenant": "globex"}).json()["items"]
        ] == ["globex/app"]
        scoped = http.get("/consumers", params={"scope": "orders:read"}).json()["items"]
        assert [c["id"] for c in scoped] == ["acme/billing"]
        first = http.get("/consumers", params={"limit": 2})
        assert len(first.json()["items"]) == 2 and first.json()["next_cursor"]
        rest = http.get("/consumers", params={"limit": 2, "cursor": first.json()["next_cursor"]})
        assert [c["id"] for c in rest.json()["items"]] == ["globex/app"]
        assert rest.json()["next"] is None and "link" not in rest.headers
        routes = http.get("/routes", params={"policy": "auth"}).json()["items"]
        assert [r["name"] for r in routes] == ["keyed"]


def test_a_config_entity_has_an_etag_and_answers_304(admin: Admin) -> None:
    with admin.client("viewer") as http:
        first = http.get("/tenants/globex")
        etag = first.headers["etag"]
        assert http.get("/tenants/globex", headers={"If-None-Match": etag}).status_code == 304
        assert http.get("/tenants/globex", headers={"If-None-Match": '"other"'}).status_code == 200
