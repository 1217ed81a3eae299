"""The settings of the ``mask`` policy, validated when the config is loaded, and the field paths
they name, parsed here once into plain steps for the request-time code (:mod:`.policy`, compiled
with mypyc, which cannot compile pydantic models).

A path names fields of a JSON document from its top:

- ``customer.ssn``: the member ``ssn`` of the member ``customer``;
- ``items[*].cost``: ``cost`` in every element of the array ``items``; ``items[0].cost`` in the
  first only;
- ``customers.*.ssn``: ``ssn`` in every member of ``customers``;
- ``**.password``: ``password`` at any depth, in objects and arrays alike;
- ``["a.b"]`` or ``['a.b']``: a member whose name holds a dot, a bracket or a quote;
- ``[*].ssn``: in every element of a document that is an array.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from portico.config.model import Size

__all__ = [
    "ANY_INDEX",
    "ANY_MEMBER",
    "DESCEND",
    "INDEX",
    "MEMBER",
    "MaskSettings",
    "Step",
    "parse_path",
]

MEMBER = 0
"""A step into the member of that name."""
ANY_MEMBER = 1
"""``*``: every member of an object."""
INDEX = 2
"""``[n]``: the element n of an array."""
ANY_INDEX = 3
"""``[*]``: every element of an array."""
DESCEND = 4
"""``**``: zero or more steps into any member or element."""

Step = tuple[int, str, int]
"""(kind, member name, index): what one step of a path matches."""

_NAME = re.compile(r"[^.\[\]\"'*]+")
_BRACKET = re.compile(r"\[(?:(\*)|(\d+)|\"((?:[^\"\\]|\\.)*)\"|'((?:[^'\\]|\\.)*)')\]")


def parse_path(text: str) -> tuple[Step, ...]:
    """The steps of a field path (see the module docstring); ``ValueError`` says what is wrong."""
    steps: list[Step] = []
    at = 0
    expect_name = True  # at the start or after a dot: a name, *, ** or a bracket
    while at < len(text):
        char = text[at]
        if char == "[":
            m = _BRACKET.match(text, at)
            if m is None:
                raise ValueError(f'{text!r}: expected [*], [n], ["name"] at {at + 1}')
            if m.group(1):
                steps.append((ANY_INDEX, "", 0))
            elif m.group(2) is not None:
                steps.append((INDEX, "", int(m.group(2))))
            else:
                quoted = m.group(3) if m.group(3) is not None else m.group(4)
                steps.append((MEMBER, re.sub(r"\\(.)", r"\1", quoted), 0))
            at = m.end()
            expect_name = False
        elif expect_name:
            if text.startswith("**", at):
                if steps and steps[-1][0] == DESCEND:
                    raise ValueError(f"{text!r}: ** twice in a row")
                steps.append((DESCEND, "", 0))
                at += 2
            elif char == "*":
                steps.append((ANY_MEMBER, "", 0))
                at += 1
            else:
                m = _NAME.match(text, at)
                if m is None:
                    raise ValueError(f"{text!r}: expected a name at {at + 1}")
                steps.append((MEMBER, m.group(), 0))
                at = m.end()
            expect_name = False
        elif char == ".":
            at += 1
            expect_name = True
            if at == len(text):
                raise ValueError(f"{text!r}: ends with a dot")
        else:
            raise ValueError(f"{text!r}: expected '.' or '[' at {at + 1}")
    if not steps:
        raise ValueError("a field path cannot be empty")
    if steps[-1][0] == DESCEND:
        raise ValueError(f"{text!r}: ** must be followed by the field it finds")
    return tuple(steps)


def _check_path(value: str) -> str:
    parse_path(value)
    return value


FieldPath = Annotated[str, AfterValidator(_check_path)]


class MaskSettings(BaseModel):
    """What a route writes for ``type: mask``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    remove: tuple[FieldPath, ...] = ()
    """Fields taken out of the document (members dropped, array elements removed)."""
    mask: tuple[FieldPath, ...] = ()
    """Fields whose value is replaced by ``replacement`` (whatever the value: an object too)."""
    replacement: str | int | float | bool | None = "****"
    """What a masked field's value becomes (a JSON string, number, boolean or null)."""
    unless_scopes: tuple[str, ...] = ()
    """A consumer granted every one of these scopes gets the body untouched; everyone else
    (anonymous callers included) gets it masked. Empty: everyone gets it masked."""
    ignore_case: bool = False
    """Match member names without regard to case (``SSN`` and ``ssn``); off by default, as JSON
    names are case-sensitive."""
    max_body_size: Size = Field(default=1024 * 1024, gt=0)
    """The largest body the policy holds to mask (the route sends nothing before it is in)."""
    unreadable: Literal["refuse", "pass"] = "refuse"
    """A body that could not be checked: over ``max_body_size``, not valid JSON though declared
    JSON, or in a content or transfer coding Portico does not decode. ``refuse`` answers
    ``502 response-not-maskable`` so nothing leaks; ``pass`` sends it as it came."""
    non_json: Literal["refuse", "pass"] = "refuse"
    """A body whose Content-Type is not JSON (``application/json`` or any ``+json``), or that
    has none: refused (502) or sent as it came."""

    @model_validator(mode="after")
    def _some_field(self) -> MaskSettings:
        if not self.remove and not self.mask:
            raise ValueError("a mask needs fields to remove or mask")
        return self
