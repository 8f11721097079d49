"""The moves a person makes from the job list, on the marked jobs (else the one under the
cursor): promote, ship, requeue, reject and cancel, and the halt switch.

A move the lifecycle refuses is refused at once, in its words. Ship, cancel, and any move of
more than the one job under the cursor ask first, naming the jobs; reject asks why. Every move
goes through `move_job`, one job after another, in a worker thread."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from textual.app import App

from aq.core.lifecycle import Action, Stage, check_move
from aq.errors import AqError
from aq.ui.dash.dialogs import Ask, Confirm
from aq.ui.dash.rows import Row, moved_note
from aq.ui.dash.session import Session

NAMED = 12  # jobs a question names one by one; the rest are counted
ALWAYS_ASK = frozenset({Action.SHIP, Action.CANCEL})
INTO = {Action.PROMOTE: "testing", Action.SHIP: "shipped", Action.REQUEUE: "the inbox",
        Action.REJECT: "failed", Action.CANCEL: "failed"}


class Acting(Protocol):
    """What the moves need of the job list."""

    session: Session
    marks: set[str]

    @property
    def app(self) -> App[Any]: ...

    def say(self, text: str, *, error: bool = False) -> None: ...

    def targets(self) -> list[Row]: ...

    def change(self, do: Callable[[], tuple[str, bool]]) -> object: ...


def plan(rows: Sequence[Row], action: Action) -> tuple[list[Row], list[str]]:
    """The rows `action` may move from the stage each shows, and the lifecycle's refusal of each
    other (move_job checks again on what is on disk)."""
    movable, refused = [], []
    for row in rows:
        try:
            check_move(row.job_id, row.stage, action)
        except AqError as err:
            refused.append(str(err))
        else:
            movable.append(row)
    return movable, refused


def names(rows: Sequence[Row]) -> str:
    """`job 2 (beta), job 4 (delta)`, the first NAMED of them, then how many more."""
    named = ", ".join(f"job {row.number} ({row.job_id})" for row in rows[:NAMED])
    return named + (f" and {len(rows) - NAMED} more" if len(rows) > NAMED else "")


def question(action: Action, rows: Sequence[Row], refused: Sequence[str], ask: str = "?") -> str:
    """`Ship job 2 (beta), job 3 (gamma), moving them to shipped?`, then the jobs it leaves."""
    running = any(row.stage is Stage.BUILDING for row in rows) and action is Action.CANCEL
    what = f"{str(action).capitalize()} {names(rows)}, moving {'it' if len(rows) == 1 else 'them'} " \
           f"to {INTO.get(action, action)}{' (running attempts are stopped)' if running else ''}"
    skipped = f"\nLeft as they are: {'; '.join(refused)}" if refused else ""
    return what + ask + skipped


def act(screen: Acting, action: Action) -> None:
    """Move the marked jobs (else the one under the cursor), asking first where it must."""
    rows = screen.targets()
    if not rows:
        screen.say("no job selected", error=True)
        return
    movable, refused = plan(rows, action)
    if not movable:
        screen.say(refused[0], error=True)
        return
    marked = bool(screen.marks)

    def go(reason: str | None = None) -> None:
        if marked:
            screen.marks.clear()
        _run(screen, action, movable, reason)

    if action is Action.REJECT:
        def why(reason: str | None) -> None:
            if reason:
                go(reason)

        screen.app.push_screen(Ask(question(action, movable, refused,
                                            ": why? (kept in the event log)"),
                                   required="a reason is needed: say why, or Esc to keep them"), why)
    elif marked or action in ALWAYS_ASK:
        def yes(answer: bool | None) -> None:
            if answer:
                go()

        screen.app.push_screen(Confirm(question(action, movable, refused)), yes)
    else:
        go()


def _run(screen: Acting, action: Action, rows: Sequence[Row], reason: str | None) -> None:
    session = screen.session

    def do() -> tuple[str, bool]:
        notes, failed = [], []
        for row in rows:
            try:
                notes.append(moved_note(session.move(row.job_id, action, reason)))
            except (AqError, OSError) as err:
                failed.append(str(err))
        if len(rows) == 1:
            return (failed or notes)[0], bool(failed)
        moved = f"{action}: {len(notes)} of {len(rows)} moved to {INTO.get(action, action)}"
        return "; ".join([moved, *failed]), bool(failed)

    screen.change(do)


def halt_or_resume(screen: Acting) -> None:
    """Halt the queue (asking why) or, halted, resume it (asking first)."""
    session = screen.session
    reason = session.halted()
    if reason is None:
        def halt_answered(why: str | None) -> None:
            if why is not None:
                screen.change(lambda: ("halted: no worker will claim a job"
                                       if session.halt(why or "halted") else "already halted", False))

        screen.app.push_screen(Ask("Halt the queue? No worker claims a job until resumed; "
                                   "running jobs finish. Reason:"), halt_answered)
        return

    def resume_answered(yes: bool | None) -> None:
        if yes:
            screen.change(lambda: ("resumed: workers claim again" if session.resume()
                                   else "not halted", False))

    screen.app.push_screen(Confirm(f"The queue is halted ({reason}). Resume it, so workers "
                                   "claim again?"), resume_answered)
