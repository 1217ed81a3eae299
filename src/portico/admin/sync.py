"""Declarative sync: the served entities as state revisions in the store, and what ``portico
diff``, ``apply`` and ``export`` do with them (docs/sync.md).

With ``entities.source: store`` the gateways serve the store's latest state revision (services,
routes, tenants and their consumers, as written: ``${VAR}`` kept), and the file's other sections.
A revision is written by:

- the first ``portico serve`` on an empty store (:func:`seed`, source ``seed``);
- ``portico apply`` (:func:`apply_file`, source ``apply``): the store made equal to the file;
- the admin API's writes (source ``admin``).

Each write is based on the latest revision and names it as its parent; a write based on one that
is no longer the latest is refused (:class:`~portico.store.repositories.StaleRevision`), so no
change overwrites another it did not see. Each comes with one audit entry, secrets redacted.

This module imports no web framework: ``portico apply`` and ``serve`` use it without FastAPI.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from portico.checking import check_config_to_serve
from portico.config.entities import (
    ENTITY_SECTIONS,
    document_sha256,
    entities_of,
)
from portico.config.loader import CheckedConfig, StoredEntities
from portico.config.secrets import has_reference, is_secret_key
from portico.core.errors import PorticoError
from portico.core.redaction import REDACTED, redact
from portico.store.database import Database
from portico.store.migrate import ensure_current
from portico.store.repositories import (
    AuditLog,
    Author,
    StaleRevision,
    StateRevision,
    StateRevisions,
    command_line_actor,
)

__all__ = [
    "Change",
    "EntityKey",
    "SyncRefused",
    "apply_file",
    "changes_between",
    "describe_changes",
    "export_text",
    "redact_entities",
    "seed",
    "stored_entities",
    "summary",
]

log = logging.getLogger("portico.sync")

EntityKey = tuple[str, str]
"""``(kind, name)``: ``("service", "orders")``, ``("route", "orders")``, ``("tenant",
"acme")``, ``("consumer", "acme/billing")``."""

_ORDER = {"service": 0, "route": 1, "tenant": 2, "consumer": 3}
_PLURAL = {"service": "services", "route": "routes", "tenant": "tenants", "consumer": "consumers"}


class SyncRefused(PorticoError):
    """``apply``, ``diff`` or ``export`` cannot do what was asked (one line says why)."""


# -- the entities of a document -----------------------------------------------------------------


def entities_in(document: Mapping[str, Any]) -> dict[EntityKey, Any]:
    """Every entity of a document by kind and name; a tenant without its consumers, which are
    entities of their own."""
    found: dict[EntityKey, Any] = {}
    services = document.get("services")
    if isinstance(services, Mapping):
        for name, spec in services.items():
            found[("service", str(name))] = spec
    routes = document.get("routes")
    if isinstance(routes, list):
        for index, spec in enumerate(routes):
            name = spec.get("name") if isinstance(spec, Mapping) else None
            found[("route", str(name) if name is not None else f"#{index}")] = spec
    tenants = document.get("tenants")
    if isinstance(tenants, Mapping):
        for tenant, spec in tenants.items():
            if not isinstance(spec, Mapping):
                found[("tenant", str(tenant))] = spec
                continue
            found[("tenant", str(tenant))] = {k: v for k, v in spec.items() if k != "consumers"}
            consumers = spec.get("consumers")
            if isinstance(consumers, Mapping):
                for name, consumer in consumers.items():
                    found[("consumer", f"{tenant}/{name}")] = consumer
    return found


# -- diff -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """One entity added, removed or changed; ``fields``: each changed field's path, old and new
    value (``None`` path items: the whole entity)."""

    kind: str
    name: str
    action: str
    """``added``, ``removed`` or ``changed``."""
    fields: tuple[tuple[str, Any, Any], ...] = ()

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"


_MISSING = object()


def changes_between(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """What makes ``old`` into ``new``, entity by entity, in a stable order."""
    before, after = entities_in(old), entities_in(new)
    changes: list[Change] = []
    for key in sorted(before.keys() | after.keys(), key=lambda k: (_ORDER[k[0]], k[1])):
        kind, name = key
        if key not in before:
            changes.append(Change(kind, name, "added"))
        elif key not in after:
            changes.append(Change(kind, name, "removed"))
        elif before[key] != after[key]:
            fields = tuple(_field_changes(before[key], after[key], "", None))
            changes.append(Change(kind, name, "changed", fields))
    return changes


def _field_changes(old: Any, new: Any, path: str, key: object) -> Iterator[tuple[str, Any, Any]]:
    if old == new:
        return
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for name in list(old) + [k for k in new if k not in old]:
            child = f"{path}.{name}" if path else str(name)
            yield from _field_changes(old.get(name, _MISSING), new.get(name, _MISSING), child, name)
        return
    if isinstance(old, list) and isinstance(new, list):
        for index in range(max(len(old), len(new))):
            yield from _field_changes(
                old[index] if index < len(old) else _MISSING,
                new[index] if index < len(new) else _MISSING,
                f"{path}[{index}]",
                key,
            )
        return
    yield path, _shown(old, key), _shown(new, key)


def _shown(value: Any, key: object) -> Any:
    if value is _MISSING:
        return _MISSING
    if isinstance(value, str) and is_secret_key(key) and not has_reference(value):
        return REDACTED
    return redact_entities(value)


def redact_entities(value: Any) -> Any:
    """``value`` with every secret replaced by ``[redacted]``, except a ``${VAR}`` reference:
    it names where the secret is, never what it is."""
    if isinstance(value, Mapping):
        return {
            key: (
                REDACTED
                if is_secret_key(key) and isinstance(item, str) and not has_reference(item)
                else redact(item)
                if is_secret_key(key) and not isinstance(item, str) and item is not None
                else redact_entities(item)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact_entities(item) for item in value]
    if isinstance(value, str) and not has_reference(value):
        return redact(value)
    return value


_COLOURS = {"added": "\033[32m", "removed": "\033[31m", "changed": "\033[33m"}
_SIGNS = {"added": "+", "removed": "-", "changed": "~"}
_RESET = "\033[0m"


def describe_changes(changes: list[Change], *, colour: bool) -> str:
    """The changes as people read them: one line per entity (``+``, ``-``, ``~``), and under a
    changed one each field's path, old value and new one; secrets redacted."""
    lines: list[str] = []
    for change in changes:
        head = f"{_SIGNS[change.action]} {change.label}"
        if colour:
            head = f"{_COLOURS[change.action]}{head}{_RESET}"
        lines.append(head)
        for path, old, new in change.fields:
            if old is _MISSING:
                text = f"    {path}: (added) {_value(new)}"
            elif new is _MISSING:
                text = f"    {path}: (removed) {_value(old)}"
            else:
                text = f"    {path}: {_value(old)} → {_value(new)}"
            lines.append(text)
    return "\n".join(lines)


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def summary(changes: list[Change]) -> dict[str, list[str]]:
    """What the audit log records of a change: the entities added, removed and changed."""
    out: dict[str, list[str]] = {"added": [], "removed": [], "changed": []}
    for change in changes:
        out[change.action].append(change.label)
    return out


