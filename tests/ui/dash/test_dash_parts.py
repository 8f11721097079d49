"""The dash's pure parts, without a screen: relative times, the column layout, the stage tabs
and the help's columns."""

from __future__ import annotations

from datetime import timedelta

import pytest

from aq.core.events import iso
from aq.core.lifecycle import STAGES, Stage
from aq.ui.dash.help import help_text
from aq.ui.dash.look import stage_tabs
from aq.ui.dash.rows import Row
from aq.ui.dash.table import GAP, layout, status_cell
from aq.ui.dash.times import ago, elapsed, retry_wait, short
from tests.helpers.queue import T0


@pytest.mark.parametrize(("seconds", "said"), [
    (0, "0s"), (59.9, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h"), (3660, "1h01m"),
    (86400, "1d"), (90000, "1d1h")])
def test_short_says_a_duration_in_its_two_coarsest_units(seconds: float, said: str) -> None:
    """Durations read as a person says them: seconds, minutes, hours and minutes, days and hours."""
    assert short(seconds) == said


def test_ago_says_past_and_future_times_relative_to_now() -> None:
    """A past time is "3m ago", a future one "in 4m", one within a second "just now"; no time
    (or one that cannot be read) is nothing."""
    assert ago(iso(T0 - timedelta(minutes=3)), T0) == "3m ago"
    assert ago(iso(T0 + timedelta(minutes=4)), T0) == "in 4m"
    assert ago(iso(T0 + timedelta(milliseconds=300)), T0) == "just now"
    assert ago(None, T0) == "" and ago("yesterday", T0) == ""
    assert elapsed(iso(T0 - timedelta(seconds=75)), T0) == "1m"


def test_retry_wait_turns_the_schedulers_timestamps_into_a_wait() -> None:
    """Both ways the scheduler says a retry waits become "retry in 4m"; other reasons are left."""
    assert retry_wait("retry not before 2026-01-01T12:04:00.123456Z (in 240s)") == "retry in 4m"
    assert retry_wait("retry waits its backoff (75s more)") == "retry in 1m"
    assert retry_wait("waits for dep beta (review)") is None


def _row(number: int, title: str, status: str, tail: str = "") -> Row:
    return Row(number, f"job-{number}", STAGES[number % len(STAGES)], "high", "qa", title, status,
               "12m ago", tail)


ROWS = [_row(1, "A title that goes on and on for quite a while, longer than most", "ready"),
        _row(2, "Short", "waits: needs capability docker>=24 that this worker lacks"),
        _row(3, "Building", "w1@host, attempt 2, $0.42 so far", "compiling module 7 of 12…")]


@pytest.mark.parametrize("width", [60, 79, 100, 119, 159, 199])
def test_the_columns_fit_the_width_and_the_status_is_whole_when_it_can_be(width: int) -> None:
    """At any width the columns (with their gaps) fit; every status is whole when the width holds
    it; the title takes what is left; a running attempt's last line gets room last."""
    columns = layout(ROWS, width)
    assert sum(column.width + GAP for column in columns) <= width
    widths = {column.name: column.width for column in columns}
    fixed = width - widths["title"] - widths["status"]
    if width - fixed >= max(len(row.status) for row in ROWS):
        assert widths["status"] >= max(len(row.status) for row in ROWS)
    assert widths["title"] <= max(len(row.title) for row in ROWS)
    assert ("profile" in widths) == (width >= 100)
    if width >= 199:
        assert widths["status"] == max(len(status_cell(row)) for row in ROWS)


def test_the_stage_tabs_fit_80_columns_and_name_every_stage_when_they_can() -> None:
    """With two-digit counts the tabs fit 78 cells with short names, at 160 with full names; the
    stage shown is marked."""
    counts = {stage: 10 + number for number, stage in enumerate(STAGES)}
    narrow = stage_tabs(counts, Stage.REVIEW, 78)
    assert len(narrow.plain) <= 78 and "3 rev 12" in narrow.plain and "7 dead 16" in narrow.plain
    wide = stage_tabs(counts, None, 158)
    assert "7 dead_letter 16" in wide.plain and wide.plain.startswith(" 0 all 1 inbox 10")
    assert [span.style for span in narrow.spans if "reverse" in str(span.style)] == \
        ["bold magenta reverse"]


def test_the_help_lays_its_keys_out_in_columns_that_fit() -> None:
    """Thirty keys fit 76 cells in two columns, read down each column."""
    entries = [(f"k{number}", f"does thing number {number}") for number in range(30)]
    lines = help_text(entries, 76).plain.splitlines()
    assert len(lines) == 15 and all(len(line) <= 76 for line in lines)
    assert lines[0].split()[:1] == ["k0"] and "k15" in lines[0]
