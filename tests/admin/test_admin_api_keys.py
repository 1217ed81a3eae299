"""API keys through the admin API, against the gateway that checks them: created (shown once),
listed, rotated with an overlap, revoked; ETag and If-Match (412 on a lost update); keys
declared in the config are the file's; every change in the audit log, secrets redacted."""

from __future__ import annotations

import hashlib

from tests.admin.conftest import Admin
from tests.admin.test_authentication import check_problem

from portico.store.database import Database
from portico.store.repositories import AuditLog


def gateway_status(admin: Admin, key: str) -> int:
    with admin.gateway() as http:
        return http.get("/keyed/x", headers={"X-API-Key": key}).status_code


def test_a_created_key_is_shown_once_and_works_at_the_gateway_at_once(admin: Admin) -> None:
    with admin.client("operator") as http:
        created = http.post("/api-keys", json={"consumer": "acme/billing", "expires_in": 3600})
        assert created.status_code == 201, created.text
        body = created.json()
        key = body["key"]
        assert key.startswith(f"pk_{body['id']}_")
        assert created.headers["location"] == f"/admin/v1/api-keys/{body['id']}"
        assert body["status"] == "active" and body["expires_at"] is not None

        # The answer came two polls after the commit: every gateway knows the key already.
        assert gateway_status(admin, key) == 200

        fetched = http.get(f"/api-keys/{body['id']}")
        assert "key" not in fetched.json()
        assert (
            key not in fetched.text and hashlib.sha256(key.encode()).hexdigest() not in fetched.text
        )
        assert fetched.headers["etag"] == created.headers["etag"]


def test_a_revoked_key_is_refused_by_the_gateway_when_the_answer_comes(admin: Admin) -> None:
    with admin.client("operator") as http:
        created = http.post("/api-keys", json={"consumer": "acme/billing"}).json()
        assert gateway_status(admin, created["key"]) == 200
        revoked = http.post(f"/api-keys/{created['id']}/revoke")
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
        assert gateway_status(admin, created["key"]) == 401
        again = http.post(f"/api-keys/{created['id']}/revoke")
        assert (
            again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]
        )


def test_rotation_gives_a_new_key_and_both_work_during_the_overlap(admin: Admin) -> None:
    with admin.client("operator") as http:
        old = http.post("/api-keys", json={"consumer": "acme/shop"}).json()
        rotated = http.post(f"/api-keys/{old['id']}/rotate", json={"overlap": 600})
        assert rotated.status_code == 201, rotated.text
        result = rotated.json()
        assert (
            result["old"]["status"] == "rotated"
            and result["old"]["rotated_to"] == result["new"]["id"]
        )
        assert result["new"]["consumer"] == "acme/shop"
        assert gateway_status(admin, old["key"]) == 200
        assert gateway_status(admin, result["new"]["key"]) == 200
        again = http.post(f"/api-keys/{old['id']}/rotate", json={})
        check_problem(again, 409, "entity-conflict")


def test_a_change_with_a_stale_etag_is_refused_with_412(admin: Admin) -> None:
    with admin.client("operator") as http:
        created = http.post("/api-keys", json={"consumer": "acme/shop"}).json()
        read = http.get(f"/api-keys/{created['id']}")
        etag = read.headers["etag"]
        # Someone else rotates it in between.
        http.post(f"/api-keys/{created['id']}/rotate", json={}, headers={"If-Match": etag})
        lost = http.post(f"/api-keys/{created['id']}/revoke", headers={"If-Match": etag})
        check_problem(lost, 412, "precondition-failed")
        assert lost.headers["etag"] != etag
        assert http.get(f"/api-keys/{created['id']}").json()["status"] == "rotated"
        fresh = http.get(f"/api-keys/{created['id']}").headers["etag"]
        done = http.post(f"/api-keys/{created['id']}/revoke", headers={"If-Match": fresh})
        assert done.status_code == 200
        star = http.post(f"/api-keys/{created['id']}/revoke", headers={"If-Match": "*"})
        assert star.status_code == 200


def test_an_unchanged_key_answers_304_to_its_etag(admin: Admin) -> None:
    with admin.client("viewer") as http:
        key_id = http.get("/api-keys?limit=1").json()["items"][0]["id"]
        etag = http.get(f"/api-keys/{key_id}").headers["etag"]
        assert http.get(f"/api-keys/{key_id}", headers={"If-None-Match": etag}).status_code == 304


