"""The job table: its cursor's moves, its columns fitted to the width it has (the
title is cut, never the status, and nothing scrolls sideways), its colours."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.binding import BindingType
from textual.events import Resize
from textual.message import Message
from textual.widgets import DataTable

from aq.ui.dash.look import PRIORITY_SHORT, PRIORITY_STYLE, STAGE_STYLE, status_style
from aq.ui.dash.rows import Row, cut

GAP = 1  # blank cells after every column
TITLE_FIRST = 40  # the title grows this far before a running attempt's last log line does
WIDE = 100  # from this width the profile shows, and ids get more room
TAIL_SEP = " · "


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    width: int


def _widest(header: str, values: Sequence[str]) -> int:
    return max([len(header), *(len(" ".join(value.split())) for value in values)])


def status_cell(row: Row) -> str:
    return row.status + (TAIL_SEP + row.tail if row.tail else "")


def layout(rows: Sequence[Row], width: int) -> tuple[Column, ...]:
    """The columns for `rows` in `width` cells: every column but the title at the width its
    content needs (ids capped); the status gets all it needs, the title what is left: up to
    TITLE_FIRST, then a running attempt's last log line grows, then the title again. Only when
    the status alone is wider than all the room there is is it cut."""
    fixed = [Column("#", _widest("#", [f"*{row.number}" for row in rows])),
             Column("id", min(_widest("id", [row.job_id for row in rows]),
                              24 if width >= WIDE else 16)),
             Column("stage", _widest("stage", [str(row.stage) for row in rows])),
             Column("pri", _widest("pri", [PRIORITY_SHORT.get(row.priority, row.priority)
                                           for row in rows]))]
    if width >= WIDE and any(row.profile for row in rows):
        fixed.append(Column("profile", min(_widest("profile", [row.profile for row in rows]), 16)))
    when = Column("when", _widest("when", [row.when for row in rows]))
    room = width - sum(column.width for column in (*fixed, when)) - GAP * (len(fixed) + 3)
    title_want = _widest("title", [row.title for row in rows])
    title = 0
    status = min(_widest("status", [row.status for row in rows]), max(room, 0))
    status_want = _widest("status", [status_cell(row) for row in rows])
    for cap, grows_title in ((TITLE_FIRST, True), (status_want, False), (title_want, True)):
        spare = room - title - status
        if grows_title:
            title += max(0, min(spare, min(cap, title_want) - title))
        else:
            status += max(0, min(spare, cap - status))
    return (*fixed, Column("title", max(title, 0)), Column("status", status), when)


def cells(row: Row, columns: Sequence[Column], marked: bool) -> list[Text]:
    """The row's cells, cut to their columns and coloured by stage and priority."""
    width = {column.name: column.width for column in columns}
    mark = "*" if marked else ""
    values = {
        "#": Text(f"{mark}{row.number}".rjust(width["#"]), style="bold magenta" if marked else "dim"),
        "id": Text(cut(row.job_id, width["id"]), style="bold magenta" if marked else "bold"),
        "stage": Text(str(row.stage), style=STAGE_STYLE[row.stage]),
        "pri": Text(PRIORITY_SHORT.get(row.priority, row.priority),
                    style=PRIORITY_STYLE.get(row.priority, "")),
        "profile": Text(cut(row.profile, width.get("profile", 0)), style="italic"),
        "title": Text(cut(row.title, width["title"]),
                      style=PRIORITY_STYLE.get(row.priority, "") if row.priority != "high" else ""),
        "status": _status(row, width["status"]),
        "when": Text(row.when, style="dim"),
    }
    return [values[column.name] for column in columns]


def _status(row: Row, width: int) -> Text:
    text = Text(cut(row.status, width), style=status_style(row.stage, row.status))
    room = width - len(text) - len(TAIL_SEP)
    if row.tail and room > 0:
        text.append(TAIL_SEP, style="dim")
        text.append(cut(row.tail, room), style="dim italic")
    return text


Shown = tuple[tuple[Column, ...], list[tuple[str, list[Text]]]]  # the columns; each row's cells


class JobTable(DataTable[Text], inherit_bindings=False):
    """The job list's table: one row per job. Its keys are the job list's (JobsScreen), so that
    a move of the cursor and a key acting on the job under it are taken in the order typed."""

    DEFAULT_CSS = """
    JobTable { height: 1fr; overflow-x: hidden; scrollbar-size-vertical: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = []  # the job list's, in key order: JobsScreen

    def __init__(self) -> None:
        super().__init__(id="jobs", cursor_type="row", zebra_stripes=True, cell_padding=0)
        self.shown: Shown | None = None  # what is on the table now

    class Resized(Message):
        """The table has another width: its columns are fitted again."""

    def on_resize(self, event: Resize) -> None:
        self.post_message(self.Resized())

    def content_width(self) -> int:
        """The cells a row may use: the table's width less its vertical scrollbar, kept always."""
        return max(self.size.width - 1, 0)

    def go(self, where: str) -> None:
        """Move the cursor: down, up, first, last, page_down or page_up."""
        if where == "first":
            self.move_cursor(row=0)
        elif where == "last":
            self.move_cursor(row=max(self.row_count - 1, 0))
        else:
            getattr(self, f"action_{'cursor_' if where in ('down', 'up') else ''}{where}")()

    def fill(self, rows: Sequence[Row], marks: Collection[str], keep: str | None) -> None:
        """Show `rows` (the marked ones marked) fitted to the width, the cursor kept on the job
        `keep` (when it left the view: at the place it was). The same jobs in the same columns
        (a refresh where only times and statuses moved on) are changed cell by cell."""
        columns = layout(rows, self.content_width())
        table = [(row.job_id, cells(row, columns, row.job_id in marks)) for row in rows]
        before, self.shown = self.shown, (columns, table)
        if before is not None and before[0] == columns and \
                [job_id for job_id, _ in before[1]] == [job_id for job_id, _ in table]:
            for (job_id, now), (_, was) in zip(table, before[1], strict=True):
                for column, cell, old in zip(columns, now, was, strict=True):
                    if (cell.plain, cell.style, cell.spans) != (old.plain, old.style, old.spans):
                        self.update_cell(job_id, column.name, cell)
            return
        place = self.cursor_row
        self.clear(columns=True)
        for column in columns:
            self.add_column(column.name, width=column.width + GAP, key=column.name)
        for job_id, row_cells in table:
            self.add_row(*row_cells, key=job_id)
        ids = [job_id for job_id, _ in table]
        if keep is not None and keep in ids:
            self.move_cursor(row=ids.index(keep))
        elif rows:
            self.move_cursor(row=min(place, len(rows) - 1))
