"""``portico catalog export``: the merged OpenAPI 3.1 document of an audience, made by the real
command from a real config and real OpenAPI documents, checked with openapi-spec-validator and
loaded by schemathesis (a third-party consumer of OpenAPI documents).

What it must hold: the gateway's paths (never the backend's), the documents' operations with
their components merged (clashes prefixed), 3.0 schemas in 3.1's terms, the security schemes
of the routes' methods with each operation's scopes, Portico's own error answers; and what it
must never hold: a service the audience may not see, a backend address, a secret.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from openapi_spec_validator import validate
from tests.support.gateway import run_portico, write_config
from tests.support.pki import CertificateAuthority

from portico.identity.apikeys import generate_key

KEY = generate_key()
UPSTREAM_SECRET = "Bearer upstream-s3cr3t-9f2c"
CLIENT_SECRET = "client-s3cr3t-hunter2-b7"
HMAC_SECRET = "hmac-secret-0123456789abcdef0123456789"
BACKENDS = {
    "orders-v1": "http://10.1.0.11:7001",
    "orders-v2": "https://orders-v2.backend.internal:7443",
    "ledger": "http://10.9.9.9:7999",
    "draft": "http://10.1.0.12:7002",
    "legacy": "http://10.1.0.13:7003",
    "plain": "http://10.1.0.14:7004",
}
DOC_SERVER = "https://orders.backend.internal/api/v2"

ORDERS_V1 = {
    "openapi": "3.0.3",
    "info": {"title": "Orders", "version": "1"},
    "paths": {
        "/orders/{orderId}": {
            "parameters": [
                {"name": "orderId", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": {
                "operationId": "getOrder",
                "responses": {
                    "200": {
                        "description": "One order.",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Order"}}
                        },
                    }
                },
            },
        }
    },
    "components": {
        "schemas": {
            "Order": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "note": {"type": "string", "nullable": True},
                    "total": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
                    "status": {"$ref": "#/components/schemas/Status"},
                },
                "example": {"id": "1", "nullable": True},
            },
            "Status": {"type": "string", "enum": ["open", "shipped"]},
        }
    },
}
ORDERS_V2 = {
    "openapi": "3.1.0",
    "info": {"title": "Orders", "version": "2"},
    "servers": [{"url": DOC_SERVER}],
    "paths": {
        "/orders": {
            "get": {
                "operationId": "listOrders",
                "security": [{"backendKey": []}],
                "servers": [{"url": "https://other.backend.internal"}],
                "responses": {
                    "200": {
                        "description": "Orders.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Order"},
                                }
                            }
                        },
                    }
                },
            },
            "post": {
                "operationId": "createOrder",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Order"}}
                    },
                },
                "responses": {"201": {"description": "Created."}},
            },
        },
        "/orders/{id}": {
            "get": {
                "operationId": "getOrder",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "One order.",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Order"}}
                        },
                    }
                },
            }
        },
    },
    "components": {
        "schemas": {
            "Order": {
                "type": "object",
                "required": ["id", "lines"],
                "properties": {"id": {"type": "string"}, "lines": {"type": "array"}},
            },
            "Status": {"type": "string", "enum": ["open", "shipped"]},
        },
        "securitySchemes": {
            "backendKey": {"type": "apiKey", "in": "header", "name": "X-Backend-Key"},
            "oauth": {
                "type": "oauth2",
                "flows": {
                    "clientCredentials": {
                        "tokenUrl": "https://idp.backend.internal/token",
                        "scopes": {"orders:write": "Create orders"},
                    }
                },
            },
        },
    },
}
LEDGER = {
    "openapi": "3.1.0",
    "info": {"title": "Ledger", "version": "1"},
    "paths": {
        "/entries": {
            "get": {
                "operationId": "listLedgerEntries",
                "responses": {
                    "200": {
                        "description": "Entries.",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/LedgerEntry"}
                            }
                        },
                    }
                },
            }
        }
    },
    "components": {"schemas": {"LedgerEntry": {"type": "object"}}},
}


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("catalog")
    for name, document in (
        ("orders-v1.yaml", ORDERS_V1),
        ("orders-v2.yaml", ORDERS_V2),
        ("ledger.yaml", LEDGER),
    ):
        (directory / name).write_text(yaml.safe_dump(document), encoding="utf-8")
    ca = CertificateAuthority(directory / "pki")
    server = ca.issue_server()
    rate_limit = {"type": "rate-limit", "limits": [{"name": "minute", "limit": 60, "window": "1m"}]}
    config: dict[str, Any] = {
        "gateway": {
            "listen": "127.0.0.1:0",
            "tls": {
                "listen": "127.0.0.1:0",
                "certificate": str(server.cert_path),
                "private_key": str(server.key_path),
                "client_ca": str(ca.cert_path),
                "client_certificate": "optional",
            },
        },
        "services": {
            "orders-v1": {
                "targets": [BACKENDS["orders-v1"]],
                "openapi": "orders-v1.yaml",
                "api": "orders",
                "version": "1",
                "owner": "team-orders",
                "audience": "public",
                "lifecycle": {
                    "state": "deprecated",
                    "since": "2026-01-01",
                    "sunset": "2099-01-01",
                    "link": "https://developer.example.com/orders/v2",
                },
            },
            "orders-v2": {
                "targets": [BACKENDS["orders-v2"]],
                "openapi": "orders-v2.yaml",
                "api": "orders",
                "version": "2",
                "audience": "partner",
                "description": "Orders for partners.",
                "policies": [
                    {"type": "headers", "request": {"set": {"Authorization": UPSTREAM_SECRET}}}
                ],
            },
            "ledger": {
                "targets": [BACKENDS["ledger"]],
                "openapi": "ledger.yaml",
                "owner": "team-finance",
            },
            "draft": {"targets": [BACKENDS["draft"]], "audience": "public", "lifecycle": "design"},
            "legacy": {
                "targets": [BACKENDS["legacy"]],
                "audience": "public",
                "lifecycle": {"state": "retired"},
            },
            "plain": {"targets": [BACKENDS["plain"]], "audience": "public"},
        },
        "routes": [
            {
                "name": "v1-order",
                "match": {"path": "/v1/orders/{orderId}", "methods": ["GET"]},
                "service": "orders-v1",
                "strip_prefix": "/v1",
                "policies": [rate_limit],
            },
            {
                "name": "v2-all",
                "match": {"path": "/v2/{rest:path}"},
                "service": "orders-v2",
                "upstream_path": "/api/v2/{rest:path}",
                "policies": [{"type": "validation"}],
            },
            {
                "name": "partner-orders",
                "match": {"path": "/partner/orders", "methods": ["GET", "POST"]},
                "service": "orders-v2",
                "upstream_path": "/api/v2/orders",
                "policies": [
                    {
                        "type": "auth",
                        "methods": ["api_key", "oauth", "mtls", "signature"],
                        "api_key": {"header": "X-Partner-Key"},
                        "scopes": {"any_of": ["orders:read", "orders:write"]},
                    }
                ],
            },
            {
                "name": "partner-order",
                "match": {"path": "/partner/orders/{order}", "methods": ["GET"]},
                "service": "orders-v2",
                "upstream_path": "/api/v2/orders/{order}",
                "policies": [
                    {"type": "auth", "methods": ["jwt:partners-idp"], "scopes": ["orders:read"]}
                ],
            },
            {
                "name": "ledger",
                "match": {"path": "/ledger/{rest:path}"},
                "service": "ledger",
                "strip_prefix": "/ledger",
                "policies": [{"type": "auth", "methods": ["api_key"]}],
            },
            {"name": "draft", "match": {"path": "/draft/things"}, "service": "draft"},
            {"name": "legacy", "match": {"path": "/legacy/{rest:path}"}, "service": "legacy"},
            {
                "name": "plain-item",
                "match": {"path": "/plain/items/{item}", "methods": ["GET", "PUT"]},
                "service": "plain",
            },
        ],
        "tenants": {
            "acme": {
                "consumers": {
                    "shop": {
                        "scopes": ["orders:read"],
                        "api_keys": [{"id": KEY.id, "sha256": KEY.sha256}],
                        "oauth": {"client_id": "acme-shop", "client_secret": CLIENT_SECRET},
                        "signature_keys": [
                            {"keyid": "shop-1", "algorithm": "hmac-sha256", "secret": HMAC_SECRET}
                        ],
                    }
                }
            }
        },
        "identity": {
            "oauth": {"issuer": "https://api.example.com"},
            "providers": {
                "partners-idp": {
                    "issuer": "https://login.partners.example",
                    "jwks_uri": "https://login.partners.example/jwks.json",
                    "audiences": ["https://api.example.com"],
                }
            },
        },
    }
    return write_config(directory / "portico.yaml", config)


def export(config_path: Path, audience: str, *extra: str) -> dict[str, Any]:
    done = run_portico(
        "catalog", "export", "--audience", audience, "-c", str(config_path), *extra,
        cwd=config_path.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = yaml.safe_load(done.stdout)
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def documents(config_path: Path) -> dict[str, dict[str, Any]]:
    return {
        audience: export(config_path, audience) for audience in ("public", "partner", "internal")
    }


@pytest.mark.parametrize("audience", ["public", "partner", "internal"])
def test_each_export_is_valid_openapi_3_1_that_schemathesis_loads(
    documents: dict[str, dict[str, Any]], audience: str
) -> None:
    document = documents[audience]
    assert document["openapi"] == "3.1.0"
    validate(document)
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    expected = sum(
        1 for item in document["paths"].values() for method in item if not method.startswith("x-")
    )
    assert len(operations) == expected > 0
    for operation in operations:
        # A real client of the document can make a request of every operation.
        case = operation.Case()
        assert case.method and case.path == operation.path


def test_each_audience_sees_its_services_and_those_of_narrower_ones_only(
    documents: dict[str, dict[str, Any]],
) -> None:
    def services(document: dict[str, Any]) -> set[str]:
        return {tag["name"] for tag in document["tags"]}

    assert services(documents["public"]) == {"orders-v1", "plain"}
    assert services(documents["partner"]) == {"orders-v1", "orders-v2", "plain"}
    assert services(documents["internal"]) == {"orders-v1", "orders-v2", "ledger", "plain"}
    public = json.dumps(documents["public"])
    partner = json.dumps(documents["partner"])
    for hidden in ("/ledger", "LedgerEntry", "listLedgerEntries", "team-finance"):
        assert hidden not in public and hidden not in partner, hidden
    for hidden in ("/partner/", "/v2/", "Orders for partners", "jwt-partners-idp"):
        assert hidden not in public, hidden
    for document in documents.values():
        text = json.dumps(document)
        # Design (not served yet) and retired (gone): in no export.
        assert "/draft" not in text and "/legacy" not in text
        assert "draft" not in services(document) and "legacy" not in services(document)


def test_no_export_holds_a_backend_address_or_a_secret(
    documents: dict[str, dict[str, Any]], config_path: Path
) -> None:
    for document in documents.values():
        text = json.dumps(document)
        for url in (*BACKENDS.values(), DOC_SERVER, "backend.internal", "10.1.0.", "10.9.9.9"):
            assert url not in text, url
        for secret in (UPSTREAM_SECRET, "upstream-s3cr3t", CLIENT_SECRET, HMAC_SECRET, KEY.sha256):
            assert secret not in text, secret
        assert "X-Backend-Key" not in text and "backendKey" not in text
        assert str(config_path.parent) not in text


def test_paths_are_the_gateway_s_with_the_operations_of_the_documents(
    documents: dict[str, dict[str, Any]],
) -> None:
    paths = documents["internal"]["paths"]
    assert set(paths) == {
        "/v1/orders/{orderId}",
        "/v2/orders",
        "/v2/orders/{id}",
        "/partner/orders",
        "/partner/orders/{order}",
        "/ledger/entries",
        "/plain/items/{item}",
    }
    # strip_prefix: the document's paths behind the prefix, the path item's parameters kept.
    v1 = paths["/v1/orders/{orderId}"]
    assert set(v1) == {"get"}
    assert [p["name"] for p in v1["get"]["parameters"]] == ["orderId"]
    # upstream_path: the document's parameter takes the gateway's name.
    partner_order = paths["/partner/orders/{order}"]["get"]
    assert [(p["name"], p["in"]) for p in partner_order["parameters"]] == [("order", "path")]
    assert set(paths["/partner/orders"]) == {"get", "post"}
    # A catch-all route exposes every operation of its document, by method.
    assert set(paths["/v2/orders"]) == {"get", "post"}
    # No document: made up from the route, one per method, its parameter a string.
    plain = paths["/plain/items/{item}"]
    assert set(plain) == {"get", "put"}
    assert plain["get"]["parameters"][0] == {
        "name": "item",
        "in": "path",
        "required": True,
        "description": "A segment of the path.",
        "schema": {"type": "string"},
    }
    # Operation ids stay unique: getOrder is in two documents and reached by several routes.
    ids = [
        operation["operationId"]
        for item in paths.values()
        for operation in item.values()
        if isinstance(operation, dict)
    ]
    assert len(ids) == len(set(ids))
    assert "v1-order.getOrder" in ids and "partner-order.getOrder" in ids


def test_components_that_clash_are_prefixed_and_their_references_follow(
    documents: dict[str, dict[str, Any]],
) -> None:
    document = documents["partner"]
    schemas = document["components"]["schemas"]
    assert "OrdersV1Order" in schemas and "OrdersV2Order" in schemas and "Order" not in schemas
    # Alike in both documents: merged once, under its own name.
    assert schemas["Status"] == {"type": "string", "enum": ["open", "shipped"]}
    v1 = document["paths"]["/v1/orders/{orderId}"]["get"]
    ok = v1["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/OrdersV1Order"}
    assert schemas["OrdersV1Order"]["properties"]["status"] == {
        "$ref": "#/components/schemas/Status"
    }
    listed = document["paths"]["/v2/orders"]["get"]["responses"]["200"]["content"]
    assert listed["application/json"]["schema"]["items"] == {
        "$ref": "#/components/schemas/OrdersV2Order"
    }
    # The gateway's own names are never taken by a document's.
    assert "Problem" in schemas and schemas["Problem"]["required"][0] == "type"
    # Without a clash in a document, a name stays as its service wrote it.
    assert "Order" in documents["public"]["components"]["schemas"]


def test_openapi_3_0_schemas_are_written_as_3_1(documents: dict[str, dict[str, Any]]) -> None:
    order = documents["partner"]["components"]["schemas"]["OrdersV1Order"]
    assert order["properties"]["note"] == {"type": ["string", "null"]}
    assert order["properties"]["total"] == {"type": "number", "exclusiveMinimum": 0}
    # An example is data: its keys are not read as schema keywords.
    assert order["example"] == {"id": "1", "nullable": True}


def test_security_schemes_are_the_routes_methods_with_their_scopes(
    documents: dict[str, dict[str, Any]],
) -> None:
    document = documents["internal"]
    schemes = document["components"]["securitySchemes"]
    assert schemes["apiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": schemes["apiKey"]["description"],
    }
    assert schemes["apiKey-X-Partner-Key"]["name"] == "X-Partner-Key"
    flow = schemes["oauth2"]["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == "https://api.example.com/oauth2/token"
    assert flow["scopes"] == {"orders:read": "", "orders:write": "Create orders"}
    assert schemes["mutualTLS"]["type"] == "mutualTLS"
    assert schemes["jwt-partners-idp"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": schemes["jwt-partners-idp"]["description"],
    }
    assert "https://login.partners.example" in schemes["jwt-partners-idp"]["description"]
    assert schemes["httpSignature"]["name"] == "Signature"

    listed = document["paths"]["/partner/orders"]["get"]["security"]
    # Any one method, with any one of the scopes (any_of).
    assert {"apiKey-X-Partner-Key": ["orders:read"]} in listed
    assert {"oauth2": ["orders:write"]} in listed
    assert {"mutualTLS": ["orders:read"]} in listed
    assert {"httpSignature": ["orders:write"]} in listed
    assert len(listed) == 8
    assert document["paths"]["/partner/orders/{order}"]["get"]["security"] == [
        {"jwt-partners-idp": ["orders:read"]}
    ]
    assert document["paths"]["/ledger/entries"]["get"]["security"] == [{"apiKey": []}]
    # Without auth the operation says nothing of security (the document sets none globally).
    assert "security" not in document["paths"]["/plain/items/{item}"]["get"]
    assert "security" not in document
    # A public document names only what its operations use.
    assert set(documents["public"]["components"].get("securitySchemes", {})) == set()


def test_the_gateway_s_own_answers_are_on_the_operations_they_can_happen_to(
    documents: dict[str, dict[str, Any]],
) -> None:
    document = documents["internal"]
    paths = document["paths"]
    responses = document["components"]["responses"]

    def answers(path: str, method: str = "get") -> dict[str, Any]:
        return paths[path][method]["responses"]

    for path in paths:
        for status in ("502", "503", "504"):
            assert status in answers(path, next(iter(paths[path]))), (path, status)
    guarded = answers("/partner/orders")
    assert guarded["401"] == {"$ref": "#/components/responses/PorticoUnauthorized"}
    assert guarded["403"] == {"$ref": "#/components/responses/PorticoForbidden"}
    assert "401" not in answers("/plain/items/{item}")
    limited = answers("/v1/orders/{orderId}")
    assert limited["429"] == {"$ref": "#/components/responses/PorticoTooManyRequests"}
    assert set(responses["PorticoTooManyRequests"]["headers"]) == {
        "RateLimit",
        "RateLimit-Policy",
        "Retry-After",
    }
    assert "429" not in guarded
    assert answers("/v2/orders", "post")["400"] == {
        "$ref": "#/components/responses/PorticoBadRequest"
    }
    assert "400" not in guarded
    for name, response in responses.items():
        if name.startswith("Portico"):
            assert response["content"] == {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            }


def test_deprecated_operations_say_so_with_their_fields(
    documents: dict[str, dict[str, Any]],
) -> None:
    operation = documents["public"]["paths"]["/v1/orders/{orderId}"]["get"]
    assert operation["deprecated"] is True
    assert operation["responses"]["200"]["headers"] == {
        "Deprecation": {"$ref": "#/components/headers/Deprecation"},
        "Sunset": {"$ref": "#/components/headers/Sunset"},
    }
    assert operation["responses"]["410"] == {"$ref": "#/components/responses/PorticoGone"}
    current = documents["partner"]["paths"]["/v2/orders"]["get"]
    assert "deprecated" not in current
    assert "tags" in current and current["tags"] == ["orders-v2"]
    tags = {tag["name"]: tag for tag in documents["internal"]["tags"]}
    assert tags["orders-v1"]["x-portico-lifecycle"] == "deprecated"
    assert tags["orders-v1"]["x-portico-owner"] == "team-orders"
    # Owners are named to internal callers only.
    assert all("x-portico-owner" not in tag for tag in documents["public"]["tags"])


def test_the_command_writes_json_or_yaml_with_the_gateway_s_servers(
    config_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "partner.json"
    done = run_portico(
        "catalog", "export", "--audience", "partner", "-c", str(config_path), "-o", str(out),
        "--server", "https://api.example.com/", "--title", "Partner APIs",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "operations of 3 services (orders-v1, orders-v2, plain) for partner" in done.stderr
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["servers"] == [{"url": "https://api.example.com"}]
    assert document["info"]["title"] == "Partner APIs"
    assert document["info"]["version"] == export(config_path, "partner")["info"]["version"]

    refused = run_portico(
        "catalog", "export", "--audience", "partner", "-c", str(config_path),
        "--server", "ftp://x",
        cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "is not a URL of the gateway" in refused.stderr
    nowhere = run_portico(
        "catalog", "export", "--audience", "public", "-c", str(config_path),
        "-o", str(tmp_path / "missing" / "out.yaml"),
        cwd=tmp_path,
    )  # fmt: skip
    assert nowhere.returncode == 1
    assert nowhere.stderr.count("\n") == 1
    assert "portico catalog export: error: cannot write" in nowhere.stderr


def test_the_list_names_each_service_with_its_catalog_settings(
    config_path: Path, tmp_path: Path
) -> None:
    done = run_portico("catalog", "list", "--json", "-c", str(config_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {row["service"]: row for row in json.loads(done.stdout)}
    assert rows["orders-v1"] == {
        "service": "orders-v1",
        "api": "orders",
        "version": "1",
        "lifecycle": "deprecated",
        "audience": "public",
        "owner": "team-orders",
        "tags": [],
    }
    assert rows["draft"]["lifecycle"] == "design"
    table = run_portico("catalog", "list", "-c", str(config_path), cwd=tmp_path).stdout
    assert table.splitlines()[0].split() == [
        "service",
        "api",
        "version",
        "lifecycle",
        "audience",
        "owner",
    ]
