"""``portico routes from-openapi``: the routes it prints are accepted by ``portico check`` and
serve the document's operations, with the security requirements' scopes on an ``auth`` entry."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Any

import yaml
from tests.support.gateway import run_portico, write_config

HERE = Path(__file__).parent


def routes_of(output: str) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = yaml.safe_load(output)["routes"]
    return routes


def test_printed_routes_pass_portico_check(tmp_path: Path) -> None:
    shutil.copy(HERE / "orders.yaml", tmp_path / "orders.yaml")

    result = run_portico("routes", "from-openapi", "orders.yaml", "--prefix", "/shop", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    routes = routes_of(result.stdout)
    assert [(r["name"], r["match"]["methods"], r["match"]["path"]) for r in routes] == [
        ("listOrders", ["GET"], "/shop/api/orders"),
        ("createOrder", ["POST"], "/shop/api/orders"),
        ("getOrder", ["GET"], "/shop/api/orders/{id}"),
        ("deleteOrder", ["DELETE"], "/shop/api/orders/{id}"),
    ]
    assert routes[1]["policies"] == [
        {"type": "auth", "methods": ["oauth"], "scopes": ["orders:write"]}
    ]
    assert all(r["service"] == "orders" and r["strip_prefix"] == "/shop" for r in routes)
    config = {
        "services": {
            "orders": {
                "targets": ["http://127.0.0.1:9"],
                "openapi": "orders.yaml",
                "policies": [{"type": "validation"}],
            }
        },
        "identity": {"oauth": {"issuer": "https://gateway.example.com"}},
        "routes": routes,
    }
    write_config(tmp_path / "portico.yaml", config)
    checked = run_portico("check", "portico.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr


def test_names_paths_and_schemes_are_made_valid(tmp_path: Path) -> None:
    (tmp_path / "api.yaml").write_text(
        textwrap.dedent(
            """\
            openapi: 3.1.0
            info: {title: Partner API, version: "1"}
            servers: [{url: "https://partners.example.com/v1/"}]
            security: [{key: []}]
            components:
              securitySchemes:
                key: {type: apiKey, in: header, name: X-Key}
                okta: {type: openIdConnect, openIdConnectUrl: "https://okta/.well-known"}
                basic: {type: http, scheme: basic}
            paths:
              /files/{file-name}.json:
                get:
                  operationId: get file!
                  parameters: [{name: file-name, in: path, required: true, schema: {}}]
                  responses: {"200": {description: ok}}
              /public:
                get:
                  security: [{}]
                  responses: {"200": {description: ok}}
                put:
                  security: [{okta: [a]}, {key: [b]}, {basic: []}]
                  responses: {"200": {description: ok}}
            """
        )
    )

    result = run_portico("routes", "from-openapi", "api.yaml", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    routes = routes_of(result.stdout)
    assert [(r["name"], r["match"]["path"], r["service"]) for r in routes] == [
        ("get-file", "/v1/files/{file_name}", "partner-api"),
        ("get-public", "/v1/public", "partner-api"),
        ("put-public", "/v1/public", "partner-api"),
    ]
    assert routes[0]["policies"] == [{"type": "auth", "methods": ["api_key"]}]
    assert "policies" not in routes[1]
    assert routes[2]["policies"] == [
        {"type": "auth", "methods": ["jwt:okta", "api_key"], "scopes": {"any_of": ["a", "b"]}}
    ]
    assert "# note: put-public: security scheme 'basic' has no Portico method" in result.stdout
    assert "is matched as a whole ({file_name})" in result.stdout


def test_a_broken_document_is_reported_one_problem_a_line(tmp_path: Path) -> None:
    (tmp_path / "api.yaml").write_text("openapi: 3.1.0\ninfo: {title: t}\npaths: {}\n")

    result = run_portico("routes", "from-openapi", "api.yaml", cwd=tmp_path)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        'api.yaml:2:7: info: "version" is a required property',
        "1 error(s) in api.yaml",
    ]
