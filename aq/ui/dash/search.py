"""The search line under a list or a log (`/`), and the highlighter that marks what it found.

It is on the screen from the start, hidden: `/` shows it and gives it the focus at once (not
on the next tick), so the keys typed right after `/` land in it."""

from __future__ import annotations

from typing import ClassVar

from rich.highlighter import Highlighter
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Input


class SearchBar(Input):
    """A one-line search: Enter keeps what was typed, Escape puts back what was there before."""

    DEFAULT_CSS = """
    SearchBar { dock: bottom; display: none; border: none; height: 1; padding: 0 1;
                background: $boost; }
    SearchBar:focus { border: none; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", show=False)]

    class Closed(Message):
        """The search line closed: `text` is the search to keep."""

        def __init__(self, bar: SearchBar, text: str) -> None:
            super().__init__()
            self.bar = bar
            self.text = text

    def __init__(self, *, placeholder: str, id: str) -> None:
        super().__init__(placeholder=placeholder, id=id)
        self._before = ""

    def open(self, text: str) -> None:
        self._before = text
        self.value = text
        self.cursor_position = len(text)
        self.display = True
        self.screen.set_focus(self)

    def action_cancel(self) -> None:
        self._close(self._before)

    async def action_submit(self) -> None:
        self._close(self.value.strip())

    def _close(self, text: str) -> None:
        self.display = False
        self.post_message(self.Closed(self, text))


class Needle(Highlighter):
    """Marks every place `needle` occurs (any case) in a line."""

    def __init__(self, needle: str = "") -> None:
        self.needle = needle

    def highlight(self, text: Text) -> None:
        if self.needle:
            text.highlight_words([self.needle], style="black on yellow", case_sensitive=False)


def matching_lines(lines: list[str], needle: str) -> list[int]:
    """The numbers (from 0) of the lines holding `needle`, any case."""
    low = needle.lower()
    return [number for number, line in enumerate(lines) if low and low in line.lower()]
