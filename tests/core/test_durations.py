"""Durations, sizes and amounts the way a person writes them, and the errors for the rest."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aq.core.durations import MAX_DURATION, format_duration, parse_duration, parse_money, parse_size


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("90s", 90.0),
        ("45m", 2700.0),
        ("2h", 7200.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("1h30m15s", 5415.0),
        ("1.5h", 5400.0),
        ("500ms", 0.5),
        ("1d", 86400.0),
        ("1w", 604800.0),
        ("2H", 7200.0),
        ("  45m ", 2700.0),
        ("0s", 0.0),
        ("90", 90.0),
        ("2.5", 2.5),
        (90, 90.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_parse_duration_reads_what_people_write(written: object, seconds: float) -> None:
    """`90s`, `45m`, `2h`, `1h30m`, `1.5h`, `500ms` and bare numbers are read as seconds."""
    assert parse_duration(written) == seconds


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("5min", 300.0), ("5mins", 300.0), ("2hr", 7200.0), ("2hrs", 7200.0), ("10sec", 10.0), ("10secs", 10.0)],
)
def test_parse_duration_reads_spelled_units(written: str, seconds: float) -> None:
    """The longer unit spellings the parser lists (`min`, `hr`, `sec`, …) are read too."""
    assert parse_duration(written) == seconds


@pytest.mark.parametrize(
    "written",
    ["", "soon", "5x", "1h30", "-5m", "h", "m5", "5m-", "1.2.3h", -1, -0.5, True, None, [1], {"m": 5},
     # what YAML reads `.inf` and `.nan` as, and more than a century: no date a clock can reach
     float("inf"), float("nan"), "5300w", "99999999999d", "9" * 400, 10**20],
)
def test_parse_duration_refuses_the_rest(written: object) -> None:
    """Anything else is a ValueError naming the value and the forms expected."""
    with pytest.raises(ValueError) as caught:
        parse_duration(written)
    message = str(caught.value)
    assert repr(written) in message
    assert "a duration such as 90s, 45m, 2h or 1h30m" in message


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"),
        (5, "5s"),
        (5.5, "5.5s"),
        (45, "45s"),
        (60, "1m"),
        (90, "1m30s"),
        (720, "12m"),
        (3600, "1h"),
        (11100, "3h05m"),
        (47 * 3600, "47h"),
        (48 * 3600, "2d"),
        (52 * 3600, "2d4h"),
        (-3, "0s"),
    ],
)
def test_format_duration_is_the_short_form(seconds: float, shown: str) -> None:
    """Seconds are shown as the short form a person reads: `45s`, `12m`, `3h05m`, `2d4h`."""
    assert format_duration(seconds) == shown


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 30 * 86400))
def test_format_then_parse_keeps_the_shown_precision(seconds: int) -> None:
    """Parsing a formatted duration gives it back, to the unit the short form shows."""
    back = parse_duration(format_duration(seconds))
    if seconds < 3600:
        assert back == seconds
    elif seconds < 48 * 3600:
        assert back == seconds - seconds % 60
    else:
        assert back == seconds - seconds % 3600


@pytest.mark.parametrize(
    ("written", "count"),
    [
        ("500", 500),
        (500, 500),
        (1.9, 1),
        ("2M", 2_000_000),
        ("2m", 2_000_000),
        ("1.5k", 1500),
        ("100KB", 100_000),
        ("2 M", 2_000_000),
        ("5MiB", 5 * 1024**2),
        ("1GiB", 1024**3),
        ("1G", 10**9),
        ("1T", 10**12),
        ("10Ki", 10 * 1024),
    ],
)
def test_parse_size_reads_counts_and_byte_sizes(written: object, count: int) -> None:
    """Counts and sizes such as `2M`, `1.5k`, `100KB` and `5MiB` (binary only with `i`) are read."""
    assert parse_size(written) == count


@pytest.mark.parametrize("written", ["", "lots", "-5", "5X", "M", "5 MB extra", -1, -2.5, True, None, [5],
                                     float("inf"), float("nan"), "9" * 400, "2000000T", 10**30])
def test_parse_size_refuses_the_rest(written: object) -> None:
    """Anything else is a ValueError naming the value and the forms expected."""
    with pytest.raises(ValueError) as caught:
        parse_size(written)
    assert repr(written) in str(caught.value)
    assert "a count or size such as 500, 2M, 1.5k or 5MiB" in str(caught.value)


@pytest.mark.parametrize(("written", "dollars"), [(5, 5.0), (2.5, 2.5), ("2.50", 2.5), ("$5", 5.0), (" $0.75 ", 0.75)])
def test_parse_money_reads_dollars(written: object, dollars: float) -> None:
    """Amounts such as `5`, `2.50` and `$5` are read as dollars."""
    assert parse_money(written) == dollars


@pytest.mark.parametrize("written", ["five", "", "$", True, None, [5]])
def test_parse_money_refuses_the_rest(written: object) -> None:
    """Anything that is not an amount is a ValueError naming the value."""
    with pytest.raises(ValueError) as caught:
        parse_money(written)
    assert repr(written) in str(caught.value)
    assert "an amount of dollars such as 5 or 2.50" in str(caught.value)


def test_a_century_is_the_longest_duration_taken() -> None:
    assert parse_duration("5200w") == 5200 * 604800 <= MAX_DURATION
    assert parse_duration(MAX_DURATION) == MAX_DURATION
