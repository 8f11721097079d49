"""`aq dash` driven as a person drives it: the list, the moves, the filters, the logs and the
refresh, through Textual's headless pilot over a real queue (tests/ui/dash/pilot.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.coordinate import Coordinate
from textual.pilot import Pilot

from aq.core.lifecycle import Stage
from aq.store.queue import Queue
from aq.ui.dash.dialogs import Ask, Confirm
from aq.ui.dash.jobs import JobsScreen
from aq.ui.dash.logview import LogScreen
from aq.ui.dash.look import PRIORITY_STYLE, STAGE_STYLE
from aq.ui.dash.table import JobTable
from tests.helpers.cli import aq_env, run_aq
from tests.helpers.fleet import fleet_in
from tests.helpers.queue import stage_of, write_job
from tests.ui.dash.pilot import (
    WHO,
    drive,
    jobs,
    press,
    row_has,
    row_starts,
    screen_text,
    seed,
    select,
    shown,
    shows,
    until,
)

# --- the list --------------------------------------------------------------------------------


def test_the_list_numbers_every_job_and_colours_its_stage_and_priority(queue_root: Path) -> None:
    """Each job is a numbered row with its stage, priority, profile, title and status; the stage
    and the priority cells have their colours; the tabs count each stage."""
    seed(queue_root)
    write_job(queue_root, "omega", title="Omega is urgent", priority="critical")

    async def script(pilot: Pilot[None]) -> None:
        text = screen_text(pilot)
        header = next(line for line in text.splitlines() if " id " in line)
        assert header.split() == ["#", "id", "stage", "pri", "profile", "title", "status", "when"]
        assert await row_starts(pilot, "1", "alpha", "inbox", "med")
        assert await row_starts(pilot, "2", "omega", "inbox", "crit")
        assert await row_has(pilot, "alpha", "ready")
        assert await row_starts(pilot, "3", "beta", "review", "med", "qa")
        assert await row_has(pilot, "beta", "Beta waits for review")
        assert "0 all 1 inbox 2 2 building 0 3 review 1 4 testing 1 5 shipped 0 6 failed 1 " \
               "7 dead_letter 0" in " ".join(text.split())
        table = jobs(pilot).query_one(JobTable)
        for number, stage in ((0, Stage.INBOX), (2, Stage.REVIEW), (4, Stage.FAILED)):
            assert table.get_cell_at(Coordinate(number, 2)).style == STAGE_STYLE[stage]
        assert table.get_cell_at(Coordinate(1, 3)).style == PRIORITY_STYLE["critical"] != ""
        assert table.get_cell_at(Coordinate(0, 3)).style == PRIORITY_STYLE["medium"]
        assert "p Promote" in text and "S Ship" in text and "q Quit" in text and "? Help" in text

    drive(queue_root, script)


# --- moves -----------------------------------------------------------------------------------

def test_p_promotes_at_once_and_shift_s_ships_only_after_a_yes(queue_root: Path) -> None:
    """`p` on a review job moves it to testing; `S` asks first: `n` (or Escape) ships nothing,
    `y` ships, on disk and on screen."""
    seed(queue_root)

    async def script(pilot: Pilot[None]) -> None:
        await pilot.press("down")
        await press(pilot, "p")
        assert stage_of(queue_root, "beta") == "testing"
        assert await row_starts(pilot, "2", "beta", "testing")
        assert await shows(pilot, "promote beta: review -> testing")
        await select(pilot, "gamma")
        await press(pilot, "S")
        assert isinstance(pilot.app.screen, Confirm)
        assert await shows(pilot, "Ship job 3 (gamma), moving it to shipped?")
        await press(pilot, "n")
        await press(pilot, "S")
        await press(pilot, "escape")
        assert isinstance(pilot.app.screen, JobsScreen)
        assert stage_of(queue_root, "gamma") == "testing"
        assert Queue(queue_root).read_events("gamma") == []
        await press(pilot, "S")
        await press(pilot, "y")
        assert stage_of(queue_root, "gamma") == "shipped"
        assert await row_starts(pilot, "3", "gamma", "shipped")
        event = Queue(queue_root).read_events("gamma")[-1]
        assert (event["action"], event["by"], event["from"], event["to"]) == \
            ("ship", WHO, "testing", "shipped")

    drive(queue_root, script)


def test_a_move_the_lifecycle_refuses_shows_its_reason_and_moves_nothing(queue_root: Path) -> None:
    """`S` on an inbox job shows the lifecycle's refusal on screen, asks nothing, and the job
    stays in the inbox."""
    seed(queue_root)

    async def script(pilot: Pilot[None]) -> None:
        await press(pilot, "S")
        assert isinstance(pilot.app.screen, JobsScreen)
        assert await shows(pilot, "cannot ship alpha: it is in inbox; from inbox a person may: cancel")
        assert stage_of(queue_root, "alpha") == "inbox"
        await select(pilot, "delta")
        await press(pilot, "p")
        assert await shows(
            pilot, "cannot promote delta: it is in failed; from failed a person may: requeue")
        assert stage_of(queue_root, "delta") == "failed"
        assert Queue(queue_root).read_events("alpha") == []

    drive(queue_root, script)


def test_x_asks_why_refuses_an_empty_reason_and_rejects_with_the_reason_given(queue_root: Path) -> None:
    """`x` opens a dialog for the reason; an empty one is refused; the reason given is the event's why."""
    seed(queue_root)

    async def script(pilot: Pilot[None]) -> None:
        await press(pilot, "x")  # alpha, in the inbox: refused before any question
        assert isinstance(pilot.app.screen, JobsScreen)
        assert await shows(pilot, "cannot reject alpha: it is in inbox")
        await select(pilot, "beta")
        await press(pilot, "x")
        assert isinstance(pilot.app.screen, Ask)
        assert await shows(pilot, "Reject job 2 (beta), moving it to failed: why?")
        await press(pilot, "enter")
        assert isinstance(pilot.app.screen, Ask)
        assert await shows(pilot, "a reason is needed")
        await pilot.press(*"the tests lie")
        await press(pilot, "enter")
        assert stage_of(queue_root, "beta") == "failed"
        event = Queue(queue_root).read_events("beta")[-1]
        assert (event["action"], event["why"], event["by"]) == ("reject", "the tests lie", WHO)
        assert await row_starts(pilot, "3", "beta", "failed")  # failed jobs list after testing
        assert await row_has(pilot, "beta", "the tests lie")

    drive(queue_root, script)