def counted(changes: list[Change]) -> str:
    parts = []
    for action in ("added", "changed", "removed"):
        count = sum(1 for c in changes if c.action == action)
        if count:
            parts.append(f"{count} {action}")
    return ", ".join(parts) or "no change"


# -- the store -------------------------------------------------------------------------------------


def stored_entities(revision: StateRevision) -> StoredEntities:
    """A revision as the config loader takes it instead of the file's entity sections."""
    return StoredEntities(revision.document, f"store revision {revision.id}")


def seed(database: Database, checked: CheckedConfig, config_path: Path) -> StateRevision:
    """The latest revision; when the store holds none, the file's entity sections become the
    first (source ``seed``), with its audit entry. Two processes seeding at once: one writes,
    the other reads what it wrote."""
    revisions = StateRevisions(database)
    latest = revisions.latest()
    if latest is not None:
        return latest
    document = entities_of(checked.document)
    author = Author(command_line_actor())
    try:
        with database.write() as session:
            revision = StateRevisions(session).append(
                None, document, document_sha256(document), author, "seed"
            )
            AuditLog(session).record(
                author,
                "entities.seed",
                f"state revision {revision.id}",
                after=redact_entities(document),
                detail={"revision": revision.id, "file": str(config_path)},
            )
    except StaleRevision:
        found = revisions.latest()
        assert found is not None
        return found
    log.info(
        "entities.source is store and the store held no state: seeded revision %d from %s (%s)",
        revision.id,
        config_path,
        counted(changes_between(entities_of({}), document)),
    )
    return revision


