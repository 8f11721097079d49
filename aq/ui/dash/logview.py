"""The log viewer: an attempt's log, followed while the attempt runs here; another attempt
(`[`, `]`, `a`), and a search (`/`, then `n` and `N`)."""

from __future__ import annotations

import codecs
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Input, Log, Static

from aq.errors import AqError
from aq.ui.dash.dialogs import Ask
from aq.ui.dash.search import Needle, SearchBar, matching_lines
from aq.ui.dash.session import Session
from aq.usecases.logs import LogRef, read_log

LOG_POLL = 0.5  # seconds between looks at a running attempt's live log


class LogScreen(Screen[None]):
    """An attempt's log; while the attempt runs here, new text is appended as it arrives."""

    NAME = "the log viewer"
    DEFAULT_CSS = """
    LogScreen #log-title { height: 1; padding: 0 1; background: $boost; }
    LogScreen Log { height: 1fr; }
    LogScreen #log-message { height: auto; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [  # priority: taken in the order typed (jobs.py)
        Binding("escape,q", "back", "Back", priority=True),
        Binding("slash", "search", "Search", priority=True),
        Binding("n", "next_match(1)", "Next match", priority=True),
        Binding("N", "next_match(-1)", "Previous match", priority=True),
        Binding("left_square_bracket", "attempt(-1)", "Previous attempt", priority=True),
        Binding("right_square_bracket", "attempt(1)", "Next attempt", priority=True),
        Binding("a", "pick_attempt", "Attempt…", priority=True),
        Binding("g,home", "top", "Top", show=False, priority=True),
        Binding("G,end", "bottom", "Bottom", show=False, priority=True),
    ]

    def __init__(self, session: Session, ref: LogRef, attempts: int | None = None) -> None:
        super().__init__()
        self.session = session
        self.ref = ref
        self.attempts = attempts or ref.attempt
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # one look per tick of the screen's timer: the log is read on the UI's thread
        self._reading = read_log(session.queue, ref, follow=True, sleep=lambda _seconds: None)
        self._timer: Timer | None = None
        self._following = ref.running
        self.needle = ""
        self.matches: list[int] = []
        self.match = -1

    def compose(self) -> ComposeResult:
        yield Static(self._title(), id="log-title", markup=False)
        log = Log(id="log", highlight=True)
        log.highlighter = Needle()
        yield log
        yield Static("", id="log-message", markup=False)
        yield SearchBar(placeholder="search the log (Enter: keep, Esc: clear)", id="log-search")
        yield Footer()

    def _title(self) -> str:
        ref = self.ref
        how = "following the running attempt" if self._following else "finished"
        found = ""
        if self.needle:
            at = f"{self.match + 1} of {len(self.matches)}" if self.matches else "none"
            found = f"  /{self.needle}: {at}"
        return (f"{ref.job_id}  attempt {ref.attempt} of {self.attempts}  ({how}){found}  "
                f"{self.session.queue.relative(ref.path)}")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The search line, while it is open, takes every key but its own."""
        return not isinstance(self.focused, Input)

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
        self._retitle()
        return False

    def _retitle(self) -> None:
        self.query_one("#log-title", Static).update(self._title())

    def on_unmount(self) -> None:
        self._reading.close()  # the log file too

    def action_back(self) -> None:
        self.app.pop_screen()

    # search

    def action_search(self) -> None:
        self.query_one(SearchBar).open(self.needle)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "log-search":
            self._find(event.value)

    def on_search_bar_closed(self, event: SearchBar.Closed) -> None:
        self._find(event.text)
        self.set_focus(self.query_one(Log))

    def _find(self, needle: str) -> None:
        log = self.query_one(Log)
        self.needle = needle.strip()
        assert isinstance(log.highlighter, Needle)
        log.highlighter.needle = self.needle
        log.notify_style_update()  # its lines are drawn again, with the new marks
        log.refresh()
        self.matches = matching_lines(list(log.lines), self.needle)
        top = int(log.scroll_y)
        self.match = next((i for i, line in enumerate(self.matches) if line >= top), 0) \
            if self.matches else -1
        self._show_match()

    def action_next_match(self, step: int) -> None:
        if not self.matches:
            self.query_one("#log-message", Static).update(
                f"no line holds {self.needle!r}" if self.needle else "no search: press / first")
            return
        self.match = (self.match + step) % len(self.matches)
        self._show_match()

    def _show_match(self) -> None:
        if self.matches:
            self.query_one(Log).scroll_to(y=max(self.matches[self.match] - 2, 0), animate=False)
        self.query_one("#log-message", Static).update("")
        self._retitle()

    def action_top(self) -> None:
        self.query_one(Log).scroll_home(animate=False)

    def action_bottom(self) -> None:
        self.query_one(Log).scroll_end(animate=False)

    # other attempts

    def action_attempt(self, step: int) -> None:
        self._open(self.ref.attempt + step)

    def action_pick_attempt(self) -> None:
        def answered(text: str | None) -> None:
            if text:
                self._open(int(text) if text.isdigit() else -1)

        self.app.push_screen(Ask(f"Which attempt of {self.ref.job_id}? (1 to {self.attempts})"),
                             answered)

    def _open(self, attempt: int) -> None:
        if not 1 <= attempt <= self.attempts:
            self.query_one("#log-message", Static).update(
                f"{self.ref.job_id} has attempts 1 to {self.attempts}")
            return
        try:
            ref = self.session.find_log(self.ref.job_id, attempt)
        except AqError as err:
            self.query_one("#log-message", Static).update(str(err))
            return
        self.app.switch_screen(LogScreen(self.session, ref, self.attempts))
