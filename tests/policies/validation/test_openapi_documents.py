"""A service's ``openapi`` document as ``portico check`` reads it (every problem one line, at the
config's line and the document's), and the two versions' schema dialects as the gateway applies
them: 3.0's ``nullable`` and boolean ``exclusiveMinimum``, 3.1's JSON Schema 2020-12."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.policies.validation.orders_upstream import OrdersUpstream
from tests.support.gateway import route, run_portico, running_gateway, write_config

from portico.assembly import load_config
from portico.config.errors import ConfigError

HEAD = "info: {title: t, version: '1'}\n"
HERE = Path(__file__).parent


def document(tmp_path: Path, text: str, name: str = "api.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_with(tmp_path: Path, openapi: str | None, policies: list[Any] | None = None) -> Path:
    service: dict[str, Any] = {"targets": ["http://127.0.0.1:9"]}
    if openapi is not None:
        service["openapi"] = openapi
    config = {
        "services": {"orders": service},
        "routes": [
            route("api", "/{rest:path}", service="orders", policies=policies or []),
        ],
    }
    return write_config(tmp_path / "portico.yaml", config)


def issues(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    return [str(issue) for issue in raised.value.issues]


def test_a_document_error_names_the_config_line_and_the_document_line(tmp_path: Path) -> None:
    document(
        tmp_path,
        """\
        openapi: 3.0.3
        info: {title: t, version: "1"}
        paths:
          /a:
            get:
              parameters:
                - in: query
              responses: {"200": {description: ok}}
        """,
    )
    found = issues(config_with(tmp_path, "api.yaml"))

    assert len(found) == 1
    assert found[0].startswith(f"{tmp_path / 'portico.yaml'}:5:14: ")
    assert f"services.orders.openapi: {tmp_path / 'api.yaml'}:7:" in found[0]
    assert "paths./a.get.parameters[0]" in found[0]
    assert "\n" not in found[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("openapi: 3.0.3\n" + HEAD + "paths: {}\npaths: {}\n", "duplicate key 'paths'"),
        ("swagger: '2.0'\n" + HEAD + "paths: {}\n", "Portico reads OpenAPI 3.0 and 3.1"),
        ("openapi: 3.1.0\n" + HEAD + "paths: {/a: [}\n", "api.yaml:3:"),
        (
            "openapi: 3.1.0\n" + HEAD + "paths:\n  /a:\n    post:\n      requestBody:\n"
            "        content: {application/json: {schema: {$ref: 'other.yaml#/X'}}}\n",
            "only references inside the document",
        ),
        (
            "openapi: 3.1.0\n" + HEAD + "paths:\n  /a:\n    post:\n      requestBody:\n"
            "        content: {application/json: {schema: {$ref: '#/components/schemas/X'}}}\n",
            "names nothing here",
        ),
        (
            "openapi: 3.1.0\n" + HEAD + "paths:\n  /a/{id}:\n    get: {}\n",
            "the path parameter 'id' is not declared",
        ),
    ],
    ids=["duplicate-key", "swagger-2", "not-yaml", "external-ref", "dangling-ref", "path-param"],
)
def test_what_cannot_be_used_is_reported(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "api.yaml").write_text(text, encoding="utf-8")

    found = issues(config_with(tmp_path, "api.yaml"))

    assert any(expected in line for line in found), found


def test_a_missing_document_is_reported(tmp_path: Path) -> None:
    found = issues(config_with(tmp_path, "nothere.yaml"))
    assert "cannot read the OpenAPI document" in found[0]


def test_the_validation_policy_needs_a_document(tmp_path: Path) -> None:
    found = issues(config_with(tmp_path, None, [{"type": "validation"}]))
    assert "routes[0].policies[0].type" in found[0]
    assert "needs services.orders.openapi" in found[0]


def test_check_reads_the_document_beside_the_config_whatever_the_directory(
    tmp_path: Path,
) -> None:
    here = tmp_path / "conf"
    here.mkdir()
    document(here, "openapi: 3.1.0\n" + HEAD + "paths: {}\n")
    config_with(here, "api.yaml", [{"type": "validation"}])

    result = run_portico("check", "conf/portico.yaml", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "ok (1 services, 1 routes)" in result.stdout


def test_check_prints_each_document_error_on_one_line(tmp_path: Path) -> None:
    (tmp_path / "api.yaml").write_text(
        "openapi: 3.0.3\n" + HEAD + "paths:\n  /a: {get: {responses: 5}}\n  /b: {get: 7}\n"
    )
    config_with(tmp_path, "api.yaml")

    result = run_portico("check", "portico.yaml", cwd=tmp_path)

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == "2 error(s) in portico.yaml"
    assert all(line.startswith("portico.yaml:") and "api.yaml:" in line for line in lines[:-1])


# -- the two dialects, through a gateway --------------------------------------------------------

OPENAPI_30 = """\
openapi: 3.0.3
info: {title: t, version: "1"}
paths:
  /things:
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              properties:
                maybe: {type: string, nullable: true}
                never: {type: string}
                choice: {type: string, enum: [a, b], nullable: true}
                above: {type: number, minimum: 5, exclusiveMinimum: true}
                when: {type: string, format: date-time}
                id: {type: string, format: uuid}
      responses: {"201": {description: created}}
