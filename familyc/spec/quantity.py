"""Quantities as people write them in a spec: `20B` tokens, `2.0e10`, `1e9`, `3e-4`, `1_000_000`.

PyYAML (YAML 1.1) reads `2.0e10` as a float but `1e9` and `3e-4` as *strings*, because its
float pattern wants a dot. Rather than surprise users, quantity fields accept numbers and
numeric strings, and this module parses both, exactly (through Decimal, so `1.5B` is
1_500_000_000 and not 1_499_999_999.9999998).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

SUFFIXES = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
"""Decimal (SI) multipliers, as token counts are quoted in papers: 15T tokens, 8B parameters."""

_NUMBER = r"[+-]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9]+)?"
COUNT_PATTERN = rf"^\s*{_NUMBER}\s*[KkMmBbGgTt]?\s*$"
"""What a count written as a string must look like (shared with the JSON Schema)."""
NUMBER_PATTERN = rf"^\s*{_NUMBER}\s*$"

_COUNT_RE = re.compile(rf"^\s*(?P<num>{_NUMBER})\s*(?P<suffix>[KkMmBbGgTt]?)\s*$")


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text.replace("_", ""))
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{text!r} is not a finite number")
    return value


def parse_count(value: object, *, what: str = "value") -> int:
    """A whole, non-negative quantity: 20B, 2.0e10, "1e9", 4096, "1.5T"."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, not a boolean")
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str):
        match = _COUNT_RE.match(value)
        if not match:
            raise ValueError(f"{what} {value!r} is not a quantity like 20B, 2.0e10 or 4096")
        number = _decimal(match["num"])
        if len(match["num"]) > 64:
            raise ValueError(f"{what} {value!r} is not a plausible quantity")
        suffix = match["suffix"].upper()
        if suffix:
            number *= SUFFIXES[suffix]
    else:
        raise ValueError(f"{what} must be a number or a quantity like 20B")
    if not number.is_finite() or number.adjusted() > 30:
        raise ValueError(f"{what} {value!r} is absurdly large (more than 1e30)")
    if number != number.to_integral_value():
        raise ValueError(f"{what} {value!r} must be a whole number")
    result = int(number)
    if result < 0:
        raise ValueError(f"{what} {value!r} must not be negative")
    return result


def parse_number(value: object, *, what: str = "value") -> float:
    """A real number: 3e-4, "3e-4", 0.1, 1."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, not a boolean")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and re.match(NUMBER_PATTERN, value):
        if len(value) > 64:
            raise ValueError(f"{what} {value!r} is not a plausible number")
        number = float(_decimal(value.strip()))
    else:
        raise ValueError(f"{what} {value!r} is not a number")
    if number != number or abs(number) == float("inf"):
        raise ValueError(f"{what} {value!r} is not a finite number")
    return number
