"""Which JSON Schema library the ``validation`` policy uses: jsonschema-rs, fastjsonschema and
jsonschema on the same schema and bodies, in one run.

The schema is a realistic order (a customer, an address, 20 line items with patterns, enums,
ranges and formats); the valid body is 2 KB of JSON, the invalid one the same with five
errors spread through it. Each library validates the already-parsed value (what the policy
hands it); formats are checked by all three. For each, in microseconds per body: ``valid``
(the yes/no answer on a valid body), ``invalid, all errors`` (every error listed, as the policy
answers) and, for fastjsonschema, which stops at the first error and cannot list them all,
``invalid, first error``. The ratio is each against jsonschema-rs.

Also, for scale: what ``json.loads`` of the body costs, and the policy's own reading of it
(``parse_json``: duplicate keys, limits), so the validator's share of a request is visible.

    .venv/bin/python bench/validators.py [--rounds 7]

openapi-core is not measured: it validates with jsonschema (measured here) underneath, after
its own request unmarshalling, so it can only be slower than jsonschema.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import timeit
from collections.abc import Callable
from typing import Any

import fastjsonschema
import jsonschema
import jsonschema_rs

sys.path.insert(0, "src")
from portico.policies.validation.jsonbody import JsonLimits, parse_json

ITEM = {
    "type": "object",
    "required": ["sku", "qty", "unit_price"],
    "additionalProperties": False,
    "properties": {
        "sku": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{4}$"},
        "qty": {"type": "integer", "minimum": 1, "maximum": 1000},
        "unit_price": {"type": "number", "exclusiveMinimum": 0},
        "currency": {"enum": ["EUR", "USD", "GBP"]},
        "note": {"type": ["string", "null"], "maxLength": 200},
    },
}
ADDRESS = {
    "type": "object",
    "required": ["street", "city", "country"],
    "properties": {
        "street": {"type": "string", "minLength": 1},
        "city": {"type": "string", "minLength": 1},
        "postcode": {"type": "string", "pattern": "^[0-9A-Z -]{3,10}$"},
        "country": {"type": "string", "pattern": "^[A-Z]{2}$"},
    },
}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "customer", "items", "created_at"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "customer": {
            "type": "object",
            "required": ["name", "email"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 100},
                "email": {"type": "string", "format": "email"},
                "address": {"$ref": "#/definitions/Address"},
            },
        },
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 100,
            "items": {"$ref": "#/definitions/Item"},
        },
        "created_at": {"type": "string", "format": "date-time"},
        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "express": {"type": "boolean"},
    },
    "definitions": {"Item": ITEM, "Address": ADDRESS},
}

VALID: dict[str, Any] = {
    "id": "3f2c9b0e-1d7a-4c8e-9f60-b1a2c3d4e5f6",
    "customer": {
        "name": "Acme Trading",
        "email": "orders@acme.example",
        "address": {"street": "1 Quay St", "city": "Lyon", "postcode": "69002", "country": "FR"},
    },
    "items": [
        {
            "sku": f"AB-{1000 + i}",
            "qty": 1 + i,
            "unit_price": 9.5 + i,
            "currency": "EUR",
            "note": None,
        }
        for i in range(20)
    ],
    "created_at": "2026-12-02T17:00:00Z",
    "tags": ["b2b", "priority"],
    "express": False,
}
INVALID = copy.deepcopy(VALID)
INVALID["customer"]["email"] = 42
INVALID["items"][3]["qty"] = 0
INVALID["items"][11]["sku"] = "ab-1"
INVALID["items"][17]["currency"] = "JPY"
INVALID["created_at"] = "yesterday"


def candidates() -> dict[str, dict[str, Callable[[], object]]]:
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", **SCHEMA}
    rs = jsonschema_rs.validator_for(draft7, validate_formats=True)
    fast = fastjsonschema.compile(draft7)
    py = jsonschema.Draft7Validator(
        draft7, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )

    def fast_first() -> object:
        try:
            fast(INVALID)
        except fastjsonschema.JsonSchemaValueException as exc:
            return exc.message
        raise AssertionError("fastjsonschema accepted the invalid body")

    assert rs.is_valid(VALID) and not rs.is_valid(INVALID)
    assert len(list(rs.iter_errors(INVALID))) == 5
    assert py.is_valid(VALID) and len(list(py.iter_errors(INVALID))) == 5
    fast(VALID)
    return {
        "jsonschema-rs": {
            "valid": lambda: rs.is_valid(VALID),
            "invalid, all errors": lambda: list(rs.iter_errors(INVALID)),
        },
        "fastjsonschema": {
            "valid": lambda: fast(VALID),
            "invalid, first error": fast_first,
        },
        "jsonschema": {
            "valid": lambda: py.is_valid(VALID),
            "invalid, all errors": lambda: list(py.iter_errors(INVALID)),
        },
    }


def measure(
    cases: dict[tuple[str, str], Callable[[], object]], rounds: int
) -> dict[tuple[str, str], list[float]]:
    """Microseconds per call of each case, one figure per round: the cases interleaved round by
    round (the machine is shared, so its load falls on all of them alike), each about 0.2 s."""
    timers = {name: timeit.Timer(fn) for name, fn in cases.items()}
    numbers = {name: timer.autorange()[0] for name, timer in timers.items()}
    out: dict[tuple[str, str], list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, timer in timers.items():
            out[name].append(timer.timeit(numbers[name]) / numbers[name] * 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    rounds = parser.parse_args().rounds
    body = json.dumps(VALID).encode()
    limits = JsonLimits(32, 10_000, 100_000)
    print(
        f"Python {platform.python_version()}, jsonschema-rs {_version('jsonschema-rs')}, "
        f"fastjsonschema {_version('fastjsonschema')}, jsonschema {_version('jsonschema')}"
    )
    print(f"valid body {len(body)} bytes; invalid body: the same with 5 errors; {rounds} rounds\n")
    cases = {
        (library, case): fn
        for library, by_case in candidates().items()
        for case, fn in by_case.items()
    }
    cases[("json.loads", "")] = lambda: json.loads(body)
    cases[("parse_json", "")] = lambda: parse_json(body, limits)
    figures = measure(cases, rounds)
    median = {key: statistics.median(values) for key, values in figures.items()}
    print("| library | case | µs per body, median (min-max) | x jsonschema-rs |")
    print("| --- | --- | --- | --- |")
    for (library, case), values in figures.items():
        if not case:
            continue
        reference = ("jsonschema-rs", "valid" if case == "valid" else "invalid, all errors")
        ratio = median[(library, case)] / median[reference]
        print(
            f"| {library} | {case} | {median[(library, case)]:.1f} "
            f"({min(values):.1f}-{max(values):.1f}) | {ratio:.1f} |"
        )
    print()
    print("| reading the body | µs per body, median |")
    print("| --- | --- |")
    print(f"| json.loads | {median[('json.loads', '')]:.1f} |")
    print(f"| parse_json (UTF-8, duplicate keys, NaN, limits) | {median[('parse_json', '')]:.1f} |")


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
