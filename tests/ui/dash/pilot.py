"""Driving `aq dash` as a person drives it, for the dash's tests: Textual's headless pilot
presses keys, and the test reads the screen and the queue on disk."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

from textual import events
from textual.keys import _character_to_key
from textual.pilot import Pilot

from aq.store.queue import Queue
from aq.ui.dash.app import DashApp, remote_sync
from aq.ui.dash.jobs import JobsScreen
from aq.ui.dash.table import JobTable
from tests.helpers.queue import T0, write_job

WHO = "dash-tester@bench"
SIZE = (120, 40)
Script = Callable[[Pilot[None]], Awaitable[None]]


def seed(root: Path) -> None:
    """Rows 1-4: an inbox job, a review job, a testing job, a failed job (two with profiles)."""
    write_job(root, "alpha", title="Alpha waits in the inbox")
    write_job(root, "beta", stage="review", title="Beta waits for review", profile="qa")
    write_job(root, "gamma", stage="testing", title="Gamma passed its verify")
    write_job(root, "delta", stage="failed", title="Delta failed", profile="developer")


def drive(root: Path, script: Script, *, refresh: float = 60.0, fetch: bool = False,
          size: tuple[int, int] = SIZE, clock: Callable[[], datetime] = lambda: T0) -> None:
    """Run the dashboard on the queue at `root` headless and play `script` against it; with
    `fetch`, each refresh first fetches from the queue's remote."""
    queue = Queue(root)
    app = DashApp(queue, who=WHO, clock=clock, refresh=refresh,
                  sync=remote_sync(queue) if fetch else None)

    async def play() -> None:
        async with app.run_test(size=size) as pilot:
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


def shown(pilot: Pilot[None]) -> list[tuple[int, str]]:
    """(number, id) of the rows the list shows."""
    return [(row.number, row.job_id) for row in jobs(pilot).rows]


def cursor(pilot: Pilot[None]) -> str | None:
    """The id of the job under the cursor."""
    row = jobs(pilot).selected()
    return row.job_id if row is not None else None


async def select(pilot: Pilot[None], job_id: str) -> None:
    """Move the cursor onto `job_id` with the arrow keys."""
    screen = jobs(pilot)
    target = [row.job_id for row in screen.rows].index(job_id)
    current = screen.query_one(JobTable).cursor_row
    key = "down" if target > current else "up"
    await pilot.press(*[key] * abs(target - current))
    assert cursor(pilot) == job_id


async def press(pilot: Pilot[None], *keys: str) -> None:
    await pilot.press(*keys)
    await settle(pilot)


async def burst(pilot: Pilot[None], *keys: str) -> None:
    """Keys as a fast typist's terminal delivers them: all handed to the app at once, none
    waiting for the one before it to be handled. A key is a character or a name ("enter")."""
    app = pilot.app
    assert app._driver is not None
    for key in keys:
        if len(key) == 1:
            event = events.Key(key if key.isalnum() else _character_to_key(key), key)
        else:
            event = events.Key(key, {"enter": "\r", "escape": "\x1b"}.get(key))
        event.set_sender(app)
        app._driver.send_message(event)
    await settle(pilot)


async def until(pilot: Pilot[None], check: Callable[[], bool], within: float = 15.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if check():
            return True
        await pilot.pause(0.05)
    return check()


async def shows(pilot: Pilot[None], *texts: str) -> bool:
    """True once every one of `texts` is on the screen (a repaint may trail a change by a frame:
    the table lays its columns out again after its rows change)."""
    if await until(pilot, lambda: all(text in screen_text(pilot) for text in texts)):
        return True
    print(f"never showed {texts!r}; the screen:\n{screen_text(pilot)}")
    return False


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
