"""The ``events`` section as ``portico check`` reads it: every mistake at its file line and
field, in one run, with no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.events.harness import TENANTS, TYPES

from portico.cli import main
from portico.events.signing import generate_secret

SECRET = generate_secret()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def line_of(path: Path, text: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def test_check_names_each_mistake_of_the_events_section_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path / "portico.yaml",
        f"""
tenants:
  acme:
    consumers:
      billing: {{}}
events:
  types:
    order.created:
      description: An order was placed.
      schema: {{type: objekt}}
  endpoints:
    nobody:
      consumer: acme/ghost
      url: https://hooks.example.com/a
      secret: {SECRET}
    metadata:
      consumer: acme/billing
      url: https://169.254.169.254/latest
      secret: {SECRET}
    filtered:
      consumer: acme/billing
      url: https://hooks.example.com/b
      types: [order.created, order.unknown]
      filter: {{data.total: {{between: [1, 2]}}}}
      secret: not-a-secret
  inbound:
    github:
      path: /webhooks/v1/github
      scheme: github
      secrets: [s3cret]
      event_type: order.created
""",
    )
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    expected = {
        "schema: {type: objekt}": "not a usable JSON Schema",
        "consumer: acme/ghost": "no consumer 'acme/ghost' in tenants",
        "url: https://169.254.169.254/latest": "events.endpoints.metadata.url",
        "between": "unknown operator 'between'",
        "secret: not-a-secret": "events.endpoints.filtered.secret",
        "path: /webhooks/v1/github": "under events.api.path_prefix",
    }
    for text, message in expected.items():
        line = line_of(path, text)
        assert any(f":{line}:" in row and message in row for row in err.splitlines()), (
            text,
            err,
        )
    assert "no event type 'order.unknown' in events.types" in err


def test_an_event_type_name_is_lower_case_words_joined_by_dots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path / "portico.yaml",
        "events:\n  types:\n    Order-Bad:\n      description: not a name\n",
    )
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:3:5: events.types.Order-Bad: string should match pattern" in err


def test_a_correct_events_section_checks_clean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    config = {
        "tenants": TENANTS,
        "events": {
            "types": TYPES,
            "endpoints": {
                "crm": {
                    "consumer": "acme/crm",
                    "url": "https://hooks.example.com/crm",
                    "types": ["order.*"],
                    "filter": {"data.total": {"gte": 100}},
                    "ordering": {"key": "data.order_id"},
                    "secret": SECRET,
                }
            },
            "inbound": {
                "github": {
                    "path": "/inbound/github",
                    "scheme": "github",
                    "secrets": ["s3cret"],
                    "event_type": "order.shipped",
                }
            },
        },
    }
    path = tmp_path / "portico.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["check", str(path)]) == 0, capsys.readouterr().err
