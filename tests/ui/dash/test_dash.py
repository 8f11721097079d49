"""`aq dash` driven as a person drives it: Textual's headless pilot presses keys, and the test
reads the screen and the queue on disk."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from aq.store.queue import Queue
from aq.ui.dash.app import DashApp, remote_sync
from aq.ui.dash.dialogs import Ask, Confirm
from aq.ui.dash.jobs import JobsScreen
from aq.ui.dash.logview import LogScreen
from tests.helpers.cli import aq_env, run_aq
from tests.helpers.fleet import fleet_in
from tests.helpers.queue import T0, stage_of, write_job

WHO = "dash-tester@bench"
SIZE = (120, 40)
Script = Callable[[Pilot[None]], Awaitable[None]]


def seed(root: Path) -> None:
    """Rows 1-4: an inbox job, a review job, a testing job, a failed job (two with profiles)."""
    write_job(root, "alpha", title="Alpha waits in the inbox")
    write_job(root, "beta", stage="review", title="Beta waits for review", profile="qa")
    write_job(root, "gamma", stage="testing", title="Gamma passed its verify")
    write_job(root, "delta", stage="failed", title="Delta failed", profile="developer")


def drive(root: Path, script: Script, *, refresh: float = 60.0, fetch: bool = False) -> None:
    """Run the dashboard on the queue at `root` headless and play `script` against it; with
    `fetch`, each refresh first fetches from the queue's remote."""
    queue = Queue(root)
    app = DashApp(queue, who=WHO, clock=lambda: T0, refresh=refresh,
                  sync=remote_sync(queue) if fetch else None)

    async def play() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await script(pilot)

    asyncio.run(play())


