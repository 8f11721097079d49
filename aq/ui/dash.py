"""`aq dash`: the queue in a terminal, for the person at the gate.

A numbered job list with filters, single keys for the moves a person makes, a log viewer that
follows a running attempt, and the halt switch. Everything it reads or changes goes through
`aq.usecases` (list_jobs, move_job, halt, resume, find_log, read_log), one call at a time in a
worker thread, so the dashboard can do nothing the CLI could not, and refuses what the CLI
refuses, with the same words.
"""

from __future__ import annotations

import codecs
import functools
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Input, Log, Static
from textual.worker import get_current_worker

from aq.core.lifecycle import STAGES, Action, Stage, check_move
from aq.core.scheduler import Verdict
from aq.errors import AqError, UsageError
from aq.infra.clock import utc_now
from aq.store.queue import Queue
from aq.store.snapshot import Job
from aq.usecases.fleet import halt, resume
from aq.usecases.listing import Capabilities, Listing, list_jobs
from aq.usecases.logs import LogRef, find_log, read_log
from aq.usecases.moves import MoveResult, move_job

COLUMNS = ("#", "id", "stage", "priority", "profile", "title", "status")
STAGE_CYCLE: tuple[Stage | None, ...] = (None, *STAGES)  # None: every stage
TITLE_WIDTH = 40
STATUS_WIDTH = 70
LOG_POLL = 0.5  # seconds between looks at a running attempt's live log


# --- what the list shows ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Filters:
    stage: Stage | None = None
    profile: str | None = None
    text: str = ""

    def admits(self, job: Job) -> bool:
        manifest = job.manifest
        if self.stage is not None and job.stage is not self.stage:
            return False
        if self.profile is not None and (manifest is None or manifest.profile != self.profile):
            return False
        needle = self.text.strip().lower()
        title = manifest.title if manifest else ""
        return not needle or needle in job.id.lower() or needle in title.lower()

    def describe(self) -> str:
        return (f"stage: {self.stage or 'all'}   profile: {self.profile or 'all'}   "
                f"text: {self.text or '-'}")


@dataclass(frozen=True, slots=True)
class Row:
    number: int  # place in the whole listing: filtering never renumbers, so "job 3" stays job 3
    job_id: str
    stage: Stage
    priority: str
    profile: str
    title: str
    status: str


def _cost_so_far(job: Job, running: Path | None) -> str:
    """`, $0.42 so far` for a building job whose cost is known."""
    from aq.usecases.spend import cost_so_far

    spent = cost_so_far(job.state, running is not None, (running or Path()) / job.id)
    return f", ${spent:.2f} so far" if spent else ""


def status_of(job: Job, verdict: Verdict | None, running: Path | None = None) -> str:
    """Why an inbox job waits, who holds a building one, else how the job got where it is."""
    state = job.state
    if job.error:
        return f"invalid: {job.error}"
    if verdict is not None:
        return "ready" if verdict.ready else f"waits: {verdict.reason}"
    if job.stage is Stage.BUILDING and state.holder:
        return f"{state.holder}, attempt {state.attempt_count}{_cost_so_far(job, running)}"
    if state.last_reason and state.last_outcome and state.last_outcome not in state.last_reason:
        return f"{state.last_reason} (last attempt: {state.last_outcome})"
    return state.last_reason or state.last_outcome or ""


def moved_note(result: MoveResult) -> str:
    """What the dash says of a move: where the job went, and a post its tracker did not get."""
    unsent = [item.message for item in result.tracker if not item.ok]
    owed = f"; {unsent[0]}: it stays owed" if unsent else ""
    return f"{result.action} {result.job_id}: {result.source} -> {result.target}{owed}"


def rows_of(listing: Listing, filters: Filters, running: Path | None = None) -> list[Row]:
    rows = []
    for number, job in enumerate(listing.jobs, 1):
        if filters.admits(job):
            manifest = job.manifest
            rows.append(Row(number, job.id, job.stage, manifest.priority if manifest else "-",
                            (manifest.profile or "") if manifest else "",
                            manifest.title if manifest else "(invalid)",
                            status_of(job, listing.verdicts.get(job.id), running)))
    return rows


