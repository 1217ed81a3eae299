"""Loading ``portico.yaml``: YAML with a line for every value, ``${VAR}`` interpolation, validation.

The file is composed into PyYAML's node tree (every node keeps its position), turned into plain
data while remembering the node behind each value, validated by :class:`PorticoConfig`, and every
problem found on the way is reported at once as a :class:`~portico.config.errors.ConfigIssue`
pointing at the file, line and field it concerns. That includes the checks that span sections
(a route naming an unknown service, the capabilities' :class:`~portico.config.checks.Checks`)
when some entries are invalid: they run on the rest of the file (see :func:`_findings`).
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from portico.config.checks import NO_CHECKS, Checks, Finding, Location
from portico.config.errors import ConfigError, ConfigIssue
from portico.config.model import NAME_PATTERN, PorticoConfig

__all__ = ["load_config", "load_config_text"]

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"

# Aliases let a few lines expand into an enormous tree ("billion laughs"); no real config is close.
_MAX_NODES = 1_000_000

_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VARIABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)
_REDACTED = "***"
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_INVALID = object()
_MAX_PRUNING_ROUNDS = 10


def load_config(
    path: str | Path, env: Mapping[str, str] | None = None, checks: Checks = NO_CHECKS
) -> PorticoConfig:
    """Read, interpolate and validate a config file; raise :class:`ConfigError` listing every issue.

    ``env`` supplies the ``${VAR}`` values and defaults to ``os.environ``; ``checks`` are the
    capabilities' own (the composition root's :func:`portico.assembly.load_config` gives them all).
    """
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
    return load_config_text(text, filename, env, checks)


def load_config_text(
    text: str, filename: str, env: Mapping[str, str] | None = None, checks: Checks = NO_CHECKS
) -> PorticoConfig:
    """Like :func:`load_config`, for text already read; issues name ``filename``."""
    reader = _Reader(filename, os.environ if env is None else env)
    document = reader.read(text)
    issues = reader.issues
    if document is None:
        raise ConfigError(_in_file_order(issues))
    data, root = document

    config: PorticoConfig | None = None
    errors: list[ErrorDetails] = []
    try:
        config = PorticoConfig.model_validate(data)
    except ValidationError as exc:
        # Inputs are left out, and ConfigError is raised outside this block so the ValidationError
        # (whose text shows inputs) is not chained to it: an interpolated value may be a secret.
        errors = exc.errors(include_url=False, include_input=False)
    for error in _without_consequences(errors):
        issue = _validation_issue(filename, root, error)
        if issue is not None:
            issues.append(issue)
    for loc, message in _findings(config, data, errors, checks):
        issue = _semantic_issue(filename, root, data, checks, loc, message)
        if issue is not None:
            issues.append(issue)

    if issues:
        raise ConfigError(_in_file_order(issues))
    assert config is not None
    return config


def _file_error(filename: str, message: str) -> ConfigError:
    return ConfigError([ConfigIssue(filename, None, None, "", message)])


def _in_file_order(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    # A merged (<<) mapping is read once per use, so the same issue can be found twice.
    unique = list(dict.fromkeys(issues))
    return sorted(unique, key=lambda i: (i.line is not None, i.line or 0, i.column or 0))


# Reading YAML into data that remembers its nodes


@dataclass(slots=True)
class _Located:
    """The YAML node a value came from, and the nodes of its items."""

    node: yaml.Node | None
    key: yaml.Node | None = None
    children: dict[Any, _Located] = field(default_factory=dict)
    sequence: bool = False
    secrets: tuple[str, ...] = ()
    """Environment values interpolated into this scalar: never to appear in a message."""
    reported: bool = False
    """An issue was already reported here; validation errors on it are only its consequences."""

    def walk(self) -> Iterator[_Located]:
        yield self
        for child in self.children.values():
            yield from child.walk()


class _TooLargeError(Exception):
    pass


class _Reader:
    """Builds plain data from the node tree, checking what PyYAML lets pass silently."""

    def __init__(self, filename: str, env: Mapping[str, str]) -> None:
        self.filename = filename
        self.env = env
        self.issues: list[ConfigIssue] = []
        self._constructor = yaml.SafeLoader("")
        self._budget = _MAX_NODES
        self._open: set[int] = set()

    def issue(self, node: yaml.Node | None, path: str, message: str) -> None:
        self.issues.append(_issue(self.filename, node.start_mark if node else None, path, message))

    def read(self, text: str) -> tuple[Any, _Located] | None:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            self.issues.append(_syntax_issue(self.filename, exc))
            return None
        except yaml.reader.ReaderError as exc:
            line = text.count("\n", 0, exc.position) + 1
            column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
            char = exc.character if isinstance(exc.character, str) else chr(exc.character)
            message = f"character {char!r} (U+{ord(char):04X}) is not allowed in YAML"
            self.issues.append(ConfigIssue(self.filename, line, column, "", message))
            return None
        except yaml.YAMLError as exc:
            self.issues.append(ConfigIssue(self.filename, None, None, "", f"invalid YAML: {exc}"))
            return None
        except RecursionError:
            self.issue(None, "", "the document is nested too deeply")
            return None

        if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == _NULL):
            return {}, _Located(root)
        if not isinstance(root, yaml.MappingNode):
            kind = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
            sections = ", ".join(PorticoConfig.model_fields)
            self.issue(
                root, "", f"the top level must be a mapping of sections ({sections}), not {kind}"
            )
            return None
        try:
            return self._value(root, "")
        except _TooLargeError:
            self.issue(root, "", "the document is too large once its aliases are expanded")
        except RecursionError:
            self.issue(root, "", "the document is nested too deeply")
        return None

    def _value(self, node: yaml.Node, path: str) -> tuple[Any, _Located]:
        self._budget -= 1
        if self._budget < 0:
            raise _TooLargeError
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            if id(node) in self._open:
                self.issue(node, path, "an alias refers to a mapping or list that contains it")
                return None, _Located(node, reported=True)
            expected = _MAP if isinstance(node, yaml.MappingNode) else _SEQ
            if node.tag != expected:
                self.issue(node, path, f"unsupported YAML tag {node.tag}")
                return None, _Located(node, reported=True)
            self._open.add(id(node))
            try:
                if isinstance(node, yaml.MappingNode):
                    return self._mapping(node, path)
                return self._sequence(node, path)
            finally:
                self._open.discard(id(node))
        return self._scalar(node, path)

    def _mapping(self, node: yaml.MappingNode, path: str) -> tuple[dict[Any, Any], _Located]:
        located = _Located(node)
        data: dict[Any, Any] = {}
        for key, (key_node, value_node) in self._entries(node, path).items():
            value, child = self._value(value_node, _join(path, key, sequence=False))
            child.key = key_node
            data[key] = value
            located.children[key] = child
        return data, located

    def _sequence(self, node: yaml.SequenceNode, path: str) -> tuple[list[Any], _Located]:
        located = _Located(node, sequence=True)
        data: list[Any] = []
        for index, item_node in enumerate(node.value):
            value, child = self._value(item_node, _join(path, index, sequence=True))
            data.append(value)
            located.children[index] = child
        return data, located

    def _entries(self, node: yaml.MappingNode, path: str) -> dict[Any, tuple[yaml.Node, yaml.Node]]:
        """The mapping's keys with their nodes, ``<<`` merges applied, duplicates reported."""
        merged: dict[Any, tuple[yaml.Node, yaml.Node]] = {}
        explicit: dict[Any, tuple[yaml.Node, yaml.Node]] = {}
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                for source in self._merge_sources(value_node, path):
                    self._open.add(id(source))
                    try:
                        for key, pair in self._entries(source, path).items():
                            merged.setdefault(key, pair)
                    finally:
                        self._open.discard(id(source))
                continue
            key = self._key(key_node, path)
            if key is _INVALID:
                continue
            if key in first_line:
                key_path = _join(path, key, sequence=False)
                self.issue(
                    key_node,
                    key_path,
                    f"duplicate key {key!r}, first defined on line {first_line[key]}",
                )
                # Read the value being replaced for its own issues (a missing variable...), which
                # would otherwise only appear once the duplicate is removed.
                self._value(explicit[key][1], key_path)
            else:
                first_line[key] = _line(key_node)
            # The last occurrence wins, as it does for PyYAML, so later errors describe that value.
            explicit[key] = (key_node, value_node)
        return merged | explicit

    def _merge_sources(self, node: yaml.Node, path: str) -> list[yaml.MappingNode]:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if all(isinstance(s, yaml.MappingNode) and s.tag == _MAP for s in sources):
            if any(id(s) in self._open for s in sources):
                self.issue(node, path, "a merge (<<) refers to a mapping that contains it")
                return []
            return list(sources)
        self.issue(node, path, "a merge key (<<) takes a mapping or a list of mappings")
        return []

    def _key(self, node: yaml.Node, path: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self.issue(node, path, "a mapping key must be a plain value, not a mapping or list")
            return _INVALID
        return self._construct(node, path)

    def _scalar(self, node: yaml.Node, path: str) -> tuple[Any, _Located]:
        located = _Located(node)
        if node.tag == _STR:
            value, secrets, complete = self._interpolate(node, path)
            located.secrets = secrets
            located.reported = not complete
            return value, located
        value = self._construct(node, path)
        if value is _INVALID:
            located.reported = True
            return None, located
        return value, located

    def _construct(self, node: yaml.Node, path: str) -> Any:
        try:
            return self._constructor.construct_object(node)
        except yaml.constructor.ConstructorError as exc:
            self.issue(node, path, exc.problem or "this value cannot be read")
        except ValueError:
            # A scalar that looks like a timestamp but is not a real date: 2024-13-45.
            self.issue(node, path, "not a valid date or time")
        return _INVALID

    def _interpolate(self, node: yaml.Node, path: str) -> tuple[str, tuple[str, ...], bool]:
        """Replace ``${VAR}`` and ``${VAR:-default}``; ``$${`` stands for a literal ``${``."""
        text: str = node.value
        if "$" not in text:
            return text, (), True
        secrets: list[str] = []
        complete = True

        def replace(m: re.Match[str]) -> str:
            nonlocal complete
            if m.group(0) == "$${":
                return "${"
            body = m.group(1)
            if body is None:
                self.issue(node, path, "unterminated ${ (write $${ for a literal ${)")
                complete = False
                return m.group(0)
            reference = _VARIABLE.fullmatch(body)
            if reference is None:
                self.issue(
                    node,
                    path,
                    f"invalid reference ${{{body}}}: expected ${{NAME}} or ${{NAME:-default}}",
                )
                complete = False
                return m.group(0)
            name, default = reference.group(1), reference.group(2)
            value = self.env.get(name)
            if value:
                secrets.append(value)
                return value
            if default is not None:
                return default
            if value is not None:
                return value
            self.issue(
                node,
                path,
                f"environment variable {name} is not set"
                f" (write ${{{name}:-default}} to give a default)",
            )
            complete = False
            return m.group(0)

        result = _REFERENCE.sub(replace, text)
        if secrets:
            secrets.append(result)
        return result, tuple(secrets), complete


def _issue(filename: str, mark: yaml.Mark | None, path: str, message: str) -> ConfigIssue:
    if mark is None:
        return ConfigIssue(filename, None, None, path, message)
    return ConfigIssue(filename, mark.line + 1, mark.column + 1, path, message)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1 if node.start_mark else 0


def _syntax_issue(filename: str, exc: yaml.MarkedYAMLError) -> ConfigIssue:
    problem = exc.problem or "invalid YAML"
    context = exc.context
    if context and exc.context_mark is not None:
        line = exc.context_mark.line + 1
        if context.startswith("while "):
            problem = f"{problem} ({context} that starts on line {line})"
        else:
            problem = f"{context} (line {line}), {problem}"
    elif context:
        problem = f"{context}, {problem}"
    return _issue(filename, exc.problem_mark or exc.context_mark, "", f"invalid YAML: {problem}")


def _join(path: str, item: Any, *, sequence: bool) -> str:
    if sequence:
        return f"{path}[{item}]"
    text = str(item)
    if _BARE_KEY.fullmatch(text):
        return f"{path}.{text}" if path else text
    return f"{path}[{json.dumps(text)}]"


# Pointing validation errors at their nodes


def _locate(
    root: _Located,
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
            path = _join(path, item, sequence=current.sequence)
            current = child
        elif missing and index == len(loc) - 1:
            path = _join(path, item, sequence=current.sequence)
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
    return _issue(filename, node.start_mark if node is not None else None, path, message)


def _validation_issue(filename: str, root: _Located, error: ErrorDetails) -> ConfigIssue | None:
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


def _semantic_issue(
    filename: str,
    root: _Located,
    data: Any,
    checks: Checks,
    loc: Location,
    message: str,
) -> ConfigIssue | None:
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


def _policy_settings(data: Any, checks: Checks, loc: Location) -> type[BaseModel] | None:
    match loc:
        case ("routes", int(i), "policies", int(j), *_) if checks.policy_settings is not None:
            kind = data["routes"][i]["policies"][j]["type"]
            return checks.policy_settings(kind) if isinstance(kind, str) else None
    return None


# The checks that span sections, also when some entries are invalid


def _findings(
    config: PorticoConfig | None, data: Any, errors: list[ErrorDetails], checks: Checks
) -> list[Finding]:
    """The config's own cross-section errors and the capabilities' checks, located in the file.

    When validation failed, they run on the file without what failed (the value of a field, a
    list, or a whole route, service, consumer... when that is what stays invalid), so one run
    reports every problem rather than one layer of problems at a time. A finding that may only
    be a consequence of something left out (a route naming a service that failed, ``mtls`` when
    ``gateway.tls`` failed) is not reported: it names what was left out.
    """
    if config is not None:
        return [*config.semantic_errors(), *checks.findings(config)]
    if not isinstance(data, dict):
        return []
    dropped: set[Location] = set()
    pruned, kept = data, _route_indexes(data)
    for _ in range(_MAX_PRUNING_ROUNDS):
        units = {_unit(tuple(e["loc"]), pruned, kept) for e in errors}
        if None in units or units <= dropped:
            return []
        dropped |= {unit for unit in units if unit is not None}
        pruned, kept = _without(data, dropped)
        try:
            partial = PorticoConfig.model_validate(pruned)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            continue
        findings = [*partial.semantic_errors(), *checks.findings(partial)]
        return [
            (_original(loc, kept), message)
            for loc, message in findings
            if not _may_follow_from(message, dropped)
        ]
    return []


def _route_indexes(data: dict[str, Any]) -> list[int]:
    routes = data.get("routes")
    return list(range(len(routes))) if isinstance(routes, list) else []


def _original(loc: Location, kept: list[int]) -> Location:
    """``loc`` with the file's index of its route, from the routes left after pruning."""
    match loc:
        case ("routes", int(i), *rest) if i < len(kept):
            return ("routes", kept[i], *rest)
    return loc


def _unit(loc: Location, pruned: dict[str, Any], kept: list[int]) -> Location | None:
    """What to leave out for an error at ``loc`` (in ``pruned``), in the file's terms: the
    deepest value of the file on the way to ``loc``. Never one item of a list but a route (the
    routes' indexes are mapped back; other lists are left out whole)."""
    unit: list[str | int] = []
    current: Any = pruned
    for item in loc:
        if not _holds(current, item):
            break
        current = current[item]
        unit.append(item)
    while unit and isinstance(unit[-1], int) and not (len(unit) == 2 and unit[0] == "routes"):
        unit.pop()
    return _original(tuple(unit), kept) if unit else None


def _holds(value: Any, item: str | int) -> bool:
    """Whether ``value[item]`` is a value of the file (a key of a mapping, an index of a list)."""
    if isinstance(value, dict):
        return item in value
    return isinstance(value, list) and isinstance(item, int) and 0 <= item < len(value)


def _without(data: dict[str, Any], dropped: set[Location]) -> tuple[dict[str, Any], list[int]]:
    """A copy of ``data`` without the ``dropped`` values, and the file's indexes of the routes
    it keeps."""
    pruned = copy.deepcopy(data)
    gone_routes = {loc[1] for loc in dropped if len(loc) == 2 and loc[0] == "routes"}
    for loc in dropped:
        if loc[0] == "routes" and len(loc) == 2:
            continue
        parent: Any = pruned
        for item in loc[:-1]:
            parent = parent[item] if _holds(parent, item) else None
        if isinstance(parent, dict):
            parent.pop(loc[-1], None)
    kept: list[int] = []
    routes = pruned.get("routes")
    if isinstance(routes, list):
        kept = [i for i in range(len(routes)) if i not in gone_routes]
        pruned["routes"] = [routes[i] for i in kept]
    return pruned, kept


def _may_follow_from(message: str, dropped: set[Location]) -> bool:
    """Whether ``message`` names something left out: a section (``gateway.tls``, for any value
    left out in it), a service or an identity provider (``'billing'``)."""
    for loc in dropped:
        if loc[0] == "routes":
            continue
        names = [str(item) for item in loc]
        first = 2 if len(names) > 1 else 1
        if any(".".join(names[:k]) in message for k in range(first, len(names) + 1)):
            return True
        named = names[1:2] if names[0] == "services" else []
        if names[:2] == ["identity", "providers"]:
            named = names[2:3]
        if any(repr(name) in message for name in named):
            return True
    return False


def _without_consequences(errors: list[ErrorDetails]) -> list[ErrorDetails]:
    # Pydantic drops an item that failed and then also says the list is too short: noise.
    def explained(error: ErrorDetails) -> bool:
        loc = tuple(error["loc"])
        return any(
            len(other["loc"]) > len(loc) and tuple(other["loc"][: len(loc)]) == loc
            for other in errors
        )

    return [e for e in errors if not (e["type"] == "too_short" and explained(e))]


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
