"""The dash's keys as lazygit and k9s users expect them: `?`, Enter, j/k/g/G, marks, keys typed
ahead, times relative to now, columns that fit, the workers view, and the refusal without a
terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from textual.binding import Binding
from textual.pilot import Pilot
from textual.widgets import Static

from aq.core.events import parse_iso
from aq.store.queue import Queue
from aq.ui.dash.app import DashApp
from aq.ui.dash.detail import DetailPane
from aq.ui.dash.dialogs import Ask, Confirm
from aq.ui.dash.help import HelpScreen
from aq.ui.dash.jobs import JobsScreen
from aq.ui.dash.table import JobTable
from aq.ui.dash.workers import WorkersScreen
from tests.helpers.cli import aq_env, run_aq
from tests.helpers.queue import T0, stage_of, write_job
from tests.ui.dash.pilot import (
    burst,
    cursor,
    drive,
    jobs,
    press,
    row_has,
    screen_text,
    seed,
    select,
    shown,
    shows,
    until,
)


def _pane_text(pilot: Pilot[None]) -> str:
    return str(jobs(pilot).query_one("#detail-text", Static).content)


def test_question_mark_lists_every_key_of_the_list_from_its_bindings(queue_root: Path) -> None:
    """`?` at 80x24 shows every key bound on the list and the app, each with what it does, all
    on one screen; `?` again closes it; on the workers view it shows that view's keys, and
    Escape closes it."""
    seed(queue_root)

    async def script(pilot: Pilot[None]) -> None:
        await press(pilot, "question_mark")
        assert isinstance(pilot.app.screen, HelpScreen)
        text = screen_text(pilot)
        bound = [*JobsScreen.BINDINGS, *DashApp.BINDINGS]
        assert len(bound) > 25
        for binding in bound:
            assert isinstance(binding, Binding)
            for key in binding.key.split(","):
                shown_key = pilot.app.get_key_display(Binding(key, binding.action))
                if not key.isdigit():
                    assert f"{shown_key} " in text, f"{key} is not in the help:\n{text}"
            assert binding.description in text, f"{binding.description} is not in the help"
        assert "0-7" in text and "One stage (0: all)" in text
        await press(pilot, "question_mark")
        assert isinstance(pilot.app.screen, JobsScreen)
        await press(pilot, "w")  # the workers view has keys of its own
        await press(pilot, "question_mark")
        assert await shows(pilot, "Keys of the workers view", "w esc", "Jobs", "Reload")
        await press(pilot, "escape")
        assert isinstance(pilot.app.screen, WorkersScreen)

    drive(queue_root, script, size=(80, 24))


def test_j_k_g_shift_g_home_and_end_move_the_cursor(queue_root: Path) -> None:
    """j and k step down and up; g and Home go to the first job, G and End to the last."""
    seed(queue_root)

    async def script(pilot: Pilot[None]) -> None:
        assert cursor(pilot) == "alpha"
        await press(pilot, "j")
        assert cursor(pilot) == "beta"
        await press(pilot, "j", "j", "k")
        assert cursor(pilot) == "gamma"
        await press(pilot, "G")
        assert cursor(pilot) == "delta"
        await press(pilot, "g")
        assert cursor(pilot) == "alpha"
        await press(pilot, "end")
        assert cursor(pilot) == "delta"
        await press(pilot, "home")
        assert cursor(pilot) == "alpha"

    drive(queue_root, script)


def test_enter_opens_what_aq_show_prints_following_the_cursor_and_the_queue(queue_root: Path) -> None:
    """Enter opens the detail pane with exactly what `aq show` prints for the job under the
    cursor; it follows the cursor, shows a change made outside at the next refresh, and Enter
    or Escape closes it."""
    seed(queue_root)

    async def script(pilot: Pilot[None]) -> None:
        await select(pilot, "beta")
        await press(pilot, "enter")
        pane = jobs(pilot).query_one(DetailPane)
        assert pane.open
        printed = run_aq("show", "beta", cwd=queue_root).stdout.rstrip("\n")
        assert await until(pilot, lambda: _pane_text(pilot) == printed), _pane_text(pilot)
        await press(pilot, "j")
        assert await until(pilot, lambda: _pane_text(pilot).startswith(
            "gamma: Gamma passed its verify\n  stage:    testing"))
        assert run_aq("ship", "gamma", cwd=queue_root).returncode == 0
        assert await until(pilot, lambda: "stage:    shipped" in _pane_text(pilot)), \
            _pane_text(pilot)
        await press(pilot, "escape")
        assert not pane.open
        await press(pilot, "enter")
        assert pane.open
        await press(pilot, "enter")
        assert not pane.open

    drive(queue_root, script, refresh=0.2)


def test_space_marks_two_jobs_and_one_reason_rejects_both(queue_root: Path) -> None:
    """Space marks a job (or unmarks it) and steps down; `x` then asks once, naming both marked
    jobs, and rejects both with the reason given; the marks are gone after."""
    seed(queue_root)
    write_job(queue_root, "zeta", stage="review", title="Zeta waits too")  # row 3, after beta

    async def script(pilot: Pilot[None]) -> None:
        await select(pilot, "beta")
        await press(pilot, "space")
        assert cursor(pilot) == "zeta"
        await press(pilot, "space", "space")  # zeta, gamma
        assert cursor(pilot) == "delta"
        await press(pilot, "k", "space")  # gamma again: unmarked
        assert jobs(pilot).marks == {"beta", "zeta"}
        assert await shows(pilot, "2 marked")
        assert await row_has(pilot, "beta", "*2")
        await press(pilot, "x")
        assert isinstance(pilot.app.screen, Ask)
        assert await shows(pilot, "Reject job 2 (beta), job 3 (zeta), moving them to failed")
        await pilot.press(*"both wrong")
        await press(pilot, "enter")
        assert stage_of(queue_root, "beta") == stage_of(queue_root, "zeta") == "failed"
        for job_id in ("beta", "zeta"):
            event = Queue(queue_root).read_events(job_id)[-1]
            assert (event["action"], event["why"]) == ("reject", "both wrong")
        assert stage_of(queue_root, "gamma") == "testing"
        assert jobs(pilot).marks == set()
        assert await shows(pilot, "reject: 2 of 2 moved to failed")

    drive(queue_root, script)


def test_marked_moves_ask_once_and_move_only_what_the_lifecycle_allows(queue_root: Path) -> None:
    """With marks, even `p` asks first, naming what it moves and what it leaves (in the
    lifecycle's words); `S` likewise: `n` moves nothing, `y` ships exactly the marked jobs it
    may; Escape clears the marks."""
    seed(queue_root)
    write_job(queue_root, "theta", stage="testing", title="Theta passed too")

    async def script(pilot: Pilot[None]) -> None:
        await press(pilot, "space", "space", "space")  # alpha, beta, gamma
        await press(pilot, "p")
        assert isinstance(pilot.app.screen, Confirm)
        assert await shows(pilot, "Promote job 2 (beta), moving it to testing",
                           "cannot promote alpha: it is in inbox")
        await press(pilot, "n")
        assert stage_of(queue_root, "beta") == "review"
        await press(pilot, "S")
        assert isinstance(pilot.app.screen, Confirm)
        assert await shows(pilot, "Ship job 2 (beta), job 3 (gamma), moving them to shipped?",
                           "cannot ship alpha: it is in inbox")
        await press(pilot, "n")
        assert stage_of(queue_root, "gamma") == "testing"
        await press(pilot, "S")
        await press(pilot, "y")
        assert [stage_of(queue_root, job) for job in ("alpha", "beta", "gamma", "theta")] == \
            ["inbox", "shipped", "shipped", "testing"]
        assert await shows(pilot, "ship: 2 of 2 moved to shipped")
        await press(pilot, "space")
        assert jobs(pilot).marks
        await press(pilot, "escape")
        assert jobs(pilot).marks == set()

    drive(queue_root, script)


def test_keys_typed_ahead_of_the_search_line_or_a_question_are_not_lost(queue_root: Path) -> None:
    """Keys that arrive together are taken in their order (cursor moves and marks); those typed
    before the search line or the reason dialog is drawn all land in it, none taken as a
    command (the text holds S, the ship key, and l, the log key)."""
    seed(queue_root)

    async def script(pilot: Pilot[None]) -> None:
        await burst(pilot, "j", " ", "j", " ")
        assert jobs(pilot).marks == {"beta", "delta"}
        await press(pilot, "escape")
        await burst(pilot, "/", *"PASSED", "enter")
        assert jobs(pilot).filters.text == "PASSED"
        assert shown(pilot) == [(3, "gamma")]
        assert isinstance(pilot.app.screen, JobsScreen)
        assert stage_of(queue_root, "gamma") == "testing"
        await press(pilot, "escape")
        await select(pilot, "beta")
        await burst(pilot, "x", *"too slow", "enter")
        assert stage_of(queue_root, "beta") == "failed"
        assert Queue(queue_root).read_events("beta")[-1]["why"] == "too slow"

    drive(queue_root, script)


def _fits(pilot: Pilot[None], width: int, statuses: list[str]) -> None:
    table = jobs(pilot).query_one(JobTable)
    assert table.max_scroll_x == 0 and not table.show_horizontal_scrollbar
    lines = screen_text(pilot).splitlines()
    assert all(len(line) <= width for line in lines)
    for status in statuses:
        assert any(status in line for line in lines), f"{status!r} is cut:\n" + "\n".join(lines)


def test_columns_fit_80_and_160_columns_cutting_the_title_never_the_status(queue_root: Path) -> None:
    """At 80 and 160 columns nothing scrolls sideways and every status is whole; at 80 a long
    title is cut (with …), at 160 it is whole."""
    seed(queue_root)
    title = "A rather long title that describes the job at some length, more than fits"
    write_job(queue_root, "waiter", title=title, deps=["no-such-job"], priority="low")
    # a job with no event is as old as its file: made 3m before the dash's clock (T0), not
    # now, or the width of "when" (`in 338d`, `in 337d23h`) and so the title's is the hour's
    made = (T0 - timedelta(minutes=3)).timestamp()
    for job in (queue_root / "queue").glob("*/*.md"):
        os.utime(job, (made, made))
    statuses = ["waits: dep no-such-job does not exist", "ready"]

    async def narrow(pilot: Pilot[None]) -> None:
        assert await row_has(pilot, "waiter", "3m ago")
        assert await row_has(pilot, "waiter", "A rather l…")
        _fits(pilot, 80, statuses)
        assert title not in screen_text(pilot)

    async def wide(pilot: Pilot[None]) -> None:
        assert await row_has(pilot, "waiter", title)
        _fits(pilot, 160, statuses)
        await press(pilot, "enter")  # the detail pane beside the list: still nothing cut
        assert jobs(pilot).query_one(DetailPane).open
        assert await row_has(pilot, "waiter", "A rather l…")
        _fits(pilot, 160, statuses)

    drive(queue_root, narrow, size=(80, 24))
    drive(queue_root, wide, size=(160, 40))


def test_times_are_relative_to_now(queue_root: Path) -> None:
    """A retry waiting for its backoff says when it runs ("in 4m"), in its status too, never as
    a raw timestamp; a job's row says how long ago it got where it is ("3m ago")."""
    write_job(queue_root, "flaky", body="exit 3", retry={"max": 1, "backoff": "4m"})
    assert run_aq("run", "--once", cwd=queue_root).returncode == 0
    assert run_aq("add", "--id", "newer", "--title", "Added by hand", "--body", "echo hi",
                  cwd=queue_root).returncode == 0
    finished = parse_iso(Queue(queue_root).resolve("flaky").state.moved_at or "")
    added = parse_iso(Queue(queue_root).read_events("newer")[0]["ts"])
    now = [finished]

    async def script(pilot: Pilot[None]) -> None:
        assert await row_has(pilot, "flaky", "waits: retry in 4m")
        flaky = next(line for line in screen_text(pilot).splitlines() if " flaky " in line)
        assert flaky.split()[-2:] == ["in", "4m"] and "T" not in flaky.split("flaky", 1)[1]
        now[0] = added + timedelta(minutes=3, seconds=5)
        assert await row_has(pilot, "newer", "3m ago")

    drive(queue_root, script, clock=lambda: now[0], refresh=0.2)


def test_w_shows_the_workers_view_and_says_why_it_is_empty(queue_root: Path) -> None:
    """`w` switches to the workers view; on a queue without a remote it says so in aq's words;
    `w` switches back."""
    seed(queue_root)

    async def script(pilot: Pilot[None]) -> None:
        await press(pilot, "w")
        assert isinstance(pilot.app.screen, WorkersScreen)
        assert await shows(pilot, "this queue has no git remote")
        await press(pilot, "w")
        assert isinstance(pilot.app.screen, JobsScreen)

    drive(queue_root, script)


def test_without_a_terminal_aq_dash_refuses_in_one_line(queue_root: Path) -> None:
    """`aq dash` with stdin from /dev/null and stdout to a pipe says in one line that it needs a
    terminal and exits with the usage error's code (2), writing no escape codes."""
    done = subprocess.run([sys.executable, "-m", "aq", "dash"], cwd=queue_root,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=aq_env(), timeout=60)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "aq: aq dash needs a terminal, and its stdin and stdout are not one: run it in a "
        "terminal, or use 'aq ls' or 'aq board --once' from a script"]
