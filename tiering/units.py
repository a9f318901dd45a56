"""Sizes ("64MiB") and durations ("7d") as the configuration accepts them."""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
    "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4,
}
_DURATION_UNITS_MS = {
    "": 1, "ms": 1, "s": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000,
    "d": 86_400_000, "w": 7 * 86_400_000,
}
_QUANTITY = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: object) -> int:
    """Bytes from an integer or a string such as "16MiB", "1.5 GiB" or "4096"."""
    return _parse(value, _SIZE_UNITS, "a size in bytes or a string like \"64MiB\"")


def parse_duration_ms(value: object) -> int:
    """Milliseconds from an integer (ms) or a string such as "500ms", "30s", "7d"."""
    return _parse(value, _DURATION_UNITS_MS, "a duration in ms or a string like \"7d\"")


def _parse(value: object, units: dict[str, int], expected: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected {expected}, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _QUANTITY.match(value)
        if match and match.group(2).lower() in units:
            number = float(match.group(1)) * units[match.group(2).lower()]
            if number != int(number):
                raise ValueError(f"expected a whole number of units, got {value!r}")
            return int(number)
    raise ValueError(f"expected {expected}, got {value!r}")


def format_bytes(n: int) -> str:
    """Human-readable bytes for tables and messages ("1.5 GiB")."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
