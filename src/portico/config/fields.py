"""The value types every section of ``portico.yaml`` shares: durations with units, sizes,
header names, names, address networks, and the base of every section's model (unknown keys are
errors, values immutable)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)

from portico.core.net import parse_network

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}
MAX_WORKERS = 256
"""The most gateway processes ``gateway.workers`` may ask for."""
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
"""What a name (of a route, service, tenant, consumer, provider) may be made of."""
CONFIG_DIR = "config_dir"
"""The validation context's key for the directory of the config file: the file references it
holds (``services.<name>.openapi``) are relative to it."""
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _parse_duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 2s or 1m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError("expected a duration such as 500ms, 2s or 1m")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def _parse_size(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512KiB, 10MiB or a number of bytes")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    else:
        raise ValueError("expected a size such as 512KiB, 10MiB or a number of bytes")
    if size < 0:
        raise ValueError("a size cannot be negative")
    return size


def parse_workers_setting(value: Any) -> int | str:
    # One message for both forms, rather than one per member of the union.
    if value == "auto" or (
        isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_WORKERS
    ):
        return value  # type: ignore[no-any-return]
    raise ValueError(f"expected a number of processes from 1 to {MAX_WORKERS}, or auto")


def _check_header_name(name: str) -> str:
    if not _HEADER_NAME.match(name):
        raise ValueError(f"{name!r} is not a valid HTTP header name")
    return name


Duration = Annotated[float, BeforeValidator(_parse_duration)]
Size = Annotated[int, BeforeValidator(_parse_size)]
HeaderName = Annotated[str, AfterValidator(_check_header_name)]


class Model(BaseModel):
    """Base for every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_cidr(cidr: str) -> str:
    try:
        parse_network(cidr)
    except ValueError as exc:
        raise ValueError(f"{cidr!r} is not an IP address or network") from exc
    return cidr


CIDR = Annotated[str, AfterValidator(_check_cidr)]


class IPRules(Model):
    """Allow and deny lists of addresses and networks (IPv4 and IPv6). Deny wins."""

    allow: tuple[CIDR, ...] = ()
    deny: tuple[CIDR, ...] = ()


Name = Annotated[str, Field(pattern=NAME_PATTERN)]
