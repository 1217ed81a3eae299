"""The settings of the ``rewrite`` policy, validated when the config is loaded.

They live apart from the request-time code (:mod:`.policy`), which is compiled with mypyc, and
mypyc cannot compile pydantic models. A path rule's regular expression is compiled here once to
report a mistake at its line, and its replacement turned into the template ``re.sub`` takes.
"""

from __future__ import annotations

import re
import string
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

__all__ = ["PathRule", "QueryEdits", "RewriteSettings"]

_UNSAFE_LITERAL = re.compile(r"[\x00-\x1f\x7f\\?#]")


def _check_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


def _check_name(value: str) -> str:
    if not value:
        raise ValueError("a query parameter name cannot be empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("a query parameter name cannot hold a control character")
    return value


Regex = Annotated[str, AfterValidator(_check_regex)]
ParamName = Annotated[str, AfterValidator(_check_name)]


class PathRule(BaseModel):
    """One substitution on the path as it goes upstream: every match of ``regex`` (searched in
    the decoded path, as ``re.sub``) is replaced by ``replace``, where ``{name}`` or ``{1}`` is
    what a group of the match captured and ``{{`` ``}}`` are literal braces."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    regex: Regex
    replace: str

    @model_validator(mode="after")
    def _replacement(self) -> PathRule:
        self.template()  # raises ValueError naming what is wrong
        return self

    def template(self) -> str:
        """``replace`` as an ``re.sub`` template (``\\g<name>``, literal text escaped)."""
        pattern = re.compile(self.regex)
        out: list[str] = []
        try:
            parsed = list(string.Formatter().parse(self.replace))
        except ValueError as exc:
            raise ValueError(f"replace: {exc} (write {{{{ and }}}} for literal braces)") from None
        for literal, field, spec, conversion in parsed:
            if _UNSAFE_LITERAL.search(literal):
                raise ValueError(
                    "replace cannot hold '?', '#', a backslash or a control character (the "
                    "query is rewritten with query:)"
                )
            out.append(literal.replace("\\", "\\\\"))
            if field is None:
                continue
            if spec or conversion:
                raise ValueError(f"replace: {{{field}}} takes no format or conversion")
            if field.isdigit():
                if int(field) > pattern.groups:
                    raise ValueError(f"replace: the regex has no group {field}")
            elif field not in pattern.groupindex:
                known = ", ".join(pattern.groupindex) or "none"
                raise ValueError(
                    f"replace: the regex has no group named {field!r} (named groups: {known})"
                )
            out.append(f"\\g<{field}>")
        return "".join(out)


class QueryEdits(BaseModel):
    """Edits of the query string, applied in the order ``remove``, ``rename``, ``set``, ``add``
    (as the ``headers`` policy's). Names are compared once percent-decoded (``+`` as a space),
    and exactly: ``Debug`` is not ``debug``."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)
    remove: tuple[ParamName, ...] = ()
    """Drop every parameter of that name."""
    rename: dict[ParamName, ParamName] = {}
    """Give every parameter of the first name the second, keeping its value and place; when one
    of the first name is there, those already called by the second are dropped."""
    set: dict[ParamName, str] = {}
    """Replace every parameter of that name by one, at the end."""
    add: dict[ParamName, str] = {}
    """Append a parameter, keeping those of that name already there."""

    @model_validator(mode="after")
    def _renames(self) -> QueryEdits:
        targets: dict[str, str] = {}
        for old, new in self.rename.items():
            if old == new:
                raise ValueError(f"rename: {old!r} is renamed to itself")
            if new in targets:
                raise ValueError(
                    f"rename: {targets[new]!r} and {old!r} are both renamed to {new!r}"
                )
            targets[new] = old
        return self


class RewriteSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: tuple[PathRule, ...] = Field(default=(), max_length=32)
    """Substitutions on the path, in order, each on the result of the one before."""
    query: QueryEdits = QueryEdits()

    @model_validator(mode="after")
    def _something(self) -> RewriteSettings:
        query = self.query
        if not self.path and not (query.remove or query.rename or query.set or query.add):
            raise ValueError("a rewrite needs path rules, query edits or both")
        return self
