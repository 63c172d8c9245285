from __future__ import annotations

import pytest

from familyc.spec.quantity import parse_count, parse_number
from familyc.units import format_count


@pytest.mark.parametrize("text, value", [
    (4096, 4096), (2.0e10, 20_000_000_000), ("1e9", 1_000_000_000), ("20B", 20_000_000_000),
    ("1.5T", 1_500_000_000_000), ("4M", 4_000_000), ("  8k ", 8000), ("1_000_000", 1_000_000),
    ("2.5e3", 2500), ("0.5K", 500), ("1G", 10**9),
])
def test_parse_count(text: object, value: int) -> None:
    assert parse_count(text) == value
    assert isinstance(parse_count(text), int)


@pytest.mark.parametrize("text, message", [
    ("20 billion", "not a quantity"), ("1.5", "whole number"), (1.5, "whole number"), ("-3B", "negative"),
    ("1e400", "absurdly large"), (10**40, "absurdly large"), (True, "boolean"), ([1], "number or a quantity"),
    ("1.0000000001K", "whole number"),
])
def test_parse_count_rejects(text: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_count(text)


def test_parse_number() -> None:
    assert parse_number("3e-4") == pytest.approx(3e-4)
    assert parse_number(1) == 1.0
    for bad in ("3e-4x", True, "nan", float("inf")):
        with pytest.raises(ValueError):
            parse_number(bad)


def test_format_count_round_trips_the_usual_sizes() -> None:
    assert format_count(20e9) == "20B"
    assert format_count(1_531_750_400) == "1.53B"
    assert format_count(4096) == "4,096"
    assert format_count(117_200_000_000) == "117.2B"
