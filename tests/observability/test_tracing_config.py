"""``portico check`` on the ``tracing`` section: each mistake at its file, line and field, and
a header's secret from the environment never printed."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.gateway import run_portico

VALID = """\
tracing:
  enabled: true
  endpoint: https://collector.example:4318
  headers:
    Authorization: "Bearer ${OTLP_TOKEN}"
  timeout: 5s
  compression: gzip
  sample_ratio: 0.25
  service_name: edge-gateway
  resource:
    deployment.environment.name: prod
  batch:
    max_queue_size: 4096
    max_export_batch_size: 256
    schedule_delay: 2s
  shutdown_timeout: 3s
"""


def check(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    path = tmp_path / "portico.yaml"
    path.write_text(text, encoding="utf-8")
    done = run_portico("check", str(path), cwd=tmp_path, env=env)
    return done.returncode, done.stdout + done.stderr


def test_a_complete_tracing_section_is_accepted(tmp_path: Path) -> None:
    status, output = check(tmp_path, VALID, {"OTLP_TOKEN": "t0ken-value"})

    assert status == 0, output
    assert "t0ken-value" not in output


@pytest.mark.parametrize(
    ("line", "replacement", "message"),
    [
        (3, "  endpoint: ftp://collector:4318", "tracing.endpoint: "),
        (3, "  endpoint: http://collector:4318/?x=1", "cannot have a query"),
        (2, "  enabled: yes please", "tracing.enabled: "),
        (6, "  timeout: soon", "tracing.timeout: expected a duration"),
        (7, "  compression: brotli", "tracing.compression: "),
        (8, "  sample_ratio: 1.5", "tracing.sample_ratio: "),
        (14, "    max_export_batch_size: 8192", "max_export_batch_size cannot be larger"),
        (15, "    schedule_delay: 0s", "schedule_delay must be longer than 0"),
    ],
)
def test_a_mistake_is_reported_at_its_line(
    tmp_path: Path, line: int, replacement: str, message: str
) -> None:
    lines = VALID.splitlines()
    lines[line - 1] = replacement
    status, output = check(tmp_path, "\n".join(lines) + "\n", {"OTLP_TOKEN": "x"})

    assert status == 1, output
    where = f"portico.yaml:{line}:"
    assert any(where in row and message in row for row in output.splitlines()), output
    assert "Traceback" not in output


def test_grpc_is_refused_with_the_protocol_served(tmp_path: Path) -> None:
    status, output = check(tmp_path, "tracing:\n  enabled: true\n  protocol: grpc\n")

    assert status == 1
    assert "portico.yaml:3:" in output and "http/protobuf" in output, output


def test_an_unset_token_is_named_and_not_guessed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTLP_TOKEN", raising=False)
    status, output = check(tmp_path, VALID)

    assert status == 1
    assert "portico.yaml:5:" in output and "OTLP_TOKEN" in output, output
