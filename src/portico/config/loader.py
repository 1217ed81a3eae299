"""Loading ``portico.yaml``: YAML with a line for every value, ``${VAR}`` interpolation, validation.

The steps, one module each:

- :mod:`portico.config.document` composes the file into PyYAML's node tree (every node keeps its
  position) and turns it into plain data while remembering the node behind each value;
  :mod:`portico.config.interpolation` resolves ``${VAR}`` in its strings on the way;
- :class:`PorticoConfig` validates the data;
- :mod:`portico.config.pruning` runs the checks that span sections (a route naming an unknown
  service, the capabilities' :class:`~portico.config.checks.Checks`), also on the rest of the
  file when some entries are invalid;
- :mod:`portico.config.reporting` points every error at the file, line and field it concerns.

Every problem found on the way is reported at once, in file order, as a
:class:`~portico.config.errors.ConfigIssue` of one :class:`~portico.config.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from portico.config.checks import NO_CHECKS, Checks
from portico.config.document import DocumentReader
from portico.config.errors import ConfigError, ConfigIssue
from portico.config.model import CONFIG_DIR, PorticoConfig
from portico.config.pruning import cross_section_findings
from portico.config.reporting import semantic_issue, validation_issue, without_consequences

__all__ = ["CheckedConfig", "check_config", "load_config", "load_config_text"]


@dataclass(frozen=True, slots=True)
class CheckedConfig:
    """A valid config and what its checks warn of (:attr:`Checks.warnings`), in file order."""

    config: PorticoConfig
    warnings: tuple[ConfigIssue, ...] = ()


def load_config(
    path: str | Path, env: Mapping[str, str] | None = None, checks: Checks = NO_CHECKS
) -> PorticoConfig:
    """Read, interpolate and validate a config file; raise :class:`ConfigError` listing every issue.

    ``env`` supplies the ``${VAR}`` values and defaults to ``os.environ``; ``checks`` are the
    capabilities' own (the composition root's :func:`portico.assembly.load_config` gives them all).
    """
    return check_config(path, env, checks).config


def check_config(
    path: str | Path, env: Mapping[str, str] | None = None, checks: Checks = NO_CHECKS
) -> CheckedConfig:
    """:func:`load_config`, with the warnings of ``checks`` located in the file."""
    filename = os.fspath(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise _file_error(filename, "file not found") from None
    except IsADirectoryError:
        raise _file_error(filename, "is a directory, not a file") from None
    except PermissionError:
        raise _file_error(filename, "permission denied") from None
    except OSError as exc:
        raise _file_error(filename, f"cannot be read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        issue = ConfigIssue(filename, line, column, "", "the file is not valid UTF-8 text")
        raise ConfigError([issue]) from None
    return _check_text(text, filename, env, checks)


def load_config_text(
    text: str, filename: str, env: Mapping[str, str] | None = None, checks: Checks = NO_CHECKS
) -> PorticoConfig:
    """Like :func:`load_config`, for text already read; issues name ``filename``."""
    return _check_text(text, filename, env, checks).config


def _check_text(
    text: str, filename: str, env: Mapping[str, str] | None, checks: Checks
) -> CheckedConfig:
    reader = DocumentReader(filename, os.environ if env is None else env)
    document = reader.read(text)
    issues = reader.issues
    if document is None:
        raise ConfigError(_in_file_order(issues))
    data, root = document

    config: PorticoConfig | None = None
    errors: list[ErrorDetails] = []
    # File references in the config are relative to the file's own directory.
    context = {CONFIG_DIR: Path(filename).parent}
    try:
        config = PorticoConfig.model_validate(data, context=context)
    except ValidationError as exc:
        # Inputs are left out, and ConfigError is raised outside this block so the ValidationError
        # (whose text shows inputs) is not chained to it: an interpolated value may be a secret.
        errors = exc.errors(include_url=False, include_input=False)
    for error in without_consequences(errors):
        issue = validation_issue(filename, root, error)
        if issue is not None:
            issues.append(issue)
    for loc, message in cross_section_findings(config, data, errors, checks, context):
        issue = semantic_issue(filename, root, data, checks, loc, message)
        if issue is not None:
            issues.append(issue)

    if issues:
        raise ConfigError(_in_file_order(issues))
    assert config is not None
    warnings = [
        dataclasses.replace(issue, warning=True)
        for loc, message in checks.warning_findings(config)
        if (issue := semantic_issue(filename, root, data, checks, loc, message)) is not None
    ]
    return CheckedConfig(config, tuple(_in_file_order(warnings)))


def _file_error(filename: str, message: str) -> ConfigError:
    return ConfigError([ConfigIssue(filename, None, None, "", message)])


def _in_file_order(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    # A merged (<<) mapping is read once per use, so the same issue can be found twice.
    unique = list(dict.fromkeys(issues))
    return sorted(unique, key=lambda i: (i.line is not None, i.line or 0, i.column or 0))
