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
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from portico.config.checks import NO_CHECKS, Checks
from portico.config.document import DocumentReader, Located, issue_at
from portico.config.entities import ENTITY_SECTIONS, as_written
from portico.config.errors import ConfigError, ConfigIssue
from portico.config.model import CONFIG_DIR, PorticoConfig
from portico.config.pruning import cross_section_findings
from portico.config.reporting import semantic_issue, validation_issue, without_consequences
from portico.config.secrets import literal_secrets

__all__ = ["CheckedConfig", "StoredEntities", "check_config", "load_config", "load_config_text"]

REFERENCE_NEEDED = (
    "with entities.source: store a secret is written as a ${VAR} reference, never as its value "
    "(the store would hold it): set it in the environment of every gateway process and write "
    "${NAME} here (docs/sync.md#secrets)"
)


@dataclass(frozen=True, slots=True)
class StoredEntities:
    """The entity sections to serve instead of the file's (``entities.source: store``), as
    written (``${VAR}`` kept); issues in them name ``label``, such as ``store revision 7``."""

    document: Mapping[str, Any]
    label: str


@dataclass(frozen=True, slots=True)
class CheckedConfig:
    """A valid config and what its checks warn of (:attr:`Checks.warnings`), in file order."""

    config: PorticoConfig
    warnings: tuple[ConfigIssue, ...] = ()
    document: Mapping[str, Any] = field(default_factory=dict)
    """The file as written (before interpolation), every section: what ``apply`` stores of it
    and ``export`` writes back."""


def load_config(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    checks: Checks = NO_CHECKS,
    entities: StoredEntities | None = None,
) -> PorticoConfig:
    """Read, interpolate and validate a config file; raise :class:`ConfigError` listing every issue.

    ``env`` supplies the ``${VAR}`` values and defaults to ``os.environ``; ``checks`` are the
    capabilities' own (the composition root's :func:`portico.assembly.load_config` gives them all);
    ``entities``, when given, replace the file's entity sections.
    """
    return check_config(path, env, checks, entities).config


def check_config(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    checks: Checks = NO_CHECKS,
    entities: StoredEntities | None = None,
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
    return check_config_text(text, filename, env, checks, entities)


def load_config_text(
    text: str,
    filename: str,
    env: Mapping[str, str] | None = None,
    checks: Checks = NO_CHECKS,
    entities: StoredEntities | None = None,
) -> PorticoConfig:
    """Like :func:`load_config`, for text already read; issues name ``filename``."""
    return check_config_text(text, filename, env, checks, entities).config


def check_config_text(
    text: str,
    filename: str,
    env: Mapping[str, str] | None = None,
    checks: Checks = NO_CHECKS,
    entities: StoredEntities | None = None,
) -> CheckedConfig:
    """:func:`check_config` of text already read."""
    env = os.environ if env is None else env
    reader = DocumentReader(filename, env)
    document = reader.read(text)
    issues = reader.issues
    if document is None:
        raise ConfigError(_in_file_order(issues))
    data, root = document
    written = as_written(data, root)
    if entities is not None:
        _use_stored(data, root, entities, env, issues)
    if isinstance(data, dict) and _store_mode(data):
        for section in ENTITY_SECTIONS:
            for located, where in literal_secrets(root.children.get(section, Located(None))):
                mark = located.node.start_mark if located.node is not None else None
                issues.append(issue_at(filename, mark, join(section, where), REFERENCE_NEEDED))
                located.reported = True

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

    label = None if entities is None else entities.label
    issues = [_named(issue, filename, label) for issue in issues]
    if issues:
        raise ConfigError(_in_file_order(issues))
    assert config is not None
    warnings = [
        dataclasses.replace(_named(issue, filename, label), warning=True)
        for loc, message in checks.warning_findings(config)
        if (issue := semantic_issue(filename, root, data, checks, loc, message)) is not None
    ]
    return CheckedConfig(config, tuple(_in_file_order(warnings)), written)


def _store_mode(data: dict[Any, Any]) -> bool:
    section = data.get("entities")
    return isinstance(section, dict) and section.get("source") == "store"


def _use_stored(
    data: Any,
    root: Located,
    entities: StoredEntities,
    env: Mapping[str, str],
    issues: list[ConfigIssue],
) -> None:
    """Put the stored entity sections in place of the file's, read (and interpolated) as the
    file is, so that every check runs on them the same way."""
    if not isinstance(data, dict):
        return
    reader = DocumentReader(entities.label, env)
    text = json.dumps(dict(entities.document), indent=1)
    stored = reader.read(text)
    issues.extend(dataclasses.replace(i, line=None, column=None) for i in reader.issues)
    for section in ENTITY_SECTIONS:
        data.pop(section, None)
        root.children.pop(section, None)
    if stored is None or not isinstance(stored[0], dict):
        return
    stored_data, stored_root = stored
    for section in ENTITY_SECTIONS:
        if section in stored_data:
            data[section] = stored_data[section]
            root.children[section] = stored_root.children[section]


def _named(issue: ConfigIssue, filename: str, label: str | None) -> ConfigIssue:
    """An issue in a stored entity section names the revision, not a line of the file."""
    if label is None or issue.file != filename:
        return issue
    top = issue.path.split(".", 1)[0].split("[", 1)[0]
    if top not in ENTITY_SECTIONS:
        return issue
    return dataclasses.replace(issue, file=label, line=None, column=None)


def join(section: str, path: str) -> str:
    if not path:
        return section
    return f"{section}{path}" if path.startswith("[") else f"{section}.{path}"


def _file_error(filename: str, message: str) -> ConfigError:
    return ConfigError([ConfigIssue(filename, None, None, "", message)])


def _in_file_order(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    # A merged (<<) mapping is read once per use, so the same issue can be found twice.
    unique = list(dict.fromkeys(issues))
    return sorted(unique, key=lambda i: (i.line is not None, i.line or 0, i.column or 0))
