"""The admin API's OpenAPI 3.1 document is valid and complete, its interactive docs load
everything from Portico itself (no CDN), and schemathesis, a real client of the document, finds
no server error and no answer that breaks it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from openapi_spec_validator import validate
from tests.admin.conftest import Admin

SCHEMATHESIS_SETTINGS = """\
[checks.negative_data_rejection]
expected-statuses = ["400", "404", "405", "409", "413"]

# Lists take an opaque cursor (only one this API gave is good), and a key names a consumer of
# the running config: values the document cannot enumerate, refused with 400 when they are not
# real, though their type is right.
[[operations]]
include-path-regex = "/(api-keys|audit-log|services|routes|tenants|consumers|oauth-clients)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]

# The catalog's list takes the same cursor.
[[operations]]
include-path-regex = "/catalog$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403"]

# A purge names a route of the running config and paths: values the document cannot
# enumerate, refused with 400 (validation-failed, pointing at /route or /keys/N).
[[operations]]
include-path-regex = "/cache/purge$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403"]

# Events and webhooks: a type of the catalog, a consumer of the config, a URL the SSRF rules
# take, since/until that are moments in order, a delivery that is dead: values the document
# cannot enumerate, refused with 400, 404, 409 (a delivery not dead, an endpoint of the file)
# or 422 (`event-type-unknown`, `payload-invalid`, `endpoint-refused`).
[[operations]]
include-path-regex = "/(events|event-types|webhook-endpoints|webhook-deliveries)"
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "400", "401", "403", "404", "409", "422",
]

# An If-Match that names no current version is well-formed, and refused with 412: the point.
[[operations]]
include-path-regex = "/(rotate|revoke)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "412"]

# An edit's body is an entity of portico.yaml, which the document describes as an object: what
# does not pass the config's checks is 400; file mode, a locked entity or one others depend on
# is 409; an If-Match of another version is 412.
[[operations]]
include-path-regex = "/oauth-client$"
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "400", "401", "403", "404", "409", "412",
]

[[operations]]
include-method-regex = "^(PUT|DELETE)$"
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "400", "401", "403", "404", "409", "412",
]
"""


def test_the_document_is_valid_openapi_3_1_with_problem_answers(admin: Admin) -> None:
    with admin.client(token=None) as http:
        response = http.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    assert document["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"
    for path, operations in document["paths"].items():
        assert path.startswith("/admin/v1/")
        for method, operation in operations.items():
            responses = operation["responses"]
            # Never FastAPI's 422: only the problems of the webhooks contract (docs/errors.md).
            if "422" in responses:
                assert path.startswith(("/admin/v1/events", "/admin/v1/webhook-")), path
            for status in ("400", "401", "403", "500") + (("422",) if "422" in responses else ()):
                content = responses[status]["content"]
                assert list(content) == ["application/problem+json"], f"{method} {path} {status}"
    assert "HTTPValidationError" not in document["components"]["schemas"]
    created = document["paths"]["/admin/v1/api-keys"]["post"]["responses"]["201"]
    assert set(created["links"]) == {"GetApiKey", "RotateApiKey", "RevokeApiKey"}
    created = document["paths"]["/admin/v1/webhook-endpoints"]["post"]["responses"]["201"]
    assert set(created["links"]) == {
        "GetWebhookEndpoint",
        "ChangeWebhookEndpoint",
        "DisableWebhookEndpoint",
        "EnableWebhookEndpoint",
        "RotateWebhookSecret",
        "DeleteWebhookEndpoint",
    }
    for path in ("services/{name}", "routes/{name}", "tenants/{tenant}/consumers/{name}"):
        put = document["paths"][f"/admin/v1/{path}"]["put"]
        for status in ("200", "201"):
            assert set(put["responses"][status]["links"]) == {"Get", "Replace", "Delete"}, path
        for method in ("put", "delete"):
            operation = document["paths"][f"/admin/v1/{path}"][method]
            assert {"409", "412"} <= set(operation["responses"]), (method, path)


def test_the_interactive_docs_load_everything_from_portico(admin: Admin) -> None:
    with admin.client(token=None) as http:
        page = http.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        html = page.text
        urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", html)
        assert urls, html
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}", html, re.IGNORECASE), html
        for url in urls:
            assert url.startswith("/admin/v1/"), url
            loaded = http.get(url.removeprefix("/admin/v1"))
            assert loaded.status_code == 200, url
            assert len(loaded.content) > 0
        assert "validatorUrl" in html and "null" in html  # no badge from validator.swagger.io
        assert http.get("/docs/assets/../openapi.json").status_code in (200, 404)
        missing = http.get("/docs/assets/secrets.txt")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("source", ["file", "store"])
def test_schemathesis_finds_no_server_error_and_no_answer_that_breaks_the_document(
    source: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # entities.source: file refuses every edit; store makes them, and the stateful phase
    # follows the links from a PUT to reading, replacing and deleting what it made.
    admin: Admin = request.getfixturevalue("admin" if source == "file" else "store_admin")
    settings = tmp_path / "schemathesis.toml"
    settings.write_text(SCHEMATHESIS_SETTINGS, encoding="utf-8")
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file",
            str(settings),
            "run",
            f"{admin.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {admin.tokens['admin']}",
            "--checks",
            "all",
            "--max-examples",
            "10",
            "--seed",
            "20261203",
            "--generation-database",
            "none",
            "--workers",
            "1",
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout
    assert result.returncode == 0, output[-6000:] + result.stderr[-2000:]
    assert "✅ Stateful" in output, output[-3000:]
    assert re.search(r"\d+ generated, \d+ passed", output), output[-3000:]
    assert admin.tokens["admin"] not in output