def test_escape_in_the_reason_dialog_rejects_nothing(queue_root: Path) -> None:
    """Escape out of the reject dialog leaves the job where it was."""
    seed(queue_root)

    async def script(pilot: Pilot[None]) -> None:
        await select(pilot, "gamma")
        await press(pilot, "x")
        await pilot.press(*"maybe")
        await press(pilot, "escape")
        assert isinstance(pilot.app.screen, JobsScreen)
        assert stage_of(queue_root, "gamma") == "testing"

    drive(queue_root, script)


def test_r_requeues_a_failed_job(queue_root: Path) -> None:
    """`r` on a failed job puts it back in the inbox."""
    seed(queue_root)

    async def script(pilot: Pilot[None]) -> None:
        await select(pilot, "delta")
        await press(pilot, "r")
        assert stage_of(queue_root, "delta") == "inbox"
        assert await row_starts(pilot, "2", "delta", "inbox")  # numbered in `aq ls` order
        assert await shows(pilot, "requeue delta: failed -> inbox")

    drive(queue_root, script)


def test_c_cancels_only_after_a_yes(queue_root: Path) -> None:
    """`c` asks first: `n` keeps the job; `y` moves it to failed with the reason canceled."""
    seed(queue_root)

    async def script(pilot: Pilot[None]) -> None:
        await press(pilot, "c")
        assert isinstance(pilot.app.screen, Confirm)
        assert await shows(pilot, "Cancel job 1 (alpha)")
        await press(pilot, "p")  # the list's keys do nothing while the question is open
        await press(pilot, "n")
        assert stage_of(queue_root, "alpha") == "inbox"
        await press(pilot, "c")
        await press(pilot, "y")
        assert stage_of(queue_root, "alpha") == "failed"
        event = Queue(queue_root).read_events("alpha")[-1]
        assert (event["action"], event["why"]) == ("cancel", "canceled")

    drive(queue_root, script)


def test_h_halts_with_a_reason_and_h_again_resumes_after_a_yes(queue_root: Path) -> None:
    """`h` asks a reason and writes queue/HALT; `h` again asks to resume and removes it on `y`."""
    seed(queue_root)
    halt_file = queue_root / "queue" / "HALT"

    async def script(pilot: Pilot[None]) -> None:
        await press(pilot, "h")
        assert isinstance(pilot.app.screen, Ask)
        await pilot.press(*"deploy freeze")
        await press(pilot, "enter")
        assert halt_file.read_text().splitlines()[0] == "deploy freeze"
        assert await shows(pilot, "HALTED: deploy freeze")
        assert await row_has(pilot, "alpha", "waits: ")  # a halted queue holds the inbox back
        await press(pilot, "h")
        assert isinstance(pilot.app.screen, Confirm)
        await press(pilot, "n")
        assert halt_file.exists()
        await press(pilot, "h")
        await press(pilot, "y")
        assert not halt_file.exists()
        assert await until(pilot, lambda: "HALTED" not in screen_text(pilot))
        assert await row_has(pilot, "alpha", "ready")

    drive(queue_root, script)


