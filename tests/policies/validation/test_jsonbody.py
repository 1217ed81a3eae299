"""The JSON body reader against the standard library's decoder: the same values, and the same
refusals with the same positions, whatever the whitespace around the value (it reads through the
C scanner directly, without ``JSONDecoder.decode``'s Python steps)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portico.policies.validation.jsonbody import JsonLimits, JsonRejected, _read_fast, parse_json

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


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 1, "a": 2}',
        b'{"a": 1, "a": 1}',
        b'{"x": {"a": 1, "a": 2}}',
        b'[{"a": 1}, {"b": 2, "b": 3}]',
        b'{"url": "http://x:80/", "a": 1, "a": 2}',  # colons inside a string as well
        b'{"\\u0061": 1, "a": 2}',  # the same key, spelt two ways
    ],
)
def test_a_key_twice_in_one_object_is_refused_at_any_depth(body: bytes) -> None:
    assert "appears twice in one object" in _refusal(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"n": 123456789012345678901234567890}',
        b"[18446744073709551616, -9223372036854775809]",
        b"100000000000000000001",
    ],
)
def test_an_integer_past_64_bits_is_read_exactly(body: bytes) -> None:
    # A float would let 10**20 + 1 pass a `maximum: 1e20`.
    got = parse_json(body, LIMITS)

    assert repr(got) == repr(json.loads(body))


@pytest.mark.parametrize(
    "body",
    [b'"\\ud800"', b'{"a": "\\udc00x"}', b'["\\ud83d\\ude00", "\\u0000"]', b'{"a": -0, "b": -0.0}'],
)
def test_escapes_and_signed_zeros_read_as_the_standard_library_reads_them(body: bytes) -> None:
    assert repr(parse_json(body, LIMITS)) == repr(json.loads(body))


@pytest.mark.parametrize(
    ("body", "fast"),
    [
        (b'{"sku": "A-1001", "quantity": 2, "note": "leave at the door"}', True),
        (b'[{"a": [1, 2.5, {"b": null}]}, "x"]', True),
        (b'{"at": "12:00"}', False),  # a colon in a string: read again to rule out a key twice
        (b'{"a": 1, "a": 2}', False),
        (b"[1e300]", False),  # a float that large may have been an integer
    ],
)
def test_orjsons_reading_is_kept_only_when_it_is_the_standard_librarys(
    body: bytes, fast: bool
) -> None:
    read, value = _read_fast(body)

    assert read is fast
    if fast:
        assert repr(value) == repr(json.loads(body))
