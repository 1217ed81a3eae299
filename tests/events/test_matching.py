"""Type filters and payload filters: what matches, what does not, and the mistakes a filter
can hold, each reported."""

from __future__ import annotations

from typing import Any

import pytest

from portico.events.matching import FilterError, compile_filter, type_matches

ORDER = {
    "type": "order.created",
    "data": {
        "total": 120.5,
        "country": "FR",
        "paid": True,
        "count": 1,
        "tags": ["vip", "eu"],
        "customer": {"email": "a@example.com"},
        "items": [{"sku": "A-1"}],
    },
}


@pytest.mark.parametrize(
    ("filters", "kind", "expected"),
    [
        (["*"], "order.created", True),
        (["order.*"], "order.created", True),
        (["order.*"], "order", False),
        (["order.*"], "orders.created", False),
        (["order.created"], "order.created.v2", False),
        (["invoice.paid", "order.created"], "order.created", True),
    ],
)
def test_type_filters(filters: list[str], kind: str, expected: bool) -> None:
    assert type_matches(filters, kind) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"data.total": {"gte": 100}}, True),
        ({"data.total": {"gt": 120.5}}, False),
        ({"data.total": {"lt": 200, "gt": 100}}, True),
        ({"data.country": {"in": ["FR", "DE"]}}, True),
        ({"data.country": {"nin": ["FR"]}}, False),
        ({"data.country": "FR", "type": "order.created"}, True),
        ({"data.paid": True}, True),
        ({"data.count": True}, False),  # JSON true is not 1
        ({"data.paid": 1}, False),
        ({"data.missing": {"exists": False}}, True),
        ({"data.missing": {"ne": "x"}}, True),
        ({"data.missing": {"gte": 0}}, False),
        ({"data.total": {"gte": "100"}}, False),  # no string/number comparison
        ({"data.tags": {"contains": "vip"}}, True),
        ({"data.customer.email": {"prefix": "a@"}}, True),
        ({"data.items.0.sku": "A-1"}, True),
        ({"data.items.5.sku": {"exists": True}}, False),
        ({"data.customer": {"eq": {"email": "a@example.com"}}}, True),
    ],
)
def test_payload_filters(source: dict[str, Any], expected: bool) -> None:
    assert compile_filter(source).matches(ORDER) is expected


def test_every_mistake_of_a_filter_is_reported() -> None:
    with pytest.raises(FilterError) as refused:
        compile_filter(
            {
                "data.a": {"between": [1, 2]},
                "data.b": {"in": "FR"},
                "data..c": 1,
                "data.d": {"exists": "yes"},
                "data.e": {"gt": [1]},
            }
        )
    paths = {path for path, _ in refused.value.problems}
    assert paths == {
        ("data.a", "between"),
        ("data.b", "in"),
        ("data..c",),
        ("data.d", "exists"),
        ("data.e", "gt"),
    }
    with pytest.raises(FilterError):
        compile_filter(["data.a"])
