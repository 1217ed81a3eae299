"""Pointing validation errors at their nodes, in words a user of ``portico.yaml`` reads.

Pydantic's errors name a location in the data (``("routes", 2, "match", "path")``) and speak
Python ("Input should be a valid integer"). Here each becomes a
:class:`~portico.config.errors.ConfigIssue` at the line of the node it concerns, with a message
about YAML (a mapping, a list, a key), a suggestion for a mistyped key, and no interpolated secret.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from portico.config.checks import Checks, Location
from portico.config.document import Located, issue_at, join_path
from portico.config.errors import ConfigIssue
from portico.config.model import NAME_PATTERN, PorticoConfig

__all__ = ["semantic_issue", "validation_issue", "without_consequences"]

_REDACTED = "***"


def validation_issue(filename: str, root: Located, error: ErrorDetails) -> ConfigIssue | None:
    """The issue for one of :class:`PorticoConfig`'s validation errors; ``None`` when it only
    follows from an issue the reader already reported at that value."""
    kind, loc = error["type"], tuple(error["loc"])
    ctx = error.get("ctx", {})
    if kind == "missing":
        message = "missing required key"
    elif kind == "extra_forbidden":
        message = _unknown_key(loc[-1], _fields_at(PorticoConfig, loc[:-1]))
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = "expected a mapping"
    elif kind in ("tuple_type", "list_type"):
        message = "expected a list"
    elif kind == "too_short":
        count = ctx.get("min_length", 1)
        message = f"expected at least {count} item{'' if count == 1 else 's'}"
    elif kind == "string_pattern_mismatch" and ctx.get("pattern") == NAME_PATTERN:
        message = "a name may only contain letters, digits, '_', '.' and '-'"
    else:
        message = _clean(error["msg"])
    return _locate(
        root,
        loc,
        missing=kind == "missing",
        at_key=kind == "extra_forbidden",
        filename=filename,
        message=message,
    )


def semantic_issue(
    filename: str,
    root: Located,
    data: Any,
    checks: Checks,
    loc: Location,
    message: str,
) -> ConfigIssue | None:
    """The issue for a finding of a cross-section check (the config's own or a capability's)."""
    # Policy settings are validated by the policy's own model; its raw messages arrive here.
    missing = message == "Field required"
    unknown = message == "Extra inputs are not permitted"
    if missing:
        message = "missing required key"
    elif unknown:
        settings = _policy_settings(data, checks, loc)
        known = _fields_at(settings, loc[4:-1]) if settings is not None else []
        message = _unknown_key(loc[-1], known)
    else:
        message = _clean(message)
    return _locate(root, loc, missing=missing, at_key=unknown, filename=filename, message=message)


def without_consequences(errors: list[ErrorDetails]) -> list[ErrorDetails]:
    """``errors`` without those that only repeat another one."""

    # Pydantic drops an item that failed and then also says the list is too short: noise.
    def explained(error: ErrorDetails) -> bool:
        loc = tuple(error["loc"])
        return any(
            len(other["loc"]) > len(loc) and tuple(other["loc"][: len(loc)]) == loc
            for other in errors
        )

    return [e for e in errors if not (e["type"] == "too_short" and explained(e))]


def _locate(
    root: Located,
    loc: Sequence[str | int],
    *,
    missing: bool,
    at_key: bool,
    filename: str,
    message: str,
) -> ConfigIssue | None:
    """The issue for ``loc``, at the deepest node of the document that ``loc`` reaches.

    Pydantic adds items that are not in the document: ``[key]`` for an error on a mapping key,
    union branch names, fields of a value a validator expanded (``url`` of a target written as a
    plain string). Those are skipped; only a missing field's own name is kept in the path.
    """
    current, path = root, ""
    for index, item in enumerate(loc):
        if item == "[key]":
            at_key = True
            continue
        child = current.children.get(item)
        if child is not None:
            path = join_path(path, item, sequence=current.sequence)
            current = child
        elif missing and index == len(loc) - 1:
            path = join_path(path, item, sequence=current.sequence)
    if current.reported:
        return None
    if missing or at_key:
        node = current.key if current.key is not None else current.node
    else:
        node = current.node
    secrets = sorted(
        {s for located in current.walk() for s in located.secrets}, key=len, reverse=True
    )
    for secret in secrets:
        # Validators may change case (methods are upper-cased), so match regardless of case.
        message = re.sub(re.escape(secret), _REDACTED, message, flags=re.IGNORECASE)
    return issue_at(filename, node.start_mark if node is not None else None, path, message)


def _policy_settings(data: Any, checks: Checks, loc: Location) -> type[BaseModel] | None:
    match loc:
        case ("routes", int(i), "policies", int(j), *_) if checks.policy_settings is not None:
            kind = data["routes"][i]["policies"][j]["type"]
            return checks.policy_settings(kind) if isinstance(kind, str) else None
        case ("services", str(name), "policies", int(j), *_) if checks.policy_settings is not None:
            kind = data["services"][name]["policies"][j]["type"]
            return checks.policy_settings(kind) if isinstance(kind, str) else None
    return None


def _clean(message: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if message.startswith("Input should be "):
        message = "must be " + message.removeprefix("Input should be ")
    if message[:1].isupper() and message[1:2].islower():
        message = message[0].lower() + message[1:]
    return message


def _unknown_key(key: str | int, known: list[str]) -> str:
    name = str(key)
    if not known:
        return f"unknown key {name!r}"
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"unknown key {name!r}; did you mean {close[0]!r}?"
    return f"unknown key {name!r}; expected one of: {', '.join(known)}"


def _fields_at(annotation: Any, loc: Sequence[str | int]) -> list[str]:
    """The field names of the model found by following ``loc`` through type annotations."""
    for item in loc:
        model = _model_in(annotation)
        if model is not None:
            info = model.model_fields.get(item) if isinstance(item, str) else None
            if info is None:
                return []
            annotation = info.annotation
            continue
        annotation = next(
            (
                get_args(arg)[1 if get_origin(arg) is dict else 0]
                for arg in _alternatives(annotation)
                if get_origin(arg) in (dict, tuple, list)
            ),
            None,
        )
        if annotation is None:
            return []
    model = _model_in(annotation)
    return list(model.model_fields) if model is not None else []


def _alternatives(annotation: Any) -> list[Any]:
    """``X | None`` and ``Annotated[X, ...]`` seen through to the types they allow."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _alternatives(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [t for arg in get_args(annotation) for t in _alternatives(arg)]
    return [annotation]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for arg in _alternatives(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None
