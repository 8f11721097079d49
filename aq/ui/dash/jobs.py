"""The job list: the numbered jobs, the filters, and the keys that act on the selected job."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import get_current_worker

from aq.core.lifecycle import STAGES, Action, Stage, check_move
from aq.errors import AqError
from aq.ui.dash.dialogs import Ask, Confirm
from aq.ui.dash.logview import LogScreen
from aq.ui.dash.rows import Filters, Row, cut, moved_note, profiles_in_use, rows_of, summary_line
from aq.ui.dash.session import Loaded, Session

COLUMNS = ("#", "id", "stage", "priority", "profile", "title", "status")
STAGE_CYCLE: tuple[Stage | None, ...] = (None, *STAGES)  # None: every stage
TITLE_WIDTH = 40
STATUS_WIDTH = 70


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
        if rows != self.rows:
            _fill(self.query_one(DataTable), rows, self.selected())
            self.rows = rows

    def _render_summary(self, total: int, shown: int) -> None:
        loaded = self.loaded
        assert loaded is not None
        summary = self.query_one("#summary", Static)
        summary.update(Text(summary_line(shown, total, self.filters, halted=loaded.halted,
                                         reachable=loaded.reachable, root=self.session.queue.root)))
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


def _fill(table: DataTable[Text], rows: list[Row], selected: Row | None) -> None:
    """Show `rows`, the cursor kept on the job it was on: when that job left the view (moved
    out of the filtered stage), at the place it was."""
    place = table.cursor_row
    table.clear()
    for row in rows:
        table.add_row(*(Text(cell) for cell in (
            str(row.number), row.job_id, str(row.stage), row.priority, row.profile,
            cut(row.title, TITLE_WIDTH), cut(row.status, STATUS_WIDTH))), key=row.job_id)
    ids = [row.job_id for row in rows]
    if selected is not None and selected.job_id in ids:
        table.move_cursor(row=ids.index(selected.job_id))
    elif rows:
        table.move_cursor(row=min(place, len(rows) - 1))