def test_keys_declared_in_the_config_are_shown_and_changed_only_there(admin: Admin) -> None:
    with admin.client("operator") as http:
        shown = http.get("/api-keys/declared01")
        assert shown.status_code == 200 and shown.json()["source"] == "config"
        for action in ("revoke", "rotate"):
            check_problem(http.post(f"/api-keys/declared01/{action}"), 409, "entity-conflict")


def test_invalid_bodies_are_listed_as_pointer_and_message(admin: Admin) -> None:
    with admin.client("operator") as http:
        response = http.post("/api-keys", json={"consumer": "nobody", "expires_in": 0, "x": 1})
        body = check_problem(response, 400, "validation-failed")
        pointers = {error["pointer"] for error in body["errors"]}
        assert pointers == {"/consumer", "/expires_in", "/x"}
        unknown = http.post("/api-keys", json={"consumer": "acme/nobody"})
        assert (
            check_problem(unknown, 400, "validation-failed")["errors"][0]["pointer"] == "/consumer"
        )
        not_json = http.post(
            "/api-keys", content=b"{", headers={"content-type": "application/json"}
        )
        check_problem(not_json, 400, "validation-failed")
        huge = http.post(
            "/api-keys", content=b"x" * 70_000, headers={"content-type": "application/json"}
        )
        check_problem(huge, 413, "request-too-large")


def test_lists_filter_sort_and_page_with_a_cursor(admin: Admin) -> None:
    with admin.client("operator") as http:
        made = [
            http.post("/api-keys", json={"consumer": "globex/app"}).json()["id"] for _ in range(3)
        ]
        seen: list[str] = []
        url: str | None = "/api-keys?consumer=globex/app&limit=2&sort=-created_at"
        pages = 0
        while url is not None:
            response = http.get(url.removeprefix("/admin/v1"))
            page = response.json()
            seen += [k["id"] for k in page["items"]]
            assert len(page["items"]) <= 2
            url = page["next"]
            if url is not None:
                assert response.headers["link"] == f'<{url}>; rel="next"'
            pages += 1
        assert pages >= 2
        assert set(made) <= set(seen) and len(seen) == len(set(seen))
        revoked = http.get("/api-keys?status=revoked").json()["items"]
        assert all(k["status"] == "revoked" for k in revoked)
        bad = http.get("/api-keys?cursor=bm90IGEgY3Vyc29y")
        assert (
            check_problem(bad, 400, "validation-failed")["errors"][0]["pointer"] == "/query/cursor"
        )
        other_sort = http.get("/api-keys?consumer=globex/app&limit=1").json()["next_cursor"]
        mixed = http.get(f"/api-keys?sort=id&cursor={other_sort}")
        check_problem(mixed, 400, "validation-failed")
        check_problem(http.get("/api-keys?sort=sha256"), 400, "validation-failed")
        check_problem(http.get("/api-keys?limit=201"), 400, "validation-failed")


def test_every_change_is_audited_with_who_what_before_after_and_request_id(admin: Admin) -> None:
    with admin.client("operator", headers={"X-Request-ID": "change-42.a"}) as http:
        created = http.post("/api-keys", json={"consumer": "acme/shop"})
        assert created.headers["x-request-id"] == "change-42.a"
        key = created.json()
        http.post(f"/api-keys/{key['id']}/revoke")
    token_id = admin.tokens["operator"].split("_")[1]
    database = Database(f"sqlite:///{admin.portico.tmp_path / 'portico.db'}")
    try:
        entries = [e for e in AuditLog(database).list(limit=200) if e.target == key["id"]]
    finally:
        database.dispose()
    assert [e.action for e in entries] == ["api_key.revoke", "api_key.create"]
    revoke, create = entries
    assert revoke.actor == f"admin-token:{token_id}" and revoke.actor_role == "operator"
    assert revoke.request_id == create.request_id == "change-42.a"
    assert revoke.tenant == "acme"
    assert create.before is None and create.after is not None and create.after["status"] == "active"
    assert revoke.before is not None and revoke.before["status"] == "active"
    assert revoke.after is not None and revoke.after["status"] == "revoked"
    stored = repr(entries)
    assert (
        key["key"] not in stored and hashlib.sha256(key["key"].encode()).hexdigest() not in stored
    )


def test_a_malformed_request_id_is_replaced(admin: Admin) -> None:
    with admin.client("viewer", headers={"X-Request-ID": "bad id\twith spaces"}) as http:
        response = http.get("/whoami")
    assert response.headers["x-request-id"] != "bad id\twith spaces"
    assert response.json()["request_id"] == response.headers["x-request-id"]
