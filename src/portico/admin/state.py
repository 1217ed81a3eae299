"""The served entities as the admin API reads and edits them (docs/sync.md).

- ``entities.source: file``: they are the running config's, read-only; an edit is refused (409
  ``entities-from-file``, saying how to switch).
- ``entities.source: store``: they are the store's latest state revision, checked with the
  file's other sections through the same loader as ``portico check`` (cached per revision), so
  that a client reads what it wrote. :func:`edit` makes one change: the entity's ``If-Match``,
  its lock, the same checks, one new revision based on the one read (a write that lost the race
  is retried, or refused with 412 when ``If-Match`` named what was read), and one audit entry
  in the same transaction.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from portico.admin.context import AdminContext
from portico.admin.pagination import check_if_match, etag_of
from portico.admin.problems import (
    ENTITIES_FROM_FILE,
    ENTITY_LOCKED,
    PRECONDITION_FAILED,
    AdminProblem,
)
from portico.admin.sync import redact_entities, stored_entities
from portico.checking import check_config
from portico.config.entities import EntityDocument, document_sha256, entities_of
from portico.config.errors import ConfigError, ConfigIssue
from portico.config.loader import StoredEntities
from portico.config.model import PorticoConfig
from portico.gateway import problems
from portico.store.repositories import (
    AuditLog,
    Author,
    StaleRevision,
    StateRevision,
    StateRevisions,
)

__all__ = [
    "Edit",
    "Edited",
    "config_now",
    "current_config",
    "current_state",
    "edit",
    "entity_tag",
    "pointer_of",
    "written_consumer",
    "written_route",
    "written_service",
    "written_tenant",
]

_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class _Loaded:
    revision: StateRevision | None
    config: PorticoConfig


def _current(context: AdminContext) -> _Loaded:
    revisions = StateRevisions(context.database)
    latest_id = revisions.latest_id()
    state = context.state
    with state.lock:
        known, config = state.revision, state.config
    if config is not None and (known.id if known is not None else None) == latest_id:
        return _Loaded(known, config)
    revision = None if latest_id is None else revisions.get(latest_id)
    loaded = _Loaded(revision, _checked(context, revision))
    _remember(context, loaded)
    return loaded


def _remember(context: AdminContext, loaded: _Loaded) -> None:
    state = context.state
    with state.lock:
        newer = state.revision is not None and (
            loaded.revision is None or state.revision.id > loaded.revision.id
        )
        if not newer:
            state.revision, state.config = loaded.revision, loaded.config


def _checked(
    context: AdminContext, revision: StateRevision | None, edited: EntityDocument | None = None
) -> PorticoConfig:
    """The config of ``revision`` (or of the ``edited`` document), with the file's other
    sections, through the checks ``portico check`` runs."""
    assert context.config_path is not None
    if edited is not None:
        stored = StoredEntities(edited, "the edited state")
    elif revision is not None:
        stored = stored_entities(revision)
    else:
        return check_config(context.config_path).config
    return check_config(context.config_path, entities=stored).config


def current_config(context: AdminContext) -> PorticoConfig:
    """The config whose entities the admin API shows: the running one (``file``), or the
    store's latest revision's (``store``)."""
    return current_state(context)[0]


async def config_now(context: AdminContext) -> PorticoConfig:
    """:func:`current_config` for an ``async`` endpoint: in store mode, read (and, for a new
    revision, checked) in a thread, never on the event loop the gateway may share."""
    if context.entities_source != "store" or context.config_path is None:
        return context.config()
    return await run_in_threadpool(current_config, context)


def current_state(context: AdminContext) -> tuple[PorticoConfig, EntityDocument | None]:
    """:func:`current_config`, and the entities as written in the store (``None``: ``file``)."""
    if context.entities_source != "store" or context.config_path is None:
        return context.config(), None
    loaded = _current(context)
    return loaded.config, None if loaded.revision is None else loaded.revision.document


def entity_tag(view: BaseModel, written: Any) -> str:
    """An entity's ``ETag``: of what a client reads of it and, in the store, of what is written
    (a new secret's hash, a reference renamed: changes a view does not show)."""
    if written is None:
        return etag_of(view)
    return etag_of({"entity": view.model_dump(mode="json"), "written": written})


def written_service(document: EntityDocument | None, name: str) -> Any:
    services = (document or {}).get("services")
    return services.get(name) if isinstance(services, dict) else None


def written_route(document: EntityDocument | None, name: str) -> Any:
    routes = (document or {}).get("routes")
    if not isinstance(routes, list):
        return None
    return next((r for r in routes if isinstance(r, dict) and r.get("name") == name), None)


def written_tenant(document: EntityDocument | None, tenant: str) -> Any:
    tenants = (document or {}).get("tenants")
    found = tenants.get(tenant) if isinstance(tenants, dict) else None
    if not isinstance(found, dict):
        return found
    return {k: v for k, v in found.items() if k != "consumers"}


def written_consumer(document: EntityDocument | None, tenant: str, name: str) -> Any:
    tenants = (document or {}).get("tenants")
    found = tenants.get(tenant) if isinstance(tenants, dict) else None
    consumers = found.get("consumers") if isinstance(found, dict) else None
    return consumers.get(name) if isinstance(consumers, dict) else None


# -- edits -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Edit:
    """One change of one entity, as an endpoint describes it."""

    kind: str
    """``service``, ``route``, ``tenant``, ``consumer``: the audit log's action prefix."""
    name: str
    """How the audit log names it (``acme/billing`` for a consumer)."""
    tenant: str | None
    prefix: Callable[[EntityDocument], str]
    """Where the entity is in an edited document, as issues name it (``services.orders``,
    ``routes[3]``): an issue under it is pointed into the request's body."""
    read: Callable[[EntityDocument], Any]
    """The entity as written in a document (``None``: it is not there)."""
    change: Callable[[EntityDocument], None]
    """Make the change in a copy of the latest document (raises an :class:`AdminProblem`)."""
    view: Callable[[PorticoConfig], BaseModel | None]
    """What a client reads of it (its ``ETag`` is this view's)."""
    guard: Callable[[EntityDocument], None] | None = None
    """More to refuse before changing (a tenant with consumers, a locked consumer in it)."""
    deleting: bool = False


@dataclass(frozen=True, slots=True)
class Edited:
    before: BaseModel | None
    after: BaseModel | None
    revision: StateRevision
    tag: str | None
    """The ``ETag`` of the entity after the change (``None``: deleted)."""


def edit(context: AdminContext, author: Author, change: Edit, if_match: str | None) -> Edited:
    """Make ``change`` a new state revision (in a thread: it reads and writes the store)."""
    refuse_in_file_mode(context)
    for _ in range(_ATTEMPTS):
        loaded = _current(context)
        latest = loaded.revision
        document = latest.document if latest is not None else entities_of({})
        before_view = change.view(loaded.config)
        if if_match is not None:
            if before_view is None:
                raise AdminProblem(
                    PRECONDITION_FAILED,
                    f"there is no {change.kind} {change.name} for If-Match to name",
                )
            check_if_match(if_match, entity_tag(before_view, change.read(document)))
        before = change.read(document)
        if _locked(before):
            raise AdminProblem(
                ENTITY_LOCKED,
                f"{change.kind} {change.name} is locked to portico.yaml (locked: true): it is "
                "managed by the file, and changes with `portico apply`",
            )
        if change.guard is not None:
            change.guard(document)
        edited = copy.deepcopy(document)
        change.change(edited)
        try:
            config = _checked(context, None, edited)
        except ConfigError as exc:
            raise _invalid(exc, change, change.prefix(edited)) from None
        after = change.read(edited)
        try:
            with context.database.write() as session:
                revision = StateRevisions(session).append(
                    None if latest is None else latest.id,
                    edited,
                    document_sha256(edited),
                    author,
                    "admin",
                )
                action = "delete" if after is None else "create" if before is None else "replace"
                AuditLog(session).record(
                    author,
                    f"{change.kind}.{action}",
                    change.name,
                    tenant=change.tenant,
                    before=None if before is None else _state(before),
                    after=None if after is None else _state(after),
                    detail={
                        "revision": revision.id,
                        "parent": None if latest is None else latest.id,
                    },
                )
        except StaleRevision:
            if if_match is not None:
                raise AdminProblem(
                    PRECONDITION_FAILED,
                    "the state changed since the entity was read: read it again (its ETag), "
                    "then retry",
                ) from None
            continue  # without If-Match, the change is made on the state as it is now
        _remember(context, _Loaded(revision, config))
        after_view = change.view(config)
        tag = None if after_view is None else entity_tag(after_view, after)
        return Edited(before_view, after_view, revision, tag)
    raise AdminProblem(
        PRECONDITION_FAILED, "the state kept changing while this change was made: retry"
    )


def refuse_in_file_mode(context: AdminContext) -> None:
    if context.entities_source != "store" or context.config_path is None:
        raise AdminProblem(
            ENTITIES_FROM_FILE,
            "entities.source is file: services, routes, tenants and consumers change in "
            "portico.yaml. Set `entities: {source: store}` there to edit them through this "
            "API (docs/sync.md)",
        )


def _locked(entity: Any) -> bool:
    return isinstance(entity, dict) and entity.get("locked") is True


def _state(entity: Any) -> dict[str, Any]:
    redacted = redact_entities(entity)
    return redacted if isinstance(redacted, dict) else {"value": redacted}


def _invalid(exc: ConfigError, change: Edit, prefix: str) -> AdminProblem:
    errors = [
        {"pointer": pointer_of(issue, prefix), "message": _message(issue, prefix)}
        for issue in exc.issues
    ]
    kind = problems.VALIDATION_FAILED
    detail = f"the {change.kind} does not pass the config's checks"
    if change.deleting:
        from portico.admin.problems import ENTITY_CONFLICT

        kind = ENTITY_CONFLICT
        detail = f"{change.kind} {change.name} cannot be deleted: other entities depend on it"
    return AdminProblem(kind, detail, errors=errors)


_TOKEN = re.compile(r'\.([A-Za-z0-9_-]+)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')


def pointer_of(issue: ConfigIssue, prefix: str) -> str:
    """A JSON Pointer into the request's body for an issue under ``prefix`` (``""``: the
    body as a whole, when the issue is elsewhere: another entity that depends on this one)."""
    path = issue.path
    if not prefix:
        return ""
    if path != prefix and not path.startswith((prefix + ".", prefix + "[")):
        return ""
    rest = path[len(prefix) :]
    parts: list[str] = []
    for match in _TOKEN.finditer(rest):
        name, index, quoted = match.groups()
        part = name if name is not None else index if index is not None else json.loads(quoted)
        parts.append(part.replace("~", "~0").replace("/", "~1"))
    return "".join("/" + part for part in parts)


def _message(issue: ConfigIssue, prefix: str) -> str:
    if pointer_of(issue, prefix) or issue.path == prefix:
        return issue.message
    return f"{issue.path}: {issue.message}" if issue.path else issue.message
