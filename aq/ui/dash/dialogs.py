"""The dashboard's questions: a yes or no, and a line of text.

Keys typed ahead, before a question's input is on the screen, are not lost: the dash opens
questions from priority bindings (run in key order, before the next key is handed on), and
`Ask` takes into its input the characters that reached it before its input had the focus."""

from __future__ import annotations

from typing import ClassVar

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

DIALOG_CSS = """
Confirm, Ask { align: center middle; }
#dialog { width: 80%; max-width: 100; height: auto; max-height: 90%; border: thick $accent;
          background: $surface; padding: 1 2; }
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
            yield Static(self.question, id="question", markup=False)
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
            yield Static(self.prompt, id="question", markup=False)
            yield Input(value=self.value, id="ask-input")
            yield Static("", id="ask-problem", markup=False)
            yield Static("Enter: ok    Esc: cancel", classes="hint", markup=False)

    def on_mount(self) -> None:
        # at once, not on the next tick: keys already on their way go to the input
        self.set_focus(self.query_one(Input))

    def on_key(self, event: events.Key) -> None:
        """A character that reached the dialog itself was typed before the input had the focus
        (the input takes the ones it gets): it goes into the input, in the order typed."""
        field = self.query_one(Input)
        if event.is_printable and event.character is not None and self.focused is field:
            field.insert_text_at_cursor(event.character)
            event.stop()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        answer = event.value.strip()
        if not answer and self.required:
            self.query_one("#ask-problem", Static).update(self.required)
            return
        self.dismiss(answer)

    def action_cancel(self) -> None:
        self.dismiss(None)
