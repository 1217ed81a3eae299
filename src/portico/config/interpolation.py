"""``${VAR}`` and ``${VAR:-default}`` in the string values of ``portico.yaml``.

Only string scalars are interpolated, after YAML has parsed them, so a value can never change the
document's structure. The environment values used are returned as secrets: the loader keeps them
out of every message it prints.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Interpolation", "interpolate"]

_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VARIABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Interpolation:
    value: str
    secrets: tuple[str, ...]
    """The environment values put into ``value`` (and ``value`` itself when there are any)."""
    problems: tuple[str, ...]
    """One message per reference left as written: unset, unterminated or malformed."""


def interpolate(text: str, env: Mapping[str, str]) -> Interpolation:
    """Replace ``${VAR}`` and ``${VAR:-default}``; ``$${`` stands for a literal ``${``."""
    if "$" not in text:
        return Interpolation(text, (), ())
    secrets: list[str] = []
    problems: list[str] = []

    def replace(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        body = m.group(1)
        if body is None:
            problems.append("unterminated ${ (write $${ for a literal ${)")
            return m.group(0)
        reference = _VARIABLE.fullmatch(body)
        if reference is None:
            problems.append(
                f"invalid reference ${{{body}}}: expected ${{NAME}} or ${{NAME:-default}}"
            )
            return m.group(0)
        name, default = reference.group(1), reference.group(2)
        value = env.get(name)
        if value:
            secrets.append(value)
            return value
        # An empty variable counts as unset when there is a default, as in the shell's ${VAR:-x}.
        if default is not None:
            return default
        if value is not None:
            return value
        problems.append(
            f"environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
        )
        return m.group(0)

    result = _REFERENCE.sub(replace, text)
    if secrets:
        # The whole value too: a message that quotes it is redacted whole, not around the secret.
        secrets.append(result)
    return Interpolation(result, tuple(secrets), tuple(problems))
