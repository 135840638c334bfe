"""Kubernetes-style quantities and durations.

CPU is carried as integer millicores and memory as integer bytes, the way the HPA's
``MilliValue()``/``Value()`` see them; durations are float seconds.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# apimachinery resource.Quantity suffixes (binary and decimal SI).
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)([a-zA-Z]*)$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_quantity(value: str | int | float) -> Decimal:
    """A Kubernetes quantity (``500m``, ``3``, ``4Gi``, ``1.5``) as an exact Decimal."""
    if isinstance(value, bool):
        raise ValueError(f"expected a quantity such as 500m, 3 or 4Gi, got {value!r}")
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _QUANTITY.match(value.strip())
    if not match:
        raise ValueError(f"expected a quantity such as 500m, 3 or 4Gi, got {value!r}")
    number, suffix = match.groups()
    try:
        amount = Decimal(number)
    except InvalidOperation as err:  # pragma: no cover - the regex admits only numbers
        raise ValueError(f"not a number: {number!r}") from err
    if suffix in _BINARY:
        return amount * _BINARY[suffix]
    if suffix in _DECIMAL:
        return amount * _DECIMAL[suffix]
    allowed = ", ".join(s for s in (*_DECIMAL, *_BINARY) if s)
    raise ValueError(f"unknown quantity suffix {suffix!r} in {value!r}; allowed: {allowed}")


def milli(value: str | int | float) -> int:
    """A quantity in milli-units, rounded up as ``Quantity.MilliValue()`` does."""
    scaled = parse_quantity(value) * 1000
    return int(scaled.to_integral_value(rounding="ROUND_CEILING"))


def cpu_millis(value: str | int | float) -> int:
    """CPU as millicores: ``3`` -> 3000, ``500m`` -> 500."""
    return milli(value)


def memory_bytes(value: str | int | float) -> int:
    """Memory as bytes: ``4Gi`` -> 4294967296, ``512M`` -> 512000000."""
    return int(parse_quantity(value).to_integral_value(rounding="ROUND_CEILING"))


def parse_duration(value: str | int | float) -> float:
    """A duration in seconds: ``90s``, ``15m``, ``1h30m``, ``250ms``; a bare number is seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 90s, 15m or 1h, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value!r}")
        return float(value)
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if seconds < 0:
            raise ValueError(f"a duration cannot be negative, got {value!r}")
        return seconds
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNIT[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"expected a duration such as 90s, 15m, 1h or 1h30m, got {value!r}")
    return total


def format_duration(seconds: float) -> str:
    """The shortest of ``45s``, ``15m``, ``2h``, or ``90.5s`` that reads back to ``seconds``."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds}s"
