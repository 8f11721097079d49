"""The log viewer: an attempt's log, followed while the attempt runs here."""

from __future__ import annotations

import codecs
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Log, Static

from aq.errors import AqError
from aq.ui.dash.session import Session
from aq.usecases.logs import LogRef, read_log

LOG_POLL = 0.5  # seconds between looks at a running attempt's live log


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
