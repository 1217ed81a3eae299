"""Edits of services, routes, tenants and consumers through the admin API, against a real
``portico serve`` with ``entities.source: store``: what the gateway serves after each answer,
what is refused and how, and what the store and the audit log keep."""

from __future__ import annotations

import hashlib

import pytest
from tests.admin.conftest import UPSTREAM_TOKEN, Admin
from tests.support.gateway import check_problem, wait_for
from tests.support.upstreams import Upstream

from portico.store.database import Database
from portico.store.repositories import AuditLog, StateRevisions


def database(admin: Admin) -> Database:
    return Database(f"sqlite:///{admin.portico.tmp_path / 'portico.db'}")


def test_a_route_created_through_the_api_is_served_when_the_answer_comes(
    store_admin: Admin, upstream: Upstream
) -> None:
    with store_admin.client("operator") as http, store_admin.gateway() as gateway:
        assert gateway.get("/fresh/x").status_code == 404
        made = http.put("/services/fresh", json={"targets": [upstream.url]})
        assert made.status_code == 201, made.text
        assert made.headers["location"] == "/admin/v1/services/fresh"
        routed = http.put(
            "/routes/fresh",
            json={
                "match": {"path": "/fresh/{rest:path}"},
                "service": "fresh",
                "policies": [
                    {
                        "type": "headers",
                        "request": {"set": {"Authorization": "Bearer ${UPSTREAM_TOKEN}"}},
                    }
                ],
            },
        )
        assert routed.status_code == 201, routed.text
        # Answered once every gateway process polls it; a deadline, never a timing.
        served = wait_for(
            lambda: (r := gateway.get("/fresh/x")).status_code == 200 and r, timeout=1.0
        )
        seen = {k.lower(): v for k, v in served.json()["headers"]}
        # The reference was interpolated by the gateway process, from its own environment.
        assert seen["authorization"] == f"Bearer {UPSTREAM_TOKEN}"
        assert routed.json()["policies"][0]["request"]["set"]["Authorization"] == "[redacted]"
        listed = http.get("/routes", params={"service": "fresh"}).json()["items"]
        assert [r["name"] for r in listed] == ["fresh"]

        assert http.delete("/routes/fresh").status_code == 204
        wait_for(lambda: gateway.get("/fresh/x").status_code == 404, timeout=1.0)
        assert http.delete("/services/fresh").status_code == 204


def test_a_lost_update_is_refused_with_412(store_admin: Admin, upstream: Upstream) -> None:
    with store_admin.client("operator") as http:
        read = http.get("/services/main")
        etag = read.headers["etag"]
        body = {"targets": [upstream.url], "retries": 0}
        first = http.put("/services/main", json={**body, "retries": 2}, headers={"If-Match": etag})
        assert first.status_code == 200, first.text
        assert first.headers["etag"] != etag
        late = http.put("/services/main", json=body, headers={"If-Match": etag})
        check_problem(late, 412, "https://portico.dev/problems/precondition-failed")
        assert http.get("/services/main").json()["retries"] == 2
        fresh = http.put("/services/main", json=body, headers={"If-Match": first.headers["etag"]})
        assert fresh.status_code == 200
        missing = http.put("/services/nothing-here", json=body, headers={"If-Match": "*"})
        check_problem(missing, 412, "https://portico.dev/problems/precondition-failed")