def profiles_in_use(listing: Listing) -> list[str]:
    return sorted({job.manifest.profile for job in listing.jobs
                   if job.manifest is not None and job.manifest.profile})


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# --- the queue, one call at a time -----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Loaded:
    """The queue as one load saw it. `seq` orders loads: an older one never replaces a newer."""

    seq: int
    listing: Listing | None  # None: it could not be read (`problem` says why)
    halted: str | None
    reachable: bool | None  # the remote answered the fetch; None: no remote
    problem: str | None = None


class Session:
    """One person's hold on the queue: every read and change through `aq.usecases`, serialized,
    so a slow fetch and a move never interleave. Called from worker threads, never the UI's."""

    def __init__(self, queue: Queue, *, who: str, clock: Callable[[], datetime],
                 sync: Callable[[], bool] | None = None, capabilities: Capabilities = None,
                 env: Mapping[str, str] = os.environ) -> None:
        self.queue = queue
        self.who = who
        self.clock = clock
        self.env = env  # where a tracker's token is, for the post a move owes
        self.sync = sync
        self.capabilities = capabilities
        self._lock = threading.Lock()
        self._seq = 0

    def load(self) -> Loaded:
        with self._lock:
            self._seq += 1
            reachable, problem = None, None
            if self.sync is not None:
                try:
                    reachable = self.sync()
                except AqError as err:
                    reachable, problem = False, str(err)
            try:
                listing = list_jobs(self.queue, now=self.clock(), capabilities=self.capabilities)
            except (AqError, OSError) as err:
                return Loaded(self._seq, None, self.queue.halted(), reachable, str(err))
            return Loaded(self._seq, listing, self.queue.halted(), reachable, problem)

    def move(self, job_id: str, action: Action, reason: str | None = None) -> MoveResult:
        with self._lock:
            return move_job(self.queue, job_id, action, who=self.who, now=self.clock(),
                            env=self.env, reason=reason)

    def halt(self, reason: str) -> bool:
        with self._lock:
            return halt(self.queue, reason=reason, who=self.who, now=self.clock())

    def resume(self) -> bool:
        with self._lock:
            return resume(self.queue, who=self.who)

    def halted(self) -> str | None:
        return self.queue.halted()

    def find_log(self, job_id: str) -> LogRef:
        return find_log(self.queue, job_id, None)


# --- dialogs ---------------------------------------------------------------------------------

DIALOG_CSS = """
Confirm, Ask { align: center middle; }
#dialog { width: 80; height: auto; border: thick $accent; background: $surface; padding: 1 2; }
#dialog .hint { color: $text-muted; }
#dialog #ask-problem { color: $error; }
"""


