"""shared/units.py: durations and sizes as operators write them."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.units import parse_duration, parse_size
from tests.unit.fuzz import FUZZ

DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
SIZE_UNITS = {
    "": 1, "b": 1, "k": 1000, "kb": 1000, "ki": 1024, "kib": 1024,
    "m": 10**6, "mb": 10**6, "mi": 2**20, "mib": 2**20,
    "g": 10**9, "gb": 10**9, "gi": 2**30, "gib": 2**30,
}  # fmt: skip


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30s", 30.0),
        ("10m", 600.0),
        ("5d", 432000.0),
        ("2h", 7200.0),
        ("1w", 604800.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
        ("45", 45.0),
        (" 7 s ", 7.0),
        ("0", 0.0),
        ("0s", 0.0),
        (7, 7.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    result = parse_duration(value)
    assert result == seconds
    assert isinstance(result, float)


@pytest.mark.parametrize(
    "value", ["", "s", "5x", "-5s", "5 minutes", "1e3", ".5s", "5.s", "5s5", "m5", None, [5], b"5s"]
)
def test_parse_duration_refuses(value: object) -> None:
    message = f"{value!r} is not a duration such as '30s', '10m' or '5d'"
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, False])
def test_parse_duration_refuses_booleans(value: bool) -> None:
    with pytest.raises(ValueError, match=r"^a duration such as '30s', '10m' or '5d' is required$"):
        parse_duration(value)


@pytest.mark.parametrize("value", [-1, -0.5])
def test_parse_duration_refuses_negative_numbers(value: float) -> None:
    with pytest.raises(ValueError, match=r"is not a finite, non-negative duration$"):
        parse_duration(value)


def test_parse_duration_refuses_nan() -> None:
    # TOML has `nan`; a NaN timeout makes every deadline comparison false.
    with pytest.raises(ValueError, match="duration"):
        parse_duration(float("nan"))


@FUZZ
@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(DURATION_UNITS)))
def test_parse_duration_every_unit(number: int, unit: str) -> None:
    assert parse_duration(f"{number}{unit}") == number * DURATION_UNITS[unit]


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("25MiB", 26_214_400),
        ("10MB", 10_000_000),
        ("512KiB", 524_288),
        ("1g", 10**9),
        ("1GiB", 2**30),
        ("2k", 2000),
        ("3ki", 3072),
        ("100", 100),
        ("100b", 100),
        ("100B", 100),
        (" 5 kb ", 5000),
        ("0", 0),
        (1_048_576, 1_048_576),
        (0, 0),
    ],
)
def test_parse_size(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    "value", ["", "MB", "1.5MB", "-1", "10 TB", "10 MiBs", "10i", "1e6", "ten", None, 1.0, 1e6]
)
def test_parse_size_refuses(value: object) -> None:
    message = f"{value!r} is not a size such as '25MiB', '10MB' or 1048576"
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_size(value)


def test_parse_size_refuses_booleans_and_negatives() -> None:
    with pytest.raises(ValueError, match=r"^a size such as '25MiB' is required$"):
        parse_size(True)
    with pytest.raises(ValueError, match=r"^a size cannot be negative$"):
        parse_size(-1)


@FUZZ
@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from(sorted(SIZE_UNITS)),
    st.booleans(),
    st.booleans(),
)
def test_parse_size_every_unit_any_case(number: int, unit: str, upper: bool, space: bool) -> None:
    text = f"{number}{' ' if space else ''}{unit.upper() if upper else unit}"
    assert parse_size(text) == number * SIZE_UNITS[unit]