def test_validation_errors_point_into_the_body(store_admin: Admin) -> None:
    with store_admin.client("operator") as http:
        bad = http.put(
            "/services/broken",
            json={"targets": ["ftp://x"], "timeouts": {"read": "5 parsecs"}, "colour": "red"},
        )
        problem = check_problem(bad, 400, "https://portico.dev/problems/validation-failed")
        pointers = {e["pointer"]: e["message"] for e in problem["errors"]}
        assert set(pointers) == {"/targets/0", "/timeouts/read", "/colour"}
        assert "duration" in pointers["/timeouts/read"]
        policy = http.put(
            "/routes/broken",
            json={
                "match": {"path": "/broken"},
                "service": "main",
                "policies": [{"type": "rate-limit", "limts": []}],
            },
        )
        problem = check_problem(policy, 400, "https://portico.dev/problems/validation-failed")
        assert {e["pointer"] for e in problem["errors"]} >= {"/policies/0/limts"}
        unknown = http.put("/routes/orphan", json={"match": {"path": "/o"}, "service": "nope"})
        problem = check_problem(unknown, 400, "https://portico.dev/problems/validation-failed")
        assert problem["errors"] == [{"pointer": "/service", "message": "unknown service 'nope'"}]
        literal = http.put(
            "/tenants/acme/consumers/leaky",
            json={"oauth": {"client_id": "leaky", "client_secret": "plain-value-1234"}},
        )
        problem = check_problem(
            literal,
            400,
            "https://portico.dev/problems/validation-failed",
            secrets=("plain-value-1234",),
        )
        assert problem["errors"][0]["pointer"] == "/oauth/client_secret"
        assert "${VAR}" in problem["errors"][0]["message"]
        marked = http.put("/services/main", json={"targets": ["http://x:1"], "locked": False})
        problem = check_problem(marked, 400, "https://portico.dev/problems/validation-failed")
        assert problem["errors"][0]["pointer"] == "/locked"
        named = http.put(
            "/routes/one", json={"name": "two", "match": {"path": "/"}, "service": "main"}
        )
        check_problem(named, 400, "https://portico.dev/problems/validation-failed")
        in_use = http.delete("/services/main")
        problem = check_problem(in_use, 409, "https://portico.dev/problems/entity-conflict")
        assert "unknown service 'main'" in problem["errors"][0]["message"]
    with database(store_admin) as db:
        documents = [StateRevisions(db).latest()]
    assert documents[0] is not None
    assert "broken" not in documents[0].document["services"]


def test_an_entity_locked_to_the_file_is_refused_409(store_admin: Admin) -> None:
    with store_admin.client("admin") as http:
        for method, path, body in (
            ("PUT", "/services/pinned", {"targets": ["http://127.0.0.1:1"]}),
            ("DELETE", "/services/pinned", None),
            ("PUT", "/tenants/acme/consumers/fixed", {"scopes": ["all"]}),
            ("DELETE", "/tenants/acme/consumers/fixed", None),
        ):
            answer = http.request(method, path, json=body)
            problem = check_problem(answer, 409, "https://portico.dev/problems/entity-locked")
            assert "portico.yaml" in problem["detail"], problem
        # Its neighbours are not locked.
        assert (
            http.put("/tenants/acme/consumers/billing", json={"scopes": ["a"]}).status_code == 200
        )


def test_roles_and_tenant_scope_decide_who_may_edit(store_admin: Admin) -> None:
    with store_admin.client("viewer") as http:
        check_problem(
            http.put("/services/x", json={"targets": ["http://127.0.0.1:1"]}),
            403,
            "https://portico.dev/problems/insufficient-role",
        )
    with store_admin.client("acme-operator") as http:
        check_problem(
            http.put("/services/x", json={"targets": ["http://127.0.0.1:1"]}),
            403,
            "https://portico.dev/problems/tenant-scoped",
        )
        check_problem(
            http.put("/routes/x", json={"match": {"path": "/x"}, "service": "main"}),
            403,
            "https://portico.dev/problems/tenant-scoped",
        )
        # Another tenant's consumers do not exist for it: the same 404 as for a made-up one.
        for path in ("/tenants/globex/consumers/app", "/tenants/globex/consumers/new"):
            check_problem(
                http.put(path, json={}), 404, "https://portico.dev/problems/entity-not-found"
            )
            check_problem(http.delete(path), 404, "https://portico.dev/problems/entity-not-found")
        check_problem(
            http.put("/tenants/initech", json={}),
            404,
            "https://portico.dev/problems/entity-not-found",
        )
        # Encodings of another tenant's path are not a way around it.
        for path in (
            "/tenants/acme%2F..%2Fglobex/consumers/app",
            "/tenants/GLOBEX/consumers/app",
            "/tenants/acme/../globex/consumers/app",
        ):
            answer = http.put(path, json={})
            assert answer.status_code in (400, 404), (path, answer.status_code)
        made = http.put("/tenants/acme/consumers/scoped", json={"scopes": ["orders:read"]})
        assert made.status_code == 201, made.text
        assert http.delete("/tenants/acme/consumers/scoped").status_code == 204
    with database(store_admin) as db:
        latest = StateRevisions(db).latest()
    assert latest is not None
    assert set(latest.document["tenants"]["globex"]["consumers"]) == {"app"}


