"""The YAML document read into plain data that remembers the node behind each value.

PyYAML composes the file into a node tree (every node keeps its position); :class:`DocumentReader`
turns it into dicts, lists and scalars for pydantic, keeping beside them a :class:`Located` tree
so an error on ``routes[2].match.path`` can be reported at its line. On the way it checks what
PyYAML lets pass silently: duplicate keys, unsupported tags, recursive aliases and merges, alias
bombs, and ``${VAR}`` references that cannot be resolved.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from portico.config.errors import ConfigIssue
from portico.config.interpolation import interpolate
from portico.config.model import PorticoConfig

__all__ = ["DocumentReader", "Located", "compose", "issue_at", "join_path"]

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"

# Aliases let a few lines expand into an enormous tree ("billion laughs"); no real config is close.
_MAX_NODES = 1_000_000

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_INVALID = object()


@dataclass(slots=True)
class Located:
    """The YAML node a value came from, and the nodes of its items."""

    node: yaml.Node | None
    key: yaml.Node | None = None
    children: dict[Any, Located] = field(default_factory=dict)
    sequence: bool = False
    secrets: tuple[str, ...] = ()
    """Environment values interpolated into this scalar: never to appear in a message."""
    reported: bool = False
    """An issue was already reported here; validation errors on it are only its consequences."""

    def walk(self) -> Iterator[Located]:
        yield self
        for child in self.children.values():
            yield from child.walk()


class _TooLargeError(Exception):
    pass


class DocumentReader:
    """Builds plain data from the node tree, checking what PyYAML lets pass silently."""

    def __init__(self, filename: str, env: Mapping[str, str]) -> None:
        self.filename = filename
        self.env = env
        self.issues: list[ConfigIssue] = []
        self._constructor = yaml.SafeLoader("")
        self._budget = _MAX_NODES
        self._open: set[int] = set()

    def issue(self, node: yaml.Node | None, path: str, message: str) -> None:
        mark = node.start_mark if node else None
        self.issues.append(issue_at(self.filename, mark, path, message))

    def read(self, text: str) -> tuple[Any, Located] | None:
        """The document's data and where each value came from; ``None`` when it cannot be read
        at all (its issues are in :attr:`issues` either way)."""
        try:
            root = compose(text)
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
            return {}, Located(root)
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

    def _value(self, node: yaml.Node, path: str) -> tuple[Any, Located]:
        self._budget -= 1
        if self._budget < 0:
            raise _TooLargeError
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            if id(node) in self._open:
                self.issue(node, path, "an alias refers to a mapping or list that contains it")
                return None, Located(node, reported=True)
            expected = _MAP if isinstance(node, yaml.MappingNode) else _SEQ
            if node.tag != expected:
                self.issue(node, path, f"unsupported YAML tag {node.tag}")
                return None, Located(node, reported=True)
            self._open.add(id(node))
            try:
                if isinstance(node, yaml.MappingNode):
                    return self._mapping(node, path)
                return self._sequence(node, path)
            finally:
                self._open.discard(id(node))
        return self._scalar(node, path)

    def _mapping(self, node: yaml.MappingNode, path: str) -> tuple[dict[Any, Any], Located]:
        located = Located(node)
        data: dict[Any, Any] = {}
        for key, (key_node, value_node) in self._entries(node, path).items():
            value, child = self._value(value_node, join_path(path, key, sequence=False))
            child.key = key_node
            data[key] = value
            located.children[key] = child
        return data, located

    def _sequence(self, node: yaml.SequenceNode, path: str) -> tuple[list[Any], Located]:
        located = Located(node, sequence=True)
        data: list[Any] = []
        for index, item_node in enumerate(node.value):
            value, child = self._value(item_node, join_path(path, index, sequence=True))
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
                key_path = join_path(path, key, sequence=False)
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

    def _scalar(self, node: yaml.Node, path: str) -> tuple[Any, Located]:
        located = Located(node)
        if node.tag == _STR:
            interpolated = interpolate(node.value, self.env)
            for problem in interpolated.problems:
                self.issue(node, path, problem)
            located.secrets = interpolated.secrets
            located.reported = bool(interpolated.problems)
            return interpolated.value, located
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


class _LibyamlComposer(yaml.composer.Composer, yaml.resolver.Resolver):
    """PyYAML's composer and resolver (the node tree and tags of :class:`yaml.SafeLoader`) on
    libyaml's parser, which reads a file many times faster than PyYAML's own: 2-10 ms instead of
    55-75 ms for the demo's config, a tenth of ``portico check``. Not libyaml's own composer: it
    recurses in C, and a deeply nested document would overflow the stack where this one stops at
    the interpreter's recursion limit ("nested too deeply")."""

    def __init__(self, text: str) -> None:
        yaml.composer.Composer.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._events = yaml.CSafeLoader(text)  # its parser's events only

    def check_event(self, *choices: type[yaml.Event]) -> bool:
        return self._events.check_event(*choices)

    def peek_event(self) -> yaml.Event | None:
        return self._events.peek_event()

    def get_event(self) -> yaml.Event | None:
        return self._events.get_event()


def compose(text: str) -> yaml.Node | None:
    """The node tree of a YAML (or JSON) text, as ``yaml.compose`` with PyYAML's safe loader
    gives it, read by libyaml's parser when it accepts the text; PyYAML's errors otherwise."""
    return _compose_with_libyaml(text) or yaml.compose(text, Loader=yaml.SafeLoader)


def _compose_with_libyaml(text: str) -> yaml.Node | None:
    """The document's node tree, or ``None``: for an empty document, without libyaml, or when
    libyaml refuses the text. PyYAML's parser then reads it again, and either accepts it or
    reports the error in the words its messages quote. Where the two differ on a valid document
    libyaml follows the YAML spec (a tab after ``key:``, a ``?`` inside a flow scalar)."""
    if not yaml.__with_libyaml__:
        return None
    try:
        return _LibyamlComposer(text).get_single_node()
    except Exception:  # any refusal (a syntax error, a lone surrogate): PyYAML's turn
        return None


def issue_at(filename: str, mark: yaml.Mark | None, path: str, message: str) -> ConfigIssue:
    if mark is None:
        return ConfigIssue(filename, None, None, path, message)
    return ConfigIssue(filename, mark.line + 1, mark.column + 1, path, message)


def join_path(path: str, item: Any, *, sequence: bool) -> str:
    """``path`` one step deeper, as a user writes it: ``routes[2].match``, ``headers["X-A"]``."""
    if sequence:
        return f"{path}[{item}]"
    text = str(item)
    if _BARE_KEY.fullmatch(text):
        return f"{path}.{text}" if path else text
    return f"{path}[{json.dumps(text)}]"


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
    return issue_at(filename, exc.problem_mark or exc.context_mark, "", f"invalid YAML: {problem}")
