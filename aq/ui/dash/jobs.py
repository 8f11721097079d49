"""The job list: the stage tabs, the numbered jobs, the marks, the filters, the detail pane,
and the keys that act on the jobs (the moves themselves: `moves`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static
from textual.worker import get_current_worker

from aq.core.lifecycle import STAGES, Action
from aq.errors import AqError
from aq.ui.dash import moves
from aq.ui.dash.detail import DetailPane, detail_of
from aq.ui.dash.logview import LogScreen
from aq.ui.dash.look import stage_tabs
from aq.ui.dash.rows import Filters, Row, profiles_in_use, rows_of, stage_counts, summary_line
from aq.ui.dash.search import SearchBar
from aq.ui.dash.session import Loaded, Session
from aq.ui.dash.table import JobTable
from aq.ui.dash.workers import WorkersScreen

SIDE_BY_SIDE = 120  # from this width the detail pane is beside the list, else below it
ONE_STAGE = "One stage (0: all)"


def _keys() -> list[BindingType]:
    """The list's keys, every one a priority binding: those run as the keys come, each before
    the next key is handed on, so keys typed together are taken in their order (a cursor move
    then a mark), and keys typed right after one that opens a question or the search line land
    there (`check_action` lets every key through to the search line while it is open)."""
    keys = [
        Binding("p", "move('promote')", "Promote"),
        Binding("S", "move('ship')", "Ship"),
        Binding("x", "move('reject')", "Reject"),
        Binding("r", "move('requeue')", "Requeue"),
        Binding("c", "move('cancel')", "Cancel", show=False),
        Binding("space", "mark", "Mark"),
        Binding("enter", "toggle_detail", "Detail"),
        Binding("l", "log", "Log"),
        Binding("w", "workers", "Workers", show=False),
        Binding("h", "halt_or_resume", "Halt/Resume", show=False),
        Binding("tab,s", "cycle_stage(1)", "Next stage", show=False),
        Binding("shift+tab", "cycle_stage(-1)", "Previous stage", show=False),
        *(Binding(str(n), f"stage({n})", ONE_STAGE, show=False) for n in range(len(STAGES) + 1)),
        Binding("f", "cycle_profile", "Next profile", show=False),
        Binding("slash", "search", "Search"),
        Binding("ctrl+d", "scroll_detail(1)", "Detail down", show=False),
        Binding("ctrl+u", "scroll_detail(-1)", "Detail up", show=False),
        Binding("escape", "back", "Back: pane, marks, filter", show=False),
        Binding("ctrl+r", "reload", "Reload", show=False),
        Binding("q", "app.quit", "Quit"),
        Binding("j,down", "go('down')", "Down", show=False),
        Binding("k,up", "go('up')", "Up", show=False),
        Binding("g,home", "go('first')", "First job", show=False),
        Binding("G,end", "go('last')", "Last job", show=False),
        Binding("pagedown,ctrl+f", "go('page_down')", "Page down", show=False),
        Binding("pageup,ctrl+b", "go('page_up')", "Page up", show=False),
    ]
    return [Binding(b.key, b.action, b.description, show=b.show, priority=True) for b in keys]


class JobsScreen(Screen[None]):
    """The numbered job list, the filters, and the keys that act on the jobs."""

    NAME = "the job list"
    DEFAULT_CSS = """
    JobsScreen #tabs, JobsScreen #summary { height: 1; padding: 0 1; text-wrap: nowrap;
                                            text-overflow: ellipsis; }
    JobsScreen #summary { background: $boost; }
    JobsScreen #summary.halted { background: $error 40%; }
    JobsScreen #body { height: 1fr; layout: horizontal; }
    JobsScreen #body.narrow { layout: vertical; }
    JobsScreen #body.narrow DetailPane { border-left: none; border-top: tall $accent; }
    JobsScreen #message { height: auto; max-height: 3; padding: 0 1; }
    JobsScreen #message.error { color: $error; text-style: bold; }
    """
    BINDINGS: ClassVar[list[BindingType]] = _keys()

    def __init__(self, session: Session, refresh_seconds: float) -> None:
        super().__init__()
        self.session = session
        self.refresh_seconds = refresh_seconds
        self.filters = Filters()
        self.loaded: Loaded | None = None
        self.rows: list[Row] = []  # those shown
        self.every_row: dict[str, Row] = {}  # the whole listing's, by job id
        self.marks: set[str] = set()
        self._loading = False

    def compose(self) -> ComposeResult:
        yield Static("", id="tabs", markup=False)
        yield Static("aq dash: reading the queue…", id="summary", markup=False)
        with Container(id="body"):
            yield JobTable()
            yield DetailPane(self.session)
        yield Static("", id="message", markup=False)
        yield SearchBar(placeholder="show jobs whose id or title holds… (Enter: keep, "
                        "Esc: as before)", id="search")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.action_reload()
        self.set_interval(self.refresh_seconds, self.action_reload)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not isinstance(self.focused, Input)

    # reading

    def action_reload(self) -> None:
        if not self._loading:  # a slow fetch is not stacked up behind itself
            self._loading = True
            pane = self.query_one(DetailPane)
            self._load(pane.job_id if pane.open else None)

    @work(thread=True, group="refresh")
    def _load(self, job_id: str | None) -> None:
        loaded = self.session.load()
        self._post(self._loaded, loaded, job_id, detail_of(self.session, job_id))

    def _loaded(self, loaded: Loaded, job_id: str | None, detail: str | None) -> None:
        self._loading = False
        self.show(loaded)
        if job_id is not None and detail is not None:
            self.query_one(DetailPane).show(job_id, detail)

    def _post(self, callback: Callable[..., object], *args: object) -> None:
        """Hand a worker thread's result to the UI (not after the app stopped waiting for it)."""
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(callback, *args)

    def show(self, loaded: Loaded) -> None:
        if self.loaded is not None and loaded.seq < self.loaded.seq:
            return  # a load that read the queue before the one already shown
        if loaded.listing is None and self.loaded is not None:
            old = self.loaded
            loaded = Loaded(loaded.seq, old.listing, loaded.halted, loaded.reachable,
                            loaded.problem, old.now, old.live)
        self.loaded = loaded
        if loaded.problem:
            self.say(loaded.problem, error=True)
        self._render_rows()

    def _render_rows(self) -> None:
        loaded = self.loaded
        if loaded is None or loaded.listing is None:
            return
        listing = loaded.listing
        if self.filters.profile not in (None, *profiles_in_use(listing)):
            self.filters = self.filters.with_profile(None)
        every = rows_of(listing, now=loaded.now, live=loaded.live)
        self.every_row = {row.job_id: row for row in every}
        self.marks &= self.every_row.keys()  # a job gone from the queue is no longer marked
        shown = [row for row, job in zip(every, listing.jobs, strict=True) if self.filters.admits(job)]
        table = self.query_one(JobTable)
        selected = self.selected()
        table.fill(shown, self.marks, selected.job_id if selected else None)
        self.rows = shown
        self._render_summary(len(listing.jobs), len(shown))
        self.query_one(DetailPane).follow(self.selected())

    def _render_summary(self, total: int, shown: int) -> None:
        loaded = self.loaded
        assert loaded is not None
        self.query_one("#tabs", Static).update(stage_tabs(
            stage_counts(loaded.listing), self.filters.stage, self.size.width - 2))
        summary = self.query_one("#summary", Static)
        summary.update(Text(summary_line(shown, total, self.filters, marked=len(self.marks),
                                         halted=loaded.halted, reachable=loaded.reachable,
                                         root=self.session.queue.root)))
        summary.set_class(loaded.halted is not None, "halted")

    def selected(self) -> Row | None:
        table = self.query_one(JobTable)
        if not self.rows or not 0 <= table.cursor_row < len(self.rows):
            return None
        return self.rows[table.cursor_row]

    def say(self, text: str, *, error: bool = False) -> None:
        message = self.query_one("#message", Static)
        message.update(Text(text))
        message.set_class(error, "error")

    # the size of things

    def on_resize(self, event: Resize) -> None:
        self.query_one("#body").set_class(event.size.width < SIDE_BY_SIDE, "narrow")
        self.call_after_refresh(self._render_rows)

    def on_job_table_resized(self) -> None:
        self.call_after_refresh(self._render_rows)

    # the detail pane

    def action_toggle_detail(self) -> None:
        pane = self.query_one(DetailPane)
        pane.toggle()
        pane.follow(self.selected())
        self.call_after_refresh(self._render_rows)  # the list has another width now

    @on(DataTable.RowHighlighted)
    def _cursor_moved(self) -> None:
        self.query_one(DetailPane).follow(self.selected())

    def action_go(self, where: str) -> None:
        self.query_one(JobTable).go(where)

    def action_scroll_detail(self, direction: int) -> None:
        self.query_one(DetailPane).page(direction)

    # marks and moves

    def action_mark(self) -> None:
        row = self.selected()
        if row is None:
            return
        self.marks ^= {row.job_id}
        self._render_rows()
        self.query_one(JobTable).action_cursor_down()

    def targets(self) -> list[Row]:
        """The marked jobs in the listing's order, else the one under the cursor."""
        if self.marks:
            return [row for job_id, row in self.every_row.items() if job_id in self.marks]
        row = self.selected()
        return [row] if row is not None else []

    def action_move(self, action: str) -> None:
        moves.act(self, Action(action))

    def action_halt_or_resume(self) -> None:
        moves.halt_or_resume(self)

    @work(thread=True, group="changes")
    def change(self, do: Callable[[], tuple[str, bool]]) -> None:
        """Run `do` (moves) in a thread, then say what it said and read the list again."""
        try:
            note, error = do()
        except (AqError, OSError) as err:
            note, error = str(err), True
        self._post(self._changed, note, error, self.session.load())

    def _changed(self, note: str, error: bool, loaded: Loaded) -> None:
        self.show(loaded)
        self.say(note, error=error)

    # other views

    def action_log(self) -> None:
        row = self.selected()
        if row is None:
            self.say("no job selected", error=True)
            return
        try:
            ref = self.session.find_log(row.job_id)
            attempts = self.session.attempts(row.job_id)
        except AqError as err:
            self.say(str(err), error=True)
            return
        self.app.push_screen(LogScreen(self.session, ref, attempts))

    def action_workers(self) -> None:
        self.app.push_screen(WorkersScreen(self.session, self.refresh_seconds))

    # filters

    def action_cycle_stage(self, step: int) -> None:
        self._filter(self.filters.next_stage(step))

    def action_stage(self, number: int) -> None:
        self._filter(self.filters.only_stage(number))

    def action_cycle_profile(self) -> None:
        listing = self.loaded.listing if self.loaded else None
        profiles = profiles_in_use(listing) if listing else []
        if not profiles:
            self.say("no job names a profile")
        self._filter(self.filters.next_profile(profiles))

    def action_search(self) -> None:
        self.query_one(SearchBar).open(self.filters.text)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "search":  # the list narrows as the person types
            self._filter(self.filters.with_text(event.value))

    def on_search_bar_closed(self, event: SearchBar.Closed) -> None:
        self._filter(self.filters.with_text(event.text))
        self.set_focus(self.query_one(JobTable))

    def action_back(self) -> None:
        """Escape: close the detail pane; else clear the marks; else clear the filters."""
        pane = self.query_one(DetailPane)
        if pane.open:
            self.action_toggle_detail()
        elif self.marks:
            self.marks.clear()
            self._render_rows()
        else:
            self._filter(Filters())

    def _filter(self, filters: Filters) -> None:
        self.filters = filters
        self._render_rows()