def test_a_method_override_is_not_a_write(store_admin: Admin) -> None:
    with store_admin.client("admin") as http:
        for header in ("X-HTTP-Method-Override", "X-Method-Override", "X-HTTP-Method"):
            answer = http.post("/services/main", headers={header: "DELETE"})
            check_problem(answer, 405, "https://portico.dev/problems/method-not-allowed")
        assert http.get("/services/main").status_code == 200


def test_every_write_is_one_revision_and_one_audit_entry_with_its_request_id(
    store_admin: Admin,
) -> None:
    with database(store_admin) as db:
        before = StateRevisions(db).latest()
    assert before is not None
    with store_admin.client("operator") as http:
        made = http.put(
            "/tenants/globex/consumers/audited",
            json={"scopes": ["a"], "metadata": {"plan": "gold"}},
            headers={"X-Request-ID": "edit-audit-0001"},
        )
        assert made.status_code == 201, made.text
        request_id = made.headers["x-request-id"]
        gone = http.delete("/tenants/globex/consumers/audited")
        assert gone.status_code == 204
    with database(store_admin) as db:
        after = StateRevisions(db).latest()
        entries = [e for e in AuditLog(db).list(20) if e.target == "globex/audited"]
    assert after is not None and after.id == before.id + 2
    assert after.source == "admin" and after.actor.startswith("admin-token:")
    assert after.actor_role == "operator"
    deleted, created = entries[:2]
    assert (created.action, deleted.action) == ("consumer.create", "consumer.delete")
    assert created.request_id == request_id and created.tenant == "globex"
    assert created.before is None and created.after == {
        "scopes": ["a"],
        "metadata": {"plan": "gold"},
    }
    assert deleted.before == created.after and deleted.after is None
    assert created.detail["revision"] == before.id + 1


def test_file_mode_refuses_edits_and_says_how_to_switch(admin: Admin) -> None:
    with admin.client("admin") as http:
        for method, path in (
            ("PUT", "/services/main"),
            ("DELETE", "/routes/keyed"),
            ("PUT", "/tenants/acme/consumers/shop"),
        ):
            answer = http.request(method, path, json={} if method == "PUT" else None)
            problem = check_problem(answer, 409, "https://portico.dev/problems/entities-from-file")
            assert "entities: {source: store}" in problem["detail"]


def test_the_recorded_config_revision_holds_no_literal_secret(admin: Admin) -> None:
    # The admin fixture's file (entities from the file) writes an OAuth client secret and an
    # upstream Authorization as their values.
    with Database(f"sqlite:///{admin.portico.tmp_path / 'portico.db'}") as db:
        from portico.store.repositories import ConfigRevisions

        recorded = ConfigRevisions(db).latest()
    assert recorded is not None
    assert "hunter2hunter2" not in recorded.body and "s3cr3t-up" not in recorded.body
    assert "client_secret: '[redacted]'" in recorded.body
    assert "acme-billing" in recorded.body