async def settle(pilot: Pilot[None]) -> None:
    """Let the moves and reloads the last keys started finish, and the screen repaint."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


def screen_text(pilot: Pilot[None]) -> str:
    """The characters on the screen, as a person sees them (the compositor's render: Textual's
    public export is an SVG)."""
    return "\n".join(strip.text for strip in pilot.app.screen._compositor.render_strips())


def jobs(pilot: Pilot[None]) -> JobsScreen:
    screen = pilot.app.screen
    assert isinstance(screen, JobsScreen), f"expected the job list, got {type(screen).__name__}"
    return screen


async def select(pilot: Pilot[None], job_id: str) -> None:
    """Move the cursor onto `job_id` with the arrow keys."""
    screen = jobs(pilot)
    target = [row.job_id for row in screen.rows].index(job_id)
    current = screen.query_one(DataTable).cursor_row
    key = "down" if target > current else "up"
    await pilot.press(*[key] * abs(target - current))
    selected = screen.selected()
    assert selected is not None and selected.job_id == job_id


async def press(pilot: Pilot[None], *keys: str) -> None:
    await pilot.press(*keys)
    await settle(pilot)


async def until(pilot: Pilot[None], check: Callable[[], bool], within: float = 15.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if check():
            return True
        await pilot.pause(0.1)
    return check()


async def shows(pilot: Pilot[None], *texts: str) -> bool:
    """True once every one of `texts` is on the screen (a repaint may trail a change by a frame:
    the table lays its columns out again after its rows change)."""
    return await until(pilot, lambda: all(text in screen_text(pilot) for text in texts))


async def row_has(pilot: Pilot[None], job_id: str, text: str) -> bool:
    """True once the screen line of `job_id`'s row holds `text`; else False, after printing the
    screen (it failed once in CI under load, with the row's stage right: the screen says why)."""
    if await until(pilot, lambda: any(f" {job_id} " in line and text in line
                                      for line in screen_text(pilot).splitlines())):
        return True
    print(f"row {job_id!r} never showed {text!r}; the screen:\n{screen_text(pilot)}")
    return False


async def row_starts(pilot: Pilot[None], *words: str) -> bool:
    """True once a line of the screen starts with `words` (number, id, stage, ...)."""
    return await until(pilot, lambda: any(line.split()[:len(words)] == list(words)
                                          for line in screen_text(pilot).splitlines()))


# --- the list --------------------------------------------------------------------------------

def test_the_list_numbers_every_job_and_shows_its_stage_priority_profile_title_and_status(
        queue_root: Path) -> None:
    """Each job is a numbered row with its stage, priority, profile, title and status."""
    seed(queue_root)

    async def script(pilot: Pilot[None]) -> None:
        text = screen_text(pilot)
        header = next(line for line in text.splitlines() if " id " in line)
        assert header.split() == ["#", "id", "stage", "priority", "profile", "title", "status"]
        assert await row_starts(pilot, "1", "alpha", "inbox", "medium")
        assert await row_has(pilot, "alpha", "ready")
        assert await row_starts(pilot, "2", "beta", "review", "medium", "qa")
        assert await row_has(pilot, "beta", "Beta waits for review")
        assert await row_starts(pilot, "4", "delta", "failed")
        assert "p Promote" in text and "S Ship" in text and "q Quit" in text

    drive(queue_root, script)


# --- moves -----------------------------------------------------------------------------------

def test_p_promotes_a_review_job_and_shift_s_ships_a_testing_job(queue_root: Path) -> None:
    """`p` on a review job moves it to testing and `S` on a testing job ships it, on disk and on screen."""
    seed(queue_root)

    async def script(pilot: Pilot[None]) -> None:
        await pilot.press("down")
        await press(pilot, "p")
        assert stage_of(queue_root, "beta") == "testing"
        assert await row_starts(pilot, "2", "beta", "testing")
        assert await shows(pilot, "promote beta: review -> testing")
        await select(pilot, "gamma")
        await press(pilot, "S")
        assert stage_of(queue_root, "gamma") == "shipped"
        assert await row_starts(pilot, "3", "gamma", "shipped")
        event = Queue(queue_root).read_events("gamma")[-1]
        assert (event["action"], event["by"], event["from"], event["to"]) == \
            ("ship", WHO, "testing", "shipped")

    drive(queue_root, script)


def test_a_move_the_lifecycle_refuses_shows_its_reason_and_moves_nothing(queue_root: Path) -> None:
    """`S` on an inbox job shows the lifecycle's refusal on screen and the job stays in the inbox."""
    seed(queue_root)

    async def script(pilot: Pilot[None]) -> None:
        await press(pilot, "S")
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
        assert await shows(pilot, "Reject job 2 (beta)")
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

def test_filters_by_stage_profile_and_text_narrow_the_rows_and_keep_their_numbers(
        queue_root: Path) -> None:
    """`s` cycles the stage, `f` the profiles in use, `/` matches id or title; Escape clears them."""
    seed(queue_root)

    def shown(pilot: Pilot[None]) -> list[tuple[int, str]]:
        return [(row.number, row.job_id) for row in jobs(pilot).rows]

    async def script(pilot: Pilot[None]) -> None:
        assert len(shown(pilot)) == 4
        await press(pilot, "s")
        assert shown(pilot) == [(1, "alpha")]
        await press(pilot, "s", "s", "s")  # building, review, testing
        assert shown(pilot) == [(3, "gamma")]
        assert await shows(pilot, "stage: testing")
        await press(pilot, "s", "s", "s", "s")  # shipped, failed, dead_letter, and round to all
        assert len(shown(pilot)) == 4
        await press(pilot, "f")
        assert shown(pilot) == [(4, "delta")]  # profiles in use, sorted: developer, qa
        await press(pilot, "f")
        assert shown(pilot) == [(2, "beta")]
        await press(pilot, "f")
        assert len(shown(pilot)) == 4
        await press(pilot, "slash")
        await pilot.press(*"PASSED")
        await press(pilot, "enter")
        assert shown(pilot) == [(3, "gamma")]
        assert await row_starts(pilot, "3", "gamma", "testing")
        assert " alpha " not in screen_text(pilot)
        await press(pilot, "S")  # an action takes the row shown under the cursor
        assert stage_of(queue_root, "gamma") == "shipped"
        await press(pilot, "escape")
        assert len(shown(pilot)) == 4

    drive(queue_root, script)


# --- logs ------------------------------------------------------------------------------------

def test_l_shows_the_log_of_a_finished_attempt_and_escape_goes_back(queue_root: Path) -> None:
    """`l` shows the newest attempt's kept log; a job never run gets aq's one-line reason."""
    write_job(queue_root, "ran", body="echo hello-from-the-attempt")
    assert run_aq("run", "--once", cwd=queue_root).returncode == 0
    assert stage_of(queue_root, "ran") == "review"
    write_job(queue_root, "fresh", title="Never run")

    async def script(pilot: Pilot[None]) -> None:
        await press(pilot, "l")  # fresh, in the inbox
        assert await shows(pilot, "fresh has not been run yet (it is in inbox)")
        await select(pilot, "ran")
        await press(pilot, "l")
        assert isinstance(pilot.app.screen, LogScreen)
        assert await shows(pilot, "hello-from-the-attempt", "ran  attempt 1  (finished)")
        await press(pilot, "escape")
        assert isinstance(pilot.app.screen, JobsScreen)

    drive(queue_root, script)


def test_the_log_viewer_follows_a_running_attempt_until_it_ends(queue_root: Path) -> None:
    """The log of an attempt running here grows on screen as the engine writes it."""
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
            await press(pilot, "l")
            assert isinstance(pilot.app.screen, LogScreen)
            assert await shows(pilot, "first-words", "(following the running attempt)")
            assert "last-words" not in screen_text(pilot)
            gate.touch()
            assert await shows(pilot, "last-words")
            assert await shows(pilot, "attempt 1 ended; the job is in review", "(finished)")

        drive(queue_root, script)
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
    """With a remote, a refresh fetches (a job another clone added shows) and a move is pushed."""
    with fleet_in(tmp_path / "fleet", 2) as fleet:
        here, there = fleet.clones

        async def script(pilot: Pilot[None]) -> None:
            added = fleet.aq(there, "add", "--id", "afar", "--title", "Added on another clone",
                             "--body", "echo hi")
            assert added.returncode == 0, added.stderr
            assert await shows(pilot, "Added on another clone")
            await select(pilot, "afar")
            await press(pilot, "c")
            await press(pilot, "y")
            assert fleet.stages_at()["afar"] == ["failed"]

        drive(here, script, refresh=0.3, fetch=True)
