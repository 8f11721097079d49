"""The workers view (`w`): what `aq workers` lists, read again at every refresh."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import get_current_worker

from aq.errors import AqError
from aq.ui.dash.session import Session
from aq.ui.dash.times import short
from aq.usecases.fleet import WorkerRow

COLUMNS = ("worker", "host", "last seen", "jobs", "state")


def worker_cells(row: WorkerRow) -> tuple[Text, ...]:
    """A worker as `aq workers` says it: how long ago it was last seen alive (its heartbeat, or
    a commit of its machine; on its own clock until this machine has seen it beat), the jobs it
    holds, whether it stopped."""
    if not row.silent_for:
        age = Text("first seen now", style="dim")
    else:
        age = Text(f"{short(row.silent_for)} ago" + (" (its clock)" if row.age_from == "its clock"
                                                      else ""))
    state = Text("stopped", style="dim") if row.retiring else Text("running", style="green")
    return (Text(row.worker, style="bold"), Text(row.host or "?"), age,
            Text(", ".join(row.jobs) or "no jobs", style="" if row.jobs else "dim"), state)


class WorkersScreen(Screen[None]):
    """The workers seen on the remote; `w` or Escape goes back to the job list."""

    NAME = "the workers view"
    DEFAULT_CSS = """
    WorkersScreen #workers-title { height: 1; padding: 0 1; background: $boost; }
    WorkersScreen DataTable { height: 1fr; overflow-x: hidden; }
    WorkersScreen #workers-message { height: auto; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [  # priority: taken in the order typed (jobs.py)
        Binding("w,escape", "app.pop_screen", "Jobs", priority=True),
        Binding("ctrl+r", "reload", "Reload", show=False, priority=True),
        Binding("q", "app.quit", "Quit", priority=True),
    ]

    def __init__(self, session: Session, refresh_seconds: float) -> None:
        super().__init__()
        self.session = session
        self.refresh_seconds = refresh_seconds
        self.rows: tuple[WorkerRow, ...] = ()

    def compose(self) -> ComposeResult:
        yield Static("workers: reading the remote…", id="workers-title", markup=False)
        table: DataTable[Text] = DataTable(id="workers", cursor_type="row", zebra_stripes=True)
        table.add_columns(*COLUMNS)
        yield table
        yield Static("", id="workers-message", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.action_reload()
        self.set_interval(self.refresh_seconds, self.action_reload)

    @work(thread=True, exclusive=True, group="workers")
    def action_reload(self) -> None:
        try:
            rows, problem = self.session.workers(), None
        except (AqError, OSError) as err:
            rows, problem = (), str(err)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self.show, rows, problem)

    def show(self, rows: Sequence[WorkerRow], problem: str | None) -> None:
        self.rows = tuple(rows)
        table = self.query_one(DataTable)
        table.clear()
        for row in rows:
            table.add_row(*worker_cells(row), key=row.worker)
        alive = sum(not row.retiring for row in rows)
        self.query_one("#workers-title", Static).update(
            f"workers: {len(rows)} seen on the remote, {alive} running" if problem is None
            else "workers")
        message = problem or ("" if rows else "no worker has published a heartbeat to the remote")
        self.query_one("#workers-message", Static).update(message)
