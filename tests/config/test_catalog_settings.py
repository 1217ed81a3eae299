"""The catalog settings of a service as ``portico check`` reads them: what is accepted, what is
refused at its file line and field, what is only warned of; and ``lifecycle_changes``, what a
reload writes to the audit log."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.support.gateway import run_portico

from portico.assembly import load_config_text
from portico.config.catalog import Lifecycle, visible_to
from portico.config.errors import ConfigError
from portico.config.lifecycle import lifecycle_changes
from portico.config.model import PorticoConfig


def config_text(service: str, other: str = "") -> str:
    return (
        "services:\n"
        "  orders:\n"
        "    targets: ['http://127.0.0.1:9']\n"
        f"{service}"
        f"{other}"
        "routes:\n"
        "  - {name: orders, match: {path: /orders}, service: orders}\n"
    )


def test_every_setting_is_read_with_its_defaults() -> None:
    plain = load_config_text(config_text(""), "portico.yaml").services["orders"]
    assert (plain.api, plain.version, plain.owner, plain.tags) == (None, None, None, ())
    assert plain.lifecycle == Lifecycle(state="stable")
    assert plain.audience == "internal"  # nobody outside sees a service unless told

    full = load_config_text(
        config_text(
            "    api: orders\n"
            "    version: 2\n"
            "    owner: team-orders\n"
            "    description: Orders.\n"
            "    tags: [orders, commerce]\n"
            "    audience: partner\n"
            "    lifecycle: {state: deprecated, since: 2026-01-01, sunset: "
            "'2030-06-30T00:00:00+02:00', link: /migrate}\n"
        ),
        "portico.yaml",
    ).services["orders"]
    assert full.version == "2"
    assert full.lifecycle.since == datetime(2026, 1, 1, tzinfo=UTC)
    assert full.lifecycle.sunset is not None and full.lifecycle.sunset.utcoffset() is not None
    assert full.lifecycle.summary() == {
        "state": "deprecated",
        "since": "2026-01-01T00:00:00Z",
        "sunset": "2030-06-30T00:00:00+02:00",
        "link": "/migrate",
    }


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        ("    lifecycle: deprecated\n", "lifecycle", "a deprecated service needs since"),
        ("    lifecycle: sunsetting\n", "lifecycle", "'design', 'beta', 'stable'"),
        (
            "    lifecycle: {state: stable, sunset: 2030-01-01}\n",
            "lifecycle",
            "go with state deprecated or retired",
        ),
        (
            "    lifecycle: {state: deprecated, since: 2026-06-01, sunset: 2026-01-01}\n",
            "lifecycle",
            "is before the deprecation",
        ),
        (
            "    lifecycle: {state: deprecated, since: '2026-01-01T10:00:00'}\n",
            "lifecycle.since",
            "give the time zone offset",
        ),
        (
            "    lifecycle: {state: retired, link: 'docs/v2'}\n",
            "lifecycle.link",
            "is not a link",
        ),
        ("    audience: everyone\n", "audience", "'public', 'partner' or 'internal'"),
        ("    tags: ['two words']\n", "tags[0]", "should match pattern"),
        ("    version: 1.10\n", "version", "write the version in quotes"),
        ("    owner: ''\n", "owner", "at least 1 character"),
        ("    api: 'orders api'\n", "api", "a name may only contain"),
    ],
)
def test_invalid_settings_are_refused_at_their_line_and_field(
    settings: str, field: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(config_text(settings), "portico.yaml")
    text = str(caught.value)
    assert "portico.yaml:4:" in text, text
    assert f"services.orders.{field}" in text, text
    assert message in text, text


def test_two_services_cannot_be_the_same_version_of_one_api() -> None:
    other = (
        "  orders-again:\n    targets: ['http://127.0.0.1:9']\n    api: orders\n    version: '1'\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(config_text("    version: '1'\n", other), "portico.yaml")
    text = str(caught.value)
    assert "portico.yaml:8:" in text and "services.orders-again.version" in text, text
    assert "service 'orders' is already version '1' of API 'orders'" in text, text


def test_check_warns_that_the_routes_of_a_service_in_design_are_not_served(
    tmp_path: Path,
) -> None:
    path = tmp_path / "portico.yaml"
    path.write_text(config_text("    lifecycle: design\n"), encoding="utf-8")
    done = run_portico("check", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "services.orders.lifecycle" in done.stderr
    assert "its routes (orders) are not served (404 route-not-found)" in done.stderr
    assert "1 warning(s)" in done.stdout


def test_audiences_nest_public_in_partner_in_internal() -> None:
    assert visible_to("public", "public") and visible_to("public", "internal")
    assert visible_to("partner", "partner") and not visible_to("partner", "public")
    assert not visible_to("internal", "partner") and visible_to("internal", "internal")


def _with(**lifecycles: object) -> PorticoConfig:
    return PorticoConfig.model_validate(
        {
            "services": {
                name: {"targets": ["http://127.0.0.1:9"], "lifecycle": lifecycle}
                for name, lifecycle in lifecycles.items()
            }
        }
    )


def test_lifecycle_changes_are_each_service_whose_lifecycle_differs() -> None:
    old = _with(a="stable", b="beta", c="stable", gone="stable")
    new = _with(
        a={"state": "deprecated", "since": "2026-01-01"},
        b="beta",
        c="stable",
        added={"state": "retired"},
    )
    changes = lifecycle_changes(old, new)
    assert [c.service for c in changes] == ["a"]
    change = changes[0]
    assert change.before == {"state": "stable"}
    assert change.after == {"state": "deprecated", "since": "2026-01-01T00:00:00Z"}
    assert change.detail == {"from": "stable", "to": "deprecated"}

    later = _with(
        a={"state": "deprecated", "since": "2026-01-01", "sunset": "2027-01-01"},
        b="beta",
        c="stable",
    )
    moved = lifecycle_changes(new, later)
    assert [(c.service, c.detail) for c in moved] == [
        ("a", {"from": "deprecated", "to": "deprecated"})
    ]
    assert moved[0].after["sunset"] == "2027-01-01T00:00:00Z"
    assert lifecycle_changes(later, later) == []