def file_differs(checked: CheckedConfig, revision: StateRevision, config_path: Path) -> None:
    """One log line when the file's entity sections are not what the store serves."""
    changes = changes_between(revision.document, entities_of(checked.document))
    if changes:
        log.warning(
            "%s: its services, routes and tenants differ from the store's revision %d, which is "
            "served (entities.source: store; %s): `portico diff -c %s` shows how, `portico "
            "apply -c %s` makes the store equal to the file",
            config_path,
            revision.id,
            counted(changes),
            config_path,
            config_path,
        )


def _store_config(config_path: Path) -> tuple[CheckedConfig, Database]:
    """The file checked as ``portico check`` does, in store mode, and its store (migrated)."""
    checked = check_config_to_serve(config_path)
    config = checked.config
    if config.entities.source != "store":
        raise SyncRefused(
            f"{config_path}: entities.source is file, so the file is the state and there is no "
            "store state to compare or apply to: set `entities: {source: store}` to keep the "
            "entities in the store (docs/sync.md)"
        )
    url = config.database.url
    ensure_current(url)
    return checked, Database(url)


@dataclass(frozen=True, slots=True)
class Applied:
    changes: list[Change]
    revision: StateRevision | None
    """The revision written (``None``: no change, nothing written)."""
    parent: int | None


def diff_file(config_path: Path) -> tuple[list[Change], StateRevision | None]:
    """What ``apply`` would change in the store, and the revision it compares with."""
    checked, database = _store_config(config_path)
    with database:
        latest = StateRevisions(database).latest()
    current = latest.document if latest is not None else entities_of({})
    return changes_between(current, entities_of(checked.document)), latest


def apply_file(config_path: Path, author: Author | None = None) -> Applied:
    """Make the store's state the file's entity sections: one revision and one audit entry, in
    one transaction; nothing when they are equal already."""
    checked, database = _store_config(config_path)
    author = author or Author(command_line_actor())
    document = entities_of(checked.document)
    with database:
        latest = StateRevisions(database).latest()
        current = latest.document if latest is not None else entities_of({})
        changes = changes_between(current, document)
        parent = None if latest is None else latest.id
        if latest is not None and not changes:
            return Applied([], None, parent)
        try:
            with database.write() as session:
                revision = StateRevisions(session).append(
                    parent, document, document_sha256(document), author, "apply"
                )
                AuditLog(session).record(
                    author,
                    "entities.apply",
                    f"state revision {revision.id}",
                    before=None if latest is None else redact_entities(current),
                    after=redact_entities(document),
                    detail={
                        "revision": revision.id,
                        "parent": parent,
                        "file": str(config_path),
                        "changes": summary(changes),
                    },
                )
        except StaleRevision as exc:
            raise SyncRefused(
                f"the store changed while applying ({exc}): nothing was written; run `portico "
                f"diff -c {config_path}` to see it, then apply again"
            ) from None
    return Applied(changes, revision, parent)


def export_text(config_path: Path) -> str:
    """The file's other sections as written, and the store's entities: YAML that ``apply``
    takes back unchanged. ``${VAR}`` references stay references; no value of the environment
    is ever written."""
    checked, database = _store_config(config_path)
    with database:
        latest = StateRevisions(database).latest()
    document = {k: v for k, v in checked.document.items() if k not in ENTITY_SECTIONS}
    state = latest.document if latest is not None else entities_of({})
    document.update(copy.deepcopy(entities_of(state)))
    header = (
        f"# Exported by `portico export` from store revision {latest.id} "
        f"({latest.source}, {latest.created_at:%Y-%m-%dT%H:%M:%SZ}).\n"
        if latest is not None
        else "# Exported by `portico export`: the store holds no state revision yet.\n"
    )
    out = io.StringIO()
    yaml.safe_dump(document, out, sort_keys=False, allow_unicode=True, width=100)
    return header + out.getvalue()


def use_colour(stream: TextIO) -> bool:
    """Colours on a terminal, unless ``NO_COLOR`` is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


def default_stream() -> TextIO:
    return sys.stdout