def test_the_consumer_made_through_the_api_is_known_to_the_gateway(store_admin: Admin) -> None:
    with store_admin.client("operator") as http, store_admin.gateway() as gateway:
        assert (
            http.put("/tenants/globex/consumers/keyed", json={"scopes": ["x"]}).status_code == 201
        )
        key = http.post("/api-keys", json={"consumer": "globex/keyed"})
        assert key.status_code == 201, key.text
        answer = gateway.get("/keyed/ok", headers={"X-API-Key": key.json()["key"]})
        assert answer.status_code == 200
        seen = {k.lower(): v for k, v in answer.json()["headers"]}
        assert seen["x-portico-consumer"] == "globex/keyed"
        assert http.delete("/tenants/globex/consumers/keyed").status_code == 204
        refused = wait_for(
            lambda: (
                gateway.get("/keyed/ok", headers={"X-API-Key": key.json()["key"]}).status_code
                == 401
            ),
            timeout=1.0,
        )
        assert refused


def test_an_oauth_client_made_through_the_api_shows_its_secret_once_and_stores_its_hash(
    store_admin: Admin,
) -> None:
    from authlib.integrations.httpx_client import OAuth2Client, OAuthError

    gateway = store_admin.portico.url

    def token(client_id: str, secret: str) -> str:
        with OAuth2Client(client_id, secret, scope="orders:read", trust_env=False) as oauth:
            found = oauth.fetch_token(f"{gateway}/oauth2/token", grant_type="client_credentials")
        return str(found["access_token"])

    with store_admin.client("operator") as http:
        made = http.put("/tenants/globex/consumers/robot", json={"scopes": ["orders:read"]})
        assert made.status_code == 201, made.text
        issued = http.post("/tenants/globex/consumers/robot/oauth-client", json={})
        assert issued.status_code == 201, issued.text
        client = issued.json()
        assert client["client_id"] == "globex-robot"
        assert issued.headers["location"] == "/admin/v1/oauth-clients/globex-robot"
        first_secret = client["client_secret"]
        assert len(first_secret) >= 40
        assert token("globex-robot", first_secret)

        shown = http.get("/oauth-clients/globex-robot")
        assert shown.status_code == 200 and first_secret not in shown.text
        assert shown.json()["authentication"] == ["client_secret"]
        consumer = http.get("/tenants/globex/consumers/robot")
        assert first_secret not in consumer.text

        again = http.post(
            "/tenants/globex/consumers/robot/oauth-client",
            headers={"If-Match": consumer.headers["etag"]},
        )
        assert again.status_code == 201, again.text
        second_secret = again.json()["client_secret"]
        assert second_secret != first_secret and token("globex-robot", second_secret)
        with pytest.raises(OAuthError):
            token("globex-robot", first_secret)
        stale = http.post(
            "/tenants/globex/consumers/robot/oauth-client",
            headers={"If-Match": consumer.headers["etag"]},
        )
        check_problem(stale, 412, "https://portico.dev/problems/precondition-failed")
        locked = http.post("/tenants/acme/consumers/fixed/oauth-client")
        check_problem(locked, 409, "https://portico.dev/problems/entity-locked")
    with store_admin.client("acme-operator") as http:
        hidden = http.post("/tenants/globex/consumers/robot/oauth-client")
        check_problem(hidden, 404, "https://portico.dev/problems/entity-not-found")

    directory = store_admin.portico.tmp_path
    with database(store_admin) as db:
        entries = AuditLog(db).list(50)
        latest = StateRevisions(db).latest()
    assert latest is not None
    oauth = latest.document["tenants"]["globex"]["consumers"]["robot"]["oauth"]
    assert oauth["client_secret_sha256"] == hashlib.sha256(second_secret.encode()).hexdigest()
    for secret in (first_secret, second_secret):
        assert secret not in repr(entries)
        stored = b"".join(p.read_bytes() for p in directory.glob("portico.db*"))
        assert secret.encode() not in stored