"""

OPENAPI_31 = """\
openapi: 3.1.0
info: {title: t, version: "1"}
paths:
  /things:
    post:
      requestBody:
        required: true
        content:
          application/vnd.things+json:
            schema:
              type: object
              properties:
                maybe: {type: [string, "null"]}
                never: {type: string}
                choice: {enum: [a, b, null]}
                above: {type: number, exclusiveMinimum: 5}
                pair: {type: array, prefixItems: [{type: string}, {type: integer}]}
                kind: {const: thing}
      responses: {"201": {description: created}}
"""


@pytest.mark.parametrize(
    ("text", "media"),
    [(OPENAPI_30, "application/json"), (OPENAPI_31, "application/vnd.things+json")],
    ids=["3.0", "3.1"],
)
def test_both_dialects_mean_the_same(tmp_path: Path, text: str, media: str) -> None:
    document(tmp_path, text)
    upstream = OrdersUpstream()
    config = {
        "services": {"s": {"targets": [upstream.url], "openapi": "api.yaml"}},
        "routes": [route("r", "/{rest:path}", service="s", policies=[{"type": "validation"}])],
    }
    try:
        with running_gateway(tmp_path, config) as gateway, gateway.client() as http:

            def post(body: dict[str, Any]) -> tuple[int, list[str]]:
                response = http.post(
                    "/things", content=json.dumps(body), headers={"content-type": media}
                )
                if response.status_code != 400:
                    return response.status_code, []
                return 400, sorted(e["pointer"] for e in response.json()["errors"])

            assert post({"maybe": None, "choice": None, "above": 5.5})[0] == 404  # upstream's
            assert post({"never": None}) == (400, ["/never"])
            assert post({"above": 5}) == (400, ["/above"])
            assert post({"choice": "c"}) == (400, ["/choice"])
            if text is OPENAPI_30:
                assert post({"when": "yesterday", "id": "x"}) == (400, ["/id", "/when"])
            else:
                assert post({"pair": ["a", "b"], "kind": "other"}) == (400, ["/kind", "/pair/1"])
    finally:
        upstream.close()


def test_the_document_may_be_json(tmp_path: Path) -> None:
    data = yaml.safe_load(OPENAPI_31)
    (tmp_path / "api.json").write_text(json.dumps(data), encoding="utf-8")
    assert load_config(config_with(tmp_path, "api.json", [{"type": "validation"}]))


STYLES = """\
openapi: 3.1.0
info: {title: t, version: "1"}
paths:
  /items:
    parameters:
      - $ref: "#/components/parameters/Page"
    get:
      parameters:
        - name: filter
          in: query
          style: deepObject
          schema:
            type: object
            additionalProperties: false
            properties: {size: {type: integer, maximum: 10}, color: {enum: [red, blue]}}
        - name: words
          in: query
          style: spaceDelimited
          explode: false
          schema: {type: array, items: {type: string, maxLength: 3}}
        - name: point
          in: query
          explode: false
          schema: {type: object, properties: {x: {type: integer}, y: {type: integer}}}
        - name: where
          in: query
          content: {application/json: {schema: {type: object, required: [near]}}}
        - name: X-Flags
          in: header
          schema: {type: array, items: {type: boolean}}
      responses: {"200": {description: ok}}
    post:
      requestBody:
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Item"}
      responses:
        "201":
          description: created
          content: {application/json: {schema: {$ref: "#/components/schemas/Item"}}}
