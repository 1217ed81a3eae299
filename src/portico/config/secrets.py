"""Where a config holds secrets, and what becomes of them outside the process that reads it.

A secret belongs in the environment, written ``${VAR}`` in the file: each process interpolates it
when it loads the config, and nothing Portico stores or shows holds its value. A secret written
as its value (a *literal*) is allowed in ``portico.yaml`` with ``entities.source: file`` (the file
is the user's); then:

- :func:`literal_secrets` finds those of the entity sections, which ``entities.source: store``
  refuses (a state revision is a database row: docs/sync.md);
- :func:`redact_text` takes them out of the file text recorded in ``config_revisions``.

A value is a secret when its key's name says so (:func:`portico.core.redaction.is_secret_name`:
``client_secret``, ``secret``, ``Authorization``, ``password``...), except the hashes of one
(``client_secret_sha256``), and a URL's password.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import yaml

from portico.config.document import Located, compose, join_path
from portico.core.redaction import REDACTED, is_secret_name

__all__ = ["has_reference", "is_secret_key", "literal_secrets", "redact_text"]

_REFERENCE = re.compile(r"(?<!\$)\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}")
_STR = "tag:yaml.org,2002:str"


def has_reference(text: str) -> bool:
    """Whether ``text`` takes something from the environment (``${VAR}``, not ``$${``)."""
    return _REFERENCE.search(text) is not None


def is_secret_key(name: object) -> bool:
    return isinstance(name, str) and is_secret_name(name) and not name.endswith("_sha256")


def literal_secrets(located: Located, path: str = "") -> Iterator[tuple[Located, str]]:
    """Every scalar under ``located`` written as a secret's value rather than a reference, with
    its path (``tenants.acme.consumers.app.oauth.client_secret``)."""
    for key, child in located.children.items():
        where = join_path(path, key, sequence=located.sequence)
        node = child.node
        if isinstance(node, yaml.ScalarNode) and node.tag == _STR and node.value:
            secret = not located.sequence and is_secret_key(key)
            if (secret or _url_password(node.value)) and not has_reference(node.value):
                yield child, where
        else:
            yield from literal_secrets(child, where)


def redact_text(text: str) -> str:
    """``text`` with the value of every literal secret replaced by ``[redacted]``, the rest as
    written (comments, order, references). Text that is not YAML is returned as it is: it never
    served."""
    try:
        root = compose(text)
    except (yaml.YAMLError, RecursionError):
        return text
    spans: list[tuple[int, int, str]] = []
    for node, secret in _scalars(root, set()):
        value = node.value
        if has_reference(value) or node.start_mark is None or node.end_mark is None:
            continue
        if secret:
            replacement = REDACTED
        elif (password := _url_password(value)) is not None:
            replacement = value.replace(f":{password}@", f":{REDACTED}@", 1)
        else:
            continue
        spans.append((node.start_mark.index, node.end_mark.index, _quoted(replacement)))
    for start, end, replacement in sorted(spans, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def _scalars(node: yaml.Node | None, seen: set[int]) -> Iterator[tuple[yaml.ScalarNode, bool]]:
    """Each string scalar, and whether its key names a secret; aliases are visited once."""
    if node is None or id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(value, yaml.ScalarNode) and value.tag == _STR and value.value:
                yield value, isinstance(key, yaml.ScalarNode) and is_secret_key(key.value)
            else:
                yield from _scalars(value, seen)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _scalars(item, seen)
    elif isinstance(node, yaml.ScalarNode) and node.tag == _STR and node.value:
        yield node, False


def _url_password(value: str) -> str | None:
    if "://" not in value or "@" not in value:
        return None
    try:
        return urlsplit(value.strip()).password
    except ValueError:
        return None


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
