"""The detail pane: what `aq show` prints for the job under the cursor, read again at every
refresh while the pane is open."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static
from textual.worker import get_current_worker

from aq.errors import AqError
from aq.ui.dash.look import STAGE_STYLE
from aq.ui.dash.rows import Row
from aq.ui.dash.session import Session


def detail_of(session: Session, job_id: str | None) -> str | None:
    """What `aq show` prints for `job_id`, or why it cannot be read; None for no job."""
    if job_id is None:
        return None
    try:
        return session.detail(job_id)
    except (AqError, OSError) as err:
        return str(err)


class DetailPane(VerticalScroll):
    """A job in full, beside the list (below it on a narrow terminal). It never takes the focus:
    the list keeps the keys, and the pane follows the cursor."""

    DEFAULT_CSS = """
    DetailPane { display: none; border-left: tall $accent; padding: 0 1; width: 1fr;
                 height: 1fr; overflow-x: hidden; scrollbar-size-vertical: 1; }
    DetailPane #detail-title { text-style: bold; }
    """
    can_focus = False

    def __init__(self, session: Session) -> None:
        super().__init__(id="detail")
        self.session = session
        self.job_id: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="detail-title", markup=False)
        yield Static("", id="detail-text", markup=False)

    @property
    def open(self) -> bool:
        return bool(self.display)

    def toggle(self) -> None:
        self.display = not self.open
        self.job_id = None  # opened again: read afresh

    def follow(self, row: Row | None) -> None:
        """Show `row`'s job, when the pane is open and showed another (read in a thread)."""
        job_id = row.job_id if row is not None else None
        if not self.open or job_id == self.job_id:
            return
        self.job_id = job_id
        title = Text()
        if row is not None:
            title.append(f"job {row.number}  {row.job_id}  ")
            title.append(str(row.stage), style=STAGE_STYLE[row.stage])
        self.query_one("#detail-title", Static).update(title)
        self.query_one("#detail-text", Static).update("reading…" if row is not None else "")
        self.scroll_home(animate=False)
        if job_id is not None:
            self._read(job_id)

    @work(thread=True, exclusive=True, group="detail")
    def _read(self, job_id: str) -> None:
        text = detail_of(self.session, job_id)
        if text is not None and not get_current_worker().is_cancelled:
            self.app.call_from_thread(self.show, job_id, text)

    def show(self, job_id: str, text: str) -> None:
        """`text` for `job_id`, unless the cursor moved on meanwhile."""
        if job_id == self.job_id:
            self.query_one("#detail-text", Static).update(Text(text.rstrip("\n")))

    def page(self, direction: int) -> None:
        self.scroll_relative(y=direction * max(self.size.height // 2, 1), animate=False)
