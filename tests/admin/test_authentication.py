"""Admin tokens and roles, tried the way an attacker would: no token, wrong ones, revoked and
expired ones, the token in the query string, spelling variants of the field, two fields, a
viewer on every write, and a tenant's operator guessing another tenant's ids."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from tests.admin.conftest import Admin, make_token
from tests.support.gateway import run_portico

from portico.admin.tokens import TOKEN_PREFIX

BASE = "https://portico.dev/problems/"


def check_problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == BASE + slug and body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    return dict(body)


def test_a_request_without_a_token_is_401_with_a_bearer_challenge(admin: Admin) -> None:
    with admin.client(token=None) as http:
        response = http.get("/whoami")
    check_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == 'Bearer realm="portico"'


@pytest.mark.parametrize(
    "value",
    [
        "Bearer",
        "Basic YWRtaW46YWRtaW4=",
        "Token {token}",
        "{token}",
        "Bearer{token}",
    ],
)
def test_other_schemes_and_malformed_fields_are_401(admin: Admin, value: str) -> None:
    field = value.format(token=admin.tokens["admin"])
    with admin.client(token=None, headers={"Authorization": field}) as http:
        response = http.get("/whoami")
    check_problem(response, 401, "unauthorized")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # one character of the secret
        lambda t: t + "x",
        lambda t: t.upper(),
        lambda t: TOKEN_PREFIX + "nosuchtoken0_" + t.rsplit("_", 1)[1],  # another id
        lambda t: t.replace(TOKEN_PREFIX, "pk_"),
        lambda t: "padm_" + "a" * 500,
    ],
)
def test_a_wrong_token_is_401_invalid_credentials_whatever_is_wrong(
    admin: Admin, mangle: Any
) -> None:
    with admin.client(token=mangle(admin.tokens["admin"])) as http:
        response = http.get("/whoami")
    body = check_problem(response, 401, "invalid-credentials")
    assert "detail" not in body  # the same answer, whatever was wrong
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
def test_the_scheme_is_matched_without_case(admin: Admin, scheme: str) -> None:
    with admin.client(
        token=None, headers={"Authorization": f"{scheme} {admin.tokens['viewer']}"}
    ) as http:
        assert http.get("/whoami").json()["role"] == "viewer"


def raw_request(port: int, head: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


@pytest.mark.parametrize("name", ["authorization", "AUTHORIZATION", "AuThOrIzAtIoN"])
def test_the_field_name_is_matched_without_case(admin: Admin, name: str) -> None:
    assert admin.portico.admin_port is not None
    status, _ = raw_request(
        admin.portico.admin_port,
        f"GET /admin/v1/whoami HTTP/1.1\r\nHost: x\r\n{name}: Bearer {admin.tokens['viewer']}\r\n"
        "Connection: close\r\n\r\n",
    )
    assert status == 200


def test_two_authorization_fields_are_refused_even_if_one_is_valid(admin: Admin) -> None:
    assert admin.portico.admin_port is not None
    for first, second in (
        (admin.tokens["viewer"], admin.tokens["admin"]),
        ("garbage", admin.tokens["admin"]),
        (admin.tokens["admin"], admin.tokens["admin"]),
    ):
        status, data = raw_request(
            admin.portico.admin_port,
            "GET /admin/v1/whoami HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {first}\r\nAuthorization: Bearer {second}\r\n"
            "Connection: close\r\n\r\n",
        )
        assert status == 400, data
        assert b"application/problem+json" in data


@pytest.mark.parametrize(
    "query",
    ["access_token={token}", "token={token}", "x={token}", "ACCESS_TOKEN=anything"],
)
def test_a_token_in_the_query_string_is_refused_even_with_a_valid_header(
    admin: Admin, query: str
) -> None:
    with admin.client() as http:
        response = http.get("/whoami?" + query.format(token=admin.tokens["admin"]))
    body = check_problem(response, 400, "bad-request")
    assert "query string" in body["detail"]
    assert admin.tokens["admin"] not in response.text


def test_a_token_elsewhere_than_authorization_does_not_count(admin: Admin) -> None:
    token = admin.tokens["admin"]
    for headers in ({"X-Admin-Token": token}, {"X-API-Key": token}, {"Cookie": f"token={token}"}):
        with admin.client(token=None, headers=headers) as http:
            check_problem(http.get("/whoami"), 401, "unauthorized")


def test_a_revoked_token_is_refused_at_its_next_request(admin: Admin) -> None:
    path = admin.portico.config_path
    token = make_token(path, "admin")
    with admin.client(token=token) as http:
        assert http.get("/whoami").status_code == 200
        token_id = token.split("_")[1]
        done = run_portico("admin", "tokens", "revoke", token_id, "-c", str(path), cwd=path.parent)
        assert done.returncode == 0, done.stderr
        check_problem(http.get("/whoami"), 401, "invalid-credentials")


def test_an_expired_token_is_refused(admin: Admin) -> None:
    path = admin.portico.config_path
    token = make_token(path, "admin", "--expires", "1s")
    with admin.client(token=token) as http:
        from tests.support.gateway import wait_for

        wait_for(lambda: http.get("/whoami").status_code == 401, timeout=10, what="expiry")
        check_problem(http.get("/whoami"), 401, "invalid-credentials")


WRITES = [
    ("POST", "/api-keys", {"consumer": "acme/shop"}),
    ("POST", "/api-keys/{key}/rotate", {}),
    ("POST", "/api-keys/{key}/revoke", None),
    ("POST", "/signing-keys/rotate", {}),
]


def a_key(admin: Admin, consumer: str = "acme/shop") -> str:
    with admin.client("admin") as http:
        response = http.post("/api-keys", json={"consumer": consumer})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_a_viewer_may_not_write_anything(admin: Admin, method: str, path: str, body: Any) -> None:
    key = a_key(admin)
    with admin.client("viewer") as http:
        response = http.request(method, path.format(key=key), json=body)
    check_problem(response, 403, "insufficient-role")
    with admin.client("admin") as http:
        assert http.get(f"/api-keys/{key}").json()["status"] == "active"


def test_an_operator_may_not_rotate_signing_keys(admin: Admin) -> None:
    with admin.client("operator") as http:
        check_problem(http.post("/signing-keys/rotate", json={}), 403, "insufficient-role")


def test_a_tenants_operator_gets_404_for_another_tenants_entities(admin: Admin) -> None:
    theirs = a_key(admin, "globex/app")
    a_key(admin, "acme/shop")
    with admin.client("acme-operator") as http:
        for method, path in (
            ("GET", f"/api-keys/{theirs}"),
            ("POST", f"/api-keys/{theirs}/revoke"),
            ("POST", f"/api-keys/{theirs}/rotate"),
            ("GET", "/tenants/globex"),
            ("GET", "/tenants/globex/consumers/app"),
            ("GET", "/tenants/globex/consumers/app/usage"),
        ):
            response = http.request(method, path)
            check_problem(response, 404, "entity-not-found")
        # Existing and missing look the same: the same status, type and shape.
        missing = http.get("/api-keys/doesnotexist")
        check_problem(missing, 404, "entity-not-found")
        # Creating a key for another tenant's consumer reads as an unknown consumer.
        refused = http.post("/api-keys", json={"consumer": "globex/app"})
        body = check_problem(refused, 400, "validation-failed")
        assert body["errors"] == [
            {"pointer": "/consumer", "message": "no consumer globex/app in the config"}
        ]
        listed = http.get("/api-keys?limit=200").json()["items"]
        assert listed and all(k["consumer"].startswith("acme/") for k in listed)
        assert theirs not in {k["id"] for k in listed}
        assert {t["name"] for t in http.get("/tenants").json()["items"]} == {"acme"}
        assert {c["tenant"] for c in http.get("/consumers").json()["items"]} == {"acme"}
        # Global entities are not a tenant's: 403, and nothing of them is shown.
        for path in ("/services", "/routes", "/routes/keyed", "/signing-keys"):
            check_problem(http.get(path), 403, "tenant-scoped")
    with admin.client("admin") as http:
        assert http.get(f"/api-keys/{theirs}").json()["status"] == "active"


def test_a_tenants_operator_manages_its_own_tenants_keys(admin: Admin) -> None:
    with admin.client("acme-operator") as http:
        created = http.post("/api-keys", json={"consumer": "acme/billing"})
        assert created.status_code == 201, created.text
        revoked = http.post(f"/api-keys/{created.json()['id']}/revoke")
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
