"""The JSON body reader against the standard library's decoder: the same values, and the same
refusals with the same positions, whatever the whitespace around the value (it reads through the
C scanner directly, without ``JSONDecoder.decode``'s Python steps)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portico.policies.validation.jsonbody import JsonLimits, JsonRejected, parse_json

LIMITS = JsonLimits(max_depth=64, max_array_length=100_000, max_string_length=100_000)
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)
whitespace = st.text(alphabet=" \t\n\r", max_size=3)


@given(value=values, before=whitespace, after=whitespace)
@settings(max_examples=300, deadline=None)
def test_a_value_reads_as_the_standard_library_reads_it(
    value: Any, before: str, after: str
) -> None:
    body = (before + json.dumps(value) + after).encode()

    assert parse_json(body, LIMITS) == json.loads(body)


def _refusal(body: bytes) -> str:
    with pytest.raises(JsonRejected) as caught:
        parse_json(body, LIMITS)
    return caught.value.message


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"{} x",
        b'  {"a": 1}  ]',
        b'\n\n {"a": tru}',
        b'  {"a": "unterminated',
        b"[1, 2,]",
        b"\x0c{}",  # a form feed is not JSON whitespace
        b"{}\xc2\xa0".decode("utf-8").encode(),  # nor is a no-break space
    ],
)
def test_a_refusal_says_what_the_standard_library_says_where_it_says_it(body: bytes) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(body)
    error = expected.value

    assert _refusal(body) == (
        f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
    )


@given(text=st.text(alphabet=' \t\n\r{}[]",:0123456789.eE+-truefalsn\\ux', max_size=30))
@settings(max_examples=500, deadline=None)
def test_any_text_is_read_or_refused_as_the_standard_library_does(text: str) -> None:
    body = text.encode()
    try:
        expected = json.loads(body, parse_constant=lambda name: float("nan"))
    except (json.JSONDecodeError, RecursionError, ValueError):
        with pytest.raises(JsonRejected):
            parse_json(body, LIMITS)
        return
    if "NaN" in text or "Infinity" in text:
        return  # not JSON numbers: refused by the reader, tested with the policy
    try:
        got = parse_json(body, LIMITS)
    except JsonRejected as rejected:  # a key twice in one object
        assert "appears twice" in rejected.message
        return
    assert got == expected