class Confirm(ModalScreen[bool]):
    """A yes/no question: `y` says yes; `n` or Escape says no."""

    DEFAULT_CSS = DIALOG_CSS
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question, markup=False)
            yield Static("y: yes    n / Esc: no", classes="hint", markup=False)

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class Ask(ModalScreen[str | None]):
    """A line of text; Escape gives None. With `required`, an empty answer is refused with it."""

    DEFAULT_CSS = DIALOG_CSS
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, prompt: str, *, value: str = "", required: str | None = None) -> None:
        super().__init__()
        self.prompt = prompt
        self.value = value
        self.required = required

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.prompt, markup=False)
            yield Input(value=self.value, id="ask-input")
            yield Static("", id="ask-problem", markup=False)
            yield Static("Enter: ok    Esc: cancel", classes="hint", markup=False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        answer = event.value.strip()
        if not answer and self.required:
            self.query_one("#ask-problem", Static).update(self.required)
            return
        self.dismiss(answer)

    def action_cancel(self) -> None:
        self.dismiss(None)


# --- the log viewer --------------------------------------------------------------------------

class LogScreen(Screen[None]):
    """An attempt's log; while the attempt runs here, new text is appended as it arrives."""

    DEFAULT_CSS = """
    LogScreen #log-title { height: 1; padding: 0 1; background: $boost; }
    LogScreen Log { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("q", "app.pop_screen", "Back", show=False),
    ]

    def __init__(self, session: Session, ref: LogRef) -> None:
        super().__init__()
        self.session = session
        self.ref = ref
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # one look per tick of the screen's timer: the log is read on the UI's thread
        self._reading = read_log(session.queue, ref, follow=True, sleep=lambda _seconds: None)
        self._timer: Timer | None = None
        self._following = ref.running

    def compose(self) -> ComposeResult:
        yield Static(self._title(), id="log-title", markup=False)
        yield Log(id="log")
        yield Footer()

    def _title(self) -> str:
        ref = self.ref
        how = "following the running attempt" if self._following else "finished"
        return f"{ref.job_id}  attempt {ref.attempt}  ({how})  {self.session.queue.relative(ref.path)}"

    def on_mount(self) -> None:
        if self._look():
            self._timer = self.set_interval(LOG_POLL, self._look)

    def _look(self) -> bool:
        """Append what was written since the last look; False once the reading ended."""
        log = self.query_one(Log)
        try:
            for chunk in self._reading:
                if not chunk:
                    return True  # the end of this look
                log.write(self._decoder.decode(chunk))
        except (OSError, AqError) as err:
            log.write_line(f"cannot read {self.ref.path}: "
                           f"{err.strerror if isinstance(err, OSError) else err}")
        else:
            if self._following:
                log.write_line("")
                log.write_line(f"[aq dash] attempt {self.ref.attempt} ended; the job is in "
                               f"{self.session.queue.stage_of(self.ref.job_id)}")
        if self._timer is not None:
            self._timer.stop()
        self._following = False
        self.query_one("#log-title", Static).update(self._title())
        return False

    def on_unmount(self) -> None:
        self._reading.close()  # the log file too


# --- the job list ----------------------------------------------------------------------------

class JobsScreen(Screen[None]):
    """The numbered job list, the filters, and the keys that act on the selected job."""

    DEFAULT_CSS = """
    JobsScreen #summary { height: auto; padding: 0 1; background: $boost; }
    JobsScreen #summary.halted { background: $error 40%; }
    JobsScreen DataTable { height: 1fr; }
    JobsScreen #message { height: auto; padding: 0 1; }
    JobsScreen #message.error { color: $error; text-style: bold; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "move('promote')", "Promote"),
        Binding("S", "move('ship')", "Ship"),
        Binding("x", "reject", "Reject"),
        Binding("r", "move('requeue')", "Requeue"),
        Binding("c", "cancel_job", "Cancel"),
        Binding("l", "log", "Log"),
        Binding("h", "halt_or_resume", "Halt/Resume"),
        Binding("s", "cycle_stage", "Stage"),
        Binding("f", "cycle_profile", "Profile"),
        Binding("slash", "search", "Search"),
        Binding("escape", "clear_filters", "Clear filters", show=False),
        Binding("ctrl+r", "reload", "Reload", show=False),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, session: Session, refresh_seconds: float) -> None:
        super().__init__()
        self.session = session
        self.refresh_seconds = refresh_seconds
        self.filters = Filters()
        self.loaded: Loaded | None = None
        self.rows: list[Row] = []
        self._loading = False

    def compose(self) -> ComposeResult:
        yield Static("aq dash: reading the queue…", id="summary", markup=False)
        table: DataTable[Text] = DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
        table.add_columns(*COLUMNS)
        yield table
        yield Static("", id="message", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.action_reload()
        self.set_interval(self.refresh_seconds, self.action_reload)

    # reading

    def action_reload(self) -> None:
        if not self._loading:  # a slow fetch is not stacked up behind itself
            self._loading = True
            self._load()

    @work(thread=True, group="refresh")
    def _load(self) -> None:
        loaded = self.session.load()
        self._post(self._loaded, loaded)

    def _loaded(self, loaded: Loaded) -> None:
        self._loading = False
        self.show(loaded)

    def _post(self, callback: Callable[..., object], *args: object) -> None:
        """Hand a worker thread's result to the UI (not after the app stopped waiting for it)."""
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(callback, *args)

    def show(self, loaded: Loaded) -> None:
        if self.loaded is not None and loaded.seq < self.loaded.seq:
            return  # a load that read the queue before the one already shown
        if loaded.listing is None and self.loaded is not None:
            loaded = Loaded(loaded.seq, self.loaded.listing, loaded.halted, loaded.reachable,
                            loaded.problem)
        self.loaded = loaded
        if loaded.problem:
            self.say(loaded.problem, error=True)
        self._render_rows()

    def _render_rows(self) -> None:
        loaded = self.loaded
        if loaded is None:
            return
        listing = loaded.listing
        if listing is not None and self.filters.profile not in (None, *profiles_in_use(listing)):
            self.filters = Filters(self.filters.stage, None, self.filters.text)
        rows = (rows_of(listing, self.filters, self.session.queue.running_dir())
                if listing is not None else [])
        self._render_summary(len(listing.jobs) if listing is not None else 0, len(rows))
        if rows == self.rows:
            return
        table = self.query_one(DataTable)
        selected, place = self.selected(), table.cursor_row
        table.clear()
        for row in rows:
            table.add_row(*(Text(cell) for cell in (
                str(row.number), row.job_id, str(row.stage), row.priority, row.profile,
                _cut(row.title, TITLE_WIDTH), _cut(row.status, STATUS_WIDTH))), key=row.job_id)
        self.rows = rows
        ids = [row.job_id for row in rows]
        if selected is not None and selected.job_id in ids:
            table.move_cursor(row=ids.index(selected.job_id))
        elif rows:  # the job left the view (moved out of the filtered stage): stay at its place
            table.move_cursor(row=min(place, len(rows) - 1))

    def _render_summary(self, total: int, shown: int) -> None:
        loaded = self.loaded
        assert loaded is not None
        summary = self.query_one("#summary", Static)
        parts = [f"{shown} of {total} jobs", self.filters.describe()]
        if loaded.halted is not None:
            parts.insert(0, f"HALTED: {loaded.halted}")
        if loaded.reachable is False:
            parts.append("remote unreachable: showing this clone")
        parts.append(str(self.session.queue.root))
        summary.update(Text("   ".join(parts)))
        summary.set_class(loaded.halted is not None, "halted")

    def selected(self) -> Row | None:
        table = self.query_one(DataTable)
        if not self.rows or not 0 <= table.cursor_row < len(self.rows):
            return None
        return self.rows[table.cursor_row]

    def say(self, text: str, *, error: bool = False) -> None:
        message = self.query_one("#message", Static)
        message.update(Text(text))
        message.set_class(error, "error")

    # changing: each change runs in a thread, then the list is read again

    @work(thread=True, group="changes")
    def _change(self, do: Callable[[], str]) -> None:
        try:
            note, error = do(), False
        except (AqError, OSError) as err:
            note, error = str(err), True
        self._post(self._changed, note, error, self.session.load())

    def _changed(self, note: str, error: bool, loaded: Loaded) -> None:
        self.show(loaded)
        self.say(note, error=error)

    def _chosen(self) -> Row | None:
        row = self.selected()
        if row is None:
            self.say("no job selected", error=True)
        return row

    def _refused(self, row: Row, action: Action) -> bool:
        """Refuse at once, in the lifecycle's words, a move the shown stage does not allow
        (before asking for a reason or a yes); move_job checks again on what is on disk."""
        try:
            check_move(row.job_id, row.stage, action)
        except AqError as err:
            self.say(str(err), error=True)
            return True
        return False

    def _move(self, row: Row, action: Action, reason: str | None = None) -> None:
        def do() -> str:
            return moved_note(self.session.move(row.job_id, action, reason))

        self._change(do)

    def action_move(self, action: str) -> None:
        row = self._chosen()
        if row is not None:
            self._move(row, Action(action))

    def action_reject(self) -> None:
        row = self._chosen()
        if row is None or self._refused(row, Action.REJECT):
            return

        def answered(reason: str | None) -> None:
            if reason:
                self._move(row, Action.REJECT, reason)

        self.app.push_screen(Ask(f"Reject job {row.number} ({row.job_id}) to failed: why? "
                                 "(kept in its event log)",
                                 required="a reason is needed: say why, or Esc to keep the job"),
                             answered)

    def action_cancel_job(self) -> None:
        row = self._chosen()
        if row is None or self._refused(row, Action.CANCEL):
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._move(row, Action.CANCEL)

        running = " (its running attempt is stopped)" if row.stage is Stage.BUILDING else ""
        self.app.push_screen(Confirm(f"Cancel job {row.number} ({row.job_id}), moving it from "
                                     f"{row.stage} to failed{running}?"), answered)

    def action_halt_or_resume(self) -> None:
        reason = self.session.halted()
        if reason is None:
            def halt_answered(why: str | None) -> None:
                if why is not None:
                    self._change(lambda: "halted: no worker will claim a job"
                                 if self.session.halt(why or "halted") else "already halted")

            self.app.push_screen(Ask("Halt the queue? No worker claims a job until resumed; "
                                     "running jobs finish. Reason:"), halt_answered)
            return

        def resume_answered(yes: bool | None) -> None:
            if yes:
                self._change(lambda: "resumed: workers claim again"
                             if self.session.resume() else "not halted")

        self.app.push_screen(Confirm(f"The queue is halted ({reason}). Resume it, so workers "
                                     "claim again?"), resume_answered)

    def action_log(self) -> None:
        row = self._chosen()
        if row is None:
            return
        try:
            ref = self.session.find_log(row.job_id)
        except AqError as err:
            self.say(str(err), error=True)
            return
        self.app.push_screen(LogScreen(self.session, ref))

    # filters

    def action_cycle_stage(self) -> None:
        index = STAGE_CYCLE.index(self.filters.stage)
        stage = STAGE_CYCLE[(index + 1) % len(STAGE_CYCLE)]
        self._filter(Filters(stage, self.filters.profile, self.filters.text))

    def action_cycle_profile(self) -> None:
        listing = self.loaded.listing if self.loaded else None
        cycle: list[str | None] = [None, *(profiles_in_use(listing) if listing else [])]
        if len(cycle) == 1:
            self.say("no job names a profile")
        index = cycle.index(self.filters.profile) if self.filters.profile in cycle else 0
        self._filter(Filters(self.filters.stage, cycle[(index + 1) % len(cycle)], self.filters.text))

    def action_search(self) -> None:
        def answered(text: str | None) -> None:
            if text is not None:
                self._filter(Filters(self.filters.stage, self.filters.profile, text))

        self.app.push_screen(Ask("Show jobs whose id or title holds (empty: all):",
                                 value=self.filters.text), answered)

    def action_clear_filters(self) -> None:
        self._filter(Filters())

    def _filter(self, filters: Filters) -> None:
        self.filters = filters
        self._render_rows()


# --- the app ---------------------------------------------------------------------------------

class DashApp(App[None]):
    """The dashboard on `queue`, acting as `who`; the list is read again every `refresh`
    seconds, after `sync` (a fetch from the remote, in a worker thread) when one is given."""

    TITLE = "aq dash"
    ENABLE_COMMAND_PALETTE = False

    def __init__(self, queue: Queue, *, who: str, clock: Callable[[], datetime] = utc_now,
                 refresh: float = 2.0, sync: Callable[[], bool] | None = None,
                 capabilities: Capabilities = None) -> None:
        super().__init__()
        self.session = Session(queue, who=who, clock=clock, sync=sync, capabilities=capabilities)
        self.refresh_seconds = refresh

    def get_default_screen(self) -> Screen[Any]:
        return JobsScreen(self.session, self.refresh_seconds)


def remote_sync(queue: Queue) -> Callable[[], bool] | None:
    """A fetch that brings this clone to the remote's tip (False: the remote did not answer);
    None for a queue without a remote."""
    remote = queue.remote
    if remote is None:
        return None

    def sync() -> bool:
        return queue.refresh_from_remote()

    return sync


def probed_capabilities(queue: Queue) -> Callable[[frozenset[str]], frozenset[str]]:
    """This machine's capabilities, probed once per set of compared tools (not every refresh)."""
    from aq.infra.probe import probe

    @functools.cache
    def capabilities(compared: frozenset[str]) -> frozenset[str]:
        return probe(queue.config.engines, versions=compared)

    return capabilities


def run_dash(queue: Queue, *, who: str, refresh: float = 2.0) -> None:
    """Run the dashboard in this terminal until the person quits."""
    if not refresh > 0:
        raise UsageError(f"the refresh interval must be more than 0 seconds, not {refresh}")
    DashApp(queue, who=who, refresh=refresh, sync=remote_sync(queue),
            capabilities=probed_capabilities(queue)).run()