components:
  parameters:
    Page: {name: page, in: query, schema: {type: integer, minimum: 1}}
  schemas:
    Item:
      type: object
      required: [id, name, secret]
      properties:
        id: {type: integer, readOnly: true}
        name: {type: string}
        secret: {$ref: "#/components/schemas/Secret"}
    Secret: {type: string, writeOnly: true}
"""


def test_parameter_styles_refs_and_read_only_properties(tmp_path: Path) -> None:
    document(tmp_path, STYLES)
    upstream = OrdersUpstream()
    config = {
        "services": {"s": {"targets": [upstream.url], "openapi": "api.yaml"}},
        "routes": [route("r", "/{rest:path}", service="s", policies=[{"type": "validation"}])],
    }

    try:
        with running_gateway(tmp_path, config) as gateway, gateway.client() as http:

            def get(query: str, **headers: str) -> list[str]:
                response = http.get("/items?" + query, headers=headers)
                if response.status_code != 400:
                    return []
                return sorted(e["pointer"] for e in response.json()["errors"])

            fine = "page=2&filter[size]=3&filter[color]=red&words=a%20bc&point=x,1,y,2"
            assert get(fine + '&where={"near":1}', **{"X-Flags": "true, false"}) == []
            assert get("page=0") == ["/query/page"]
            assert get("filter[size]=30&filter[shape]=round") == [
                "/query/filter",
                "/query/filter/size",
            ]
            assert get("filter[size]=1&filter[size]=2") == ["/query/filter/size"]
            assert get("words=a%20long") == ["/query/words/1"]
            assert get("point=x,1,y,b") == ["/query/point/y"]
            assert get("where={}") == ["/query/where"]
            assert get("where=nope") == ["/query/where"]
            assert get("", **{"X-Flags": "true, maybe"}) == ["/header/x-flags/1"]

            # id is readOnly: not required of a request; secret is required of it.
            created = http.post("/items", json={"name": "n", "secret": "s"})
            assert created.status_code == 404  # the upstream's: it has no /items
            missing = http.post("/items", json={"name": "n"})
            assert [e["pointer"] for e in missing.json()["errors"]] == [""]
    finally:
        upstream.close()


def test_portico_and_openapi_spec_validator_agree_on_the_documents_here(tmp_path: Path) -> None:
    # portico check reads documents against the OpenAPI meta-schemas with jsonschema-rs; the
    # reference validator of the ecosystem must agree on what is valid.
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

    from portico.policies.validation.compiler import compile_document
    from portico.policies.validation.document import DocumentError, load_document

    root = HERE.parents[2]
    valid = [
        HERE / "orders.yaml",
        root / "src" / "portico" / "demo" / "orders-v2.openapi.yaml",
        document(tmp_path, OPENAPI_30, "a.yaml"),
        document(tmp_path, OPENAPI_31, "b.yaml"),
        document(tmp_path, STYLES, "c.yaml"),
    ]
    for path in valid:
        validate(yaml.safe_load(path.read_text()))
        compile_document(load_document(path))
    broken = document(
        tmp_path, "openapi: 3.0.3\n" + HEAD + "paths: {/a: {get: {parameters: [{in: query}]}}}\n"
    )
    with pytest.raises(OpenAPIValidationError):
        validate(yaml.safe_load(broken.read_text()))
    with pytest.raises(DocumentError):
        load_document(broken)


def test_a_response_is_found_by_status_then_range_then_default(tmp_path: Path) -> None:
    from portico.policies.validation.compiler import compile_document
    from portico.policies.validation.document import load_document

    path = document(
        tmp_path,
        "openapi: 3.1.0\n" + HEAD + "paths:\n  /a:\n    get:\n      responses:\n"
        "        '200': {description: a}\n        2XX: {description: b}\n"
        "        default: {description: c}\n",
    )
    table = compile_document(load_document(path))
    found = table.find("/a")
    assert found is not None
    operation = found[0].operations["GET"]
    responses = operation.responses
    assert operation.response(200) is responses["200"]
    assert operation.response(204) is responses["2XX"]
    assert operation.response(503) is responses["default"]
