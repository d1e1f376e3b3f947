"""reports.render.format: the one number formatter and its one rule for NaN, None and inf."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reports.render.format import KINDS, format_number, number_or_text


@pytest.mark.parametrize("kind", [*KINDS, ".5f", "+.1%", ".3g", "d"])
def test_missing_and_infinite_read_the_same_in_every_format(kind: str) -> None:
    assert format_number(None, kind) == "n/a"
    assert format_number(math.nan, kind) == "n/a"
    assert format_number(np.float64("nan"), kind) == "n/a"
    assert format_number(math.inf, kind) == "inf"
    assert format_number(-math.inf, kind) == "-inf"


@pytest.mark.parametrize(
    ("value", "kind", "text"),
    [
        (0.1234, "percent", "12.34%"),
        (0.1234, "percent1", "12.3%"),
        (0.1234, ",.2%", "12.34%"),
        (12.5, ",.2%", "1,250.00%"),
        (0.05, "+.1%", "+5.0%"),
        (1234.5, "money", "1,234.50"),
        (12.0, "int", "12"),
        (11.6, "d", "12"),
        (0.00512345, "sig4", "0.005123"),
        (0.012, "sig4", "0.01200"),
        (0.03421, "pvalue", "0.0342"),
        (1.23456, "stat", "1.23"),
        (np.float64(0.5), "prob", "0.500"),
        (np.int64(7), "int", "7"),
    ],
)
def test_named_kinds_and_format_specs(value: float, kind: str, text: str) -> None:
    assert format_number(value, kind) == text


def test_signs_are_kept() -> None:
    assert format_number(-0.05, "percent") == "-5.00%"
    assert format_number(-0.05, "+.1%") == "-5.0%"
    assert format_number(-1.5, "stat") == "-1.50"
    assert format_number(-1e-9, "percent") == "-0.00%"  # a tiny loss still reads as one
    assert format_number(-1234.5, "money") == "-1,234.50"
    assert format_number(-2.6, "int") == "-3"


def test_what_is_not_a_number_is_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match=r"expected a number to format as 'stat', got 'high'"):
        format_number("high", "stat")
    with pytest.raises(ValueError, match=r"got \[1\.0\]"):
        format_number([1.0], "stat")
    with pytest.raises(ValueError, match=r"unknown format 'percentage'; use one of"):
        format_number(0.1, "percentage")
    assert number_or_text(None) == "n/a" and number_or_text(2) == 2.0
