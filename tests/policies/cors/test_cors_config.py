"""What ``portico check`` refuses in a ``cors`` entry, at file:line:field: a wildcard with
credentials, and origins that are not origins (``null``, a path or trailing slash, a wildcard
anywhere but the first label, a whole top-level domain)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.support.gateway import run_portico

from portico.assembly import load_config_text
from portico.config.errors import ConfigError
from portico.policies.cors.settings import normal_origin


def config_text(entry: str) -> str:
    return (
        "services:\n"
        "  main: {targets: ['http://127.0.0.1:9']}\n"
        "routes:\n"
        "  - name: app\n"
        "    match: {path: /app}\n"
        "    service: main\n"
        "    policies:\n"
        f"      - {entry}\n"
    )


def test_check_refuses_credentials_with_any_origin(tmp_path: Path) -> None:
    path = tmp_path / "portico.yaml"
    path.write_text(config_text("{type: cors, origins: ['*'], credentials: true}"))

    checked = run_portico("check", str(path), cwd=tmp_path)

    assert checked.returncode == 1, checked.stdout
    assert f"{path}:8:" in checked.stderr
    assert "routes[0].policies[0].credentials" in checked.stderr
    assert "credentials: true cannot be used with origins: ['*']" in checked.stderr


@pytest.mark.parametrize(
    ("entry", "field", "message"),
    [
        ("{type: cors, origins: ['null']}", "origins", "'null' is the origin of sandboxed"),
        ("{type: cors, origins: ['https://a.example/']}", "origins", "without a path"),
        ("{type: cors, origins: ['https://a.example/app']}", "origins", "without a path"),
        ("{type: cors, origins: ['a.example']}", "origins", "write scheme://host[:port]"),
        ("{type: cors, origins: ['https://*.com']}", "origins", "every site under a top-level"),
        ("{type: cors, origins: ['https://a.*.example']}", "origins", "only have '*.' at the"),
        ("{type: cors, origins: ['https://*example.com']}", "origins", "only have '*.' at the"),
        ("{type: cors, origins: ['https://a.example:99999']}", "origins", "invalid port"),
        ("{type: cors, origins: ['https://u@a.example']}", "origins", "user information"),
        ("{type: cors, origins: ['*', 'https://a.example']}", "origins", "list no other"),
        ("{type: cors, origins: []}", "origins", "at least 1 item"),
        ("{type: cors, origins: ['*'], methods: [FETCH]}", "methods", "unknown method 'FETCH'"),
        ("{type: cors, origins: ['*'], headers: ['x y']}", "headers", "not a header field"),
        (
            "{type: cors, origins: ['https://a.example'], credentials: true, "
            "expose_headers: ['*']}",
            "credentials",
            "list the fields",
        ),
        ("{type: cors, origins: ['*'], max_age: 90000}", "max_age", "less than or equal"),
        ("{type: cors, origins: ['*'], origin: x}", "origin", "did you mean 'origins'"),
    ],
)
def test_invalid_settings_are_refused_at_their_field(entry: str, field: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(config_text(entry), "portico.yaml")

    text = str(caught.value)
    assert "portico.yaml:8:" in text, text
    assert f"routes[0].policies[0].{field}" in text, text
    assert message in text, text


@pytest.mark.parametrize(
    ("written", "sent"),
    [
        ("HTTPS://App.Example.COM", "https://app.example.com"),
        ("https://app.example.com:443", "https://app.example.com"),
        ("http://app.example.com:80", "http://app.example.com"),
        ("http://localhost:03000", "http://localhost:3000"),
        ("https://*.Example.com", "https://*.example.com"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_origins_are_written_as_a_browser_sends_them(written: str, sent: str) -> None:
    assert normal_origin(written) == sent


def test_a_valid_entry_is_accepted() -> None:
    entry = yaml.safe_dump(
        {
            "type": "cors",
            "origins": ["https://app.example.com", "https://*.partner.example"],
            "methods": ["GET", "PUT"],
            "headers": ["Content-Type"],
            "expose_headers": ["ETag"],
            "credentials": True,
            "max_age": 600,
        },
        default_flow_style=True,
        width=1000,
    ).strip()
    load_config_text(config_text(entry), "portico.yaml")
