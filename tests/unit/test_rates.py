"""shared/rates.py: the rates operators write."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.rates import Rate, parse_rate


@pytest.mark.parametrize(
    ("text", "limit", "period"),
    [
        ("600/m", 600, 60),
        ("20/s", 20, 1),
        ("5000/h", 5000, 3600),
        ("100/10m", 100, 600),
        (" 2.5 / s ", 2.5, 1),
        ("1/d", 1, 86400),
        ("50/500ms", 50, 0.5),
    ],
)
def test_rates_are_parsed(text: str, limit: float, period: float) -> None:
    assert parse_rate(text) == Rate(limit, period)


@pytest.mark.parametrize("text", ["", "600", "/m", "600/", "600/x", "-1/s", "0/s", "5/0s", "a/s"])
def test_bad_rates_are_refused_with_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError, match=r"rate such as|must be positive"):
        parse_rate(text)


def test_absurd_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="million"):
        parse_rate("1000000000/s")


def test_interval_and_default_burst() -> None:
    rate = parse_rate("20/s")
    assert rate.interval_ms == 50
    assert rate.per_second == 20
    assert rate.default_burst() == 2  # a tenth of a second's worth
    assert parse_rate("600/m").default_burst() == 1
    assert parse_rate("1/h").default_burst() == 1


@given(st.integers(1, 100_000), st.sampled_from(["s", "m", "h", "d"]))
def test_any_well_formed_rate_round_trips(limit: int, unit: str) -> None:
    rate = parse_rate(f"{limit}/{unit}")
    assert rate.limit == limit
    assert rate.per_second > 0
    assert parse_rate(str(rate)) == rate