# --- filters ---------------------------------------------------------------------------------

def test_number_keys_tab_and_shift_tab_pick_the_stage_shown(queue_root: Path) -> None:
    """`1`-`7` show one stage (the same key again, or `0`, shows all); Tab (and `s`) steps to the
    next stage, Shift+Tab to the one before; numbers never change."""
    seed(queue_root)

    async def script(pilot: Pilot[None]) -> None:
        assert len(shown(pilot)) == 4
        await press(pilot, "4")
        assert shown(pilot) == [(3, "gamma")]
        assert await row_starts(pilot, "3", "gamma", "testing")
        await press(pilot, "4")
        assert len(shown(pilot)) == 4
        await press(pilot, "6")
        assert shown(pilot) == [(4, "delta")]
        await press(pilot, "0")
        assert len(shown(pilot)) == 4
        await press(pilot, "tab")
        assert shown(pilot) == [(1, "alpha")]
        await press(pilot, "tab", "s")  # building (none), review
        assert shown(pilot) == [(2, "beta")]
        await press(pilot, "shift+tab", "shift+tab", "shift+tab")  # building, inbox, all
        assert len(shown(pilot)) == 4
        await press(pilot, "shift+tab")  # round to dead_letter
        assert shown(pilot) == []
        assert jobs(pilot).filters.stage is Stage.DEAD_LETTER

    drive(queue_root, script)


def test_profile_and_text_filters_narrow_the_rows_and_escape_clears_them(queue_root: Path) -> None:
    """`f` cycles the profiles in use; `/` narrows the list as the text is typed (id or title)
    and Enter keeps it; an action takes the row shown; Escape clears the filters."""
    seed(queue_root)

    async def script(pilot: Pilot[None]) -> None:
        await press(pilot, "f")
        assert shown(pilot) == [(4, "delta")]  # profiles in use, sorted: developer, qa
        await press(pilot, "f")
        assert shown(pilot) == [(2, "beta")]
        await press(pilot, "f")
        assert len(shown(pilot)) == 4
        await press(pilot, "slash")
        await pilot.press(*"PASS")
        await pilot.pause()
        assert shown(pilot) == [(3, "gamma")]  # before Enter
        await press(pilot, "enter")
        assert await row_starts(pilot, "3", "gamma", "testing")
        assert " alpha " not in screen_text(pilot)
        await press(pilot, "r")  # an action takes the row shown under the cursor
        assert await shows(pilot, "cannot requeue gamma")
        await press(pilot, "slash")
        await pilot.press(*"zzz")
        await press(pilot, "escape")  # Escape in the search line puts back what was there
        assert shown(pilot) == [(3, "gamma")]
        await press(pilot, "escape")
        assert len(shown(pilot)) == 4

    drive(queue_root, script)


# --- logs ------------------------------------------------------------------------------------

def _run_twice(queue_root: Path) -> None:
    """Job `ran`, run twice (requeued between): each attempt prints its own words."""
    counter = queue_root.parent / "count"
    write_job(queue_root, "ran", body=f'n=$(($(cat {counter} 2>/dev/null || echo 0) + 1)); '
              f'echo $n > {counter}; echo "words of attempt $n"; echo "a needle here"; '
              'echo plain; echo "another needle"')
    assert run_aq("run", "--once", cwd=queue_root).returncode == 0
    assert run_aq("reject", "ran", "--reason", "again", cwd=queue_root).returncode == 0
    assert run_aq("requeue", "ran", cwd=queue_root).returncode == 0
    assert run_aq("run", "--once", cwd=queue_root).returncode == 0
    assert stage_of(queue_root, "ran") == "review"


def test_the_log_viewer_picks_an_attempt_and_searches(queue_root: Path) -> None:
    """`l` shows the newest attempt's log (a job never run gets aq's one-line reason); `[` and
    `]` step through the attempts, `a` asks which; `/` finds lines, `n` goes to the next."""
    _run_twice(queue_root)
    write_job(queue_root, "fresh", title="Never run")

    async def script(pilot: Pilot[None]) -> None:
        await select(pilot, "fresh")
        await press(pilot, "l")
        assert await shows(pilot, "fresh has not been run yet (it is in inbox)")
        await select(pilot, "ran")
        await press(pilot, "l")
        assert isinstance(pilot.app.screen, LogScreen)
        assert await shows(pilot, "words of attempt 2", "ran  attempt 2 of 2  (finished)")
        await press(pilot, "left_square_bracket")
        assert await shows(pilot, "words of attempt 1", "attempt 1 of 2")
        await press(pilot, "left_square_bracket")
        assert await shows(pilot, "has attempts 1 to 2")
        await press(pilot, "a")
        assert isinstance(pilot.app.screen, Ask)
        await pilot.press("2")
        await press(pilot, "enter")
        assert await shows(pilot, "words of attempt 2", "attempt 2 of 2")
        await press(pilot, "slash")
        await pilot.press(*"NEEDLE")
        await press(pilot, "enter")
        assert await shows(pilot, "/NEEDLE: 1 of 2")
        await press(pilot, "n")
        assert await shows(pilot, "/NEEDLE: 2 of 2")
        await press(pilot, "n")
        assert await shows(pilot, "/NEEDLE: 1 of 2")
        await press(pilot, "escape")
        assert isinstance(pilot.app.screen, JobsScreen)

    drive(queue_root, script)


