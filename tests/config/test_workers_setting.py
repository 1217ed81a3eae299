"""``gateway.workers`` and ``serve --workers``: one function resolves how many gateway processes
run, for serving and for the checks that depend on it."""

from __future__ import annotations

import os

import pytest

from portico.assembly import load_config_text
from portico.config.errors import ConfigError
from portico.config.workers import cpu_count, parse_workers, worker_count

MINIMAL = """\
gateway:
  workers: {workers}
"""


def test_one_process_unless_told() -> None:
    config = load_config_text("{}\n", "portico.yaml")

    assert worker_count(config) == 1


def test_the_flag_overrides_the_config() -> None:
    config = load_config_text(MINIMAL.format(workers=4), "portico.yaml")

    assert worker_count(config) == 4
    assert worker_count(config, 2) == 2
    assert worker_count(config, "auto") == cpu_count()


def test_auto_is_one_per_core_this_process_may_use() -> None:
    config = load_config_text(MINIMAL.format(workers="auto"), "portico.yaml")

    assert worker_count(config) == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("value", ["0", "-1", "257", "many", "1.5", "true"])
def test_a_bad_workers_value_is_refused_at_its_line(value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config_text(MINIMAL.format(workers=value), "portico.yaml")

    assert str(refused.value).startswith("portico.yaml:2"), str(refused.value)
    assert "gateway.workers" in str(refused.value)


@pytest.mark.parametrize(
    ("text", "expected"), [("auto", "auto"), ("AUTO", "auto"), ("1", 1), ("256", 256)]
)
def test_the_flag_takes_a_number_or_auto(text: str, expected: object) -> None:
    assert parse_workers(text) == expected


@pytest.mark.parametrize("text", ["0", "257", "two", "", "-2"])
def test_the_flag_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="give 1 to 256, or auto"):
        parse_workers(text)