def test_a_running_job_shows_its_elapsed_time_and_last_log_line_and_its_log_follows(
        queue_root: Path) -> None:
    """A job running here shows how long it has run and its last log line in the list; its
    log grows on screen as the engine writes it, until the attempt ends."""
    from aq.infra.clock import utc_now

    gate = queue_root.parent / "gate"
    write_job(queue_root, "slow", body='echo first-words\nwhile [ ! -e "$DASH_GATE" ]; do sleep 0.05; '
              'done\necho last-words')
    worker = subprocess.Popen([sys.executable, "-m", "aq", "run", "--once"], cwd=queue_root,
                              env=aq_env({"DASH_GATE": str(gate)}), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        end = time.monotonic() + 30
        live = Queue(queue_root).running_dir() / "slow" / "1.log"
        while not (live.exists() and "first-words" in live.read_text()):
            assert time.monotonic() < end and worker.poll() is None, "the attempt did not start"
            time.sleep(0.05)

        async def script(pilot: Pilot[None]) -> None:
            assert await row_has(pilot, "slow", "attempt 1 · first-words")
            line = next(line for line in screen_text(pilot).splitlines() if " slow " in line)
            assert line.split()[-1][:-1].isdigit() and line.split()[-1][-1] in "smh"  # elapsed
            await press(pilot, "l")
            assert isinstance(pilot.app.screen, LogScreen)
            assert await shows(pilot, "first-words", "(following the running attempt)")
            assert "last-words" not in screen_text(pilot)
            gate.touch()
            assert await shows(pilot, "last-words")
            assert await shows(pilot, "attempt 1 ended; the job is in review", "(finished)")

        drive(queue_root, script, clock=utc_now)
        assert worker.wait(timeout=30) == 0
    finally:
        gate.touch()
        if worker.poll() is None:
            worker.kill()
            worker.wait()


# --- refresh ---------------------------------------------------------------------------------

def test_the_list_refreshes_with_changes_made_outside_the_dashboard(queue_root: Path) -> None:
    """Every `refresh` seconds the list is read again: a job dropped in and a halt from the CLI show."""
    seed(queue_root)

    async def script(pilot: Pilot[None]) -> None:
        write_job(queue_root, "epsilon", title="Dropped in by hand")
        assert await shows(pilot, "Dropped in by hand")
        assert run_aq("halt", "--reason", "lunch", cwd=queue_root).returncode == 0
        assert await shows(pilot, "HALTED: lunch")

    drive(queue_root, script, refresh=0.2)


@pytest.mark.slow
def test_a_refresh_fetches_what_another_clone_pushed_and_a_move_lands_on_the_remote(
        tmp_path: Path) -> None:
    """With a remote, a refresh fetches (a job another clone added shows), a move is pushed,
    and `w` shows the workers that beat on the remote, as `aq workers` does."""
    with fleet_in(tmp_path / "fleet", 2) as fleet:
        here, there = fleet.clones
        assert fleet.aq(there, "add", "--id", "ran", "--title", "Run there", "--body",
                        "echo hi").returncode == 0
        assert fleet.aq(there, "run", "--once").returncode == 0  # a worker there beats once
        listed = fleet.aq(here, "workers").stdout.split()

        async def script(pilot: Pilot[None]) -> None:
            added = fleet.aq(there, "add", "--id", "afar", "--title", "Added on another clone",
                             "--body", "echo hi")
            assert added.returncode == 0, added.stderr
            assert await shows(pilot, "Added on another clone")
            await select(pilot, "afar")
            await press(pilot, "c")
            await press(pilot, "y")
            assert fleet.stages_at()["afar"] == ["failed"]
            await press(pilot, "w")
            assert await shows(pilot, "workers: 1 seen on the remote, 0 running", listed[0],
                               "no jobs", "stopped")
            await press(pilot, "w")
            assert isinstance(pilot.app.screen, JobsScreen)

        drive(here, script, refresh=0.3, fetch=True)
