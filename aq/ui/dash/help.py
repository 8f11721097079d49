"""The `?` overlay: every key of the screen under it, read from its bindings (the screen's,
the focused widget's and the app's), so the list cannot drift from what the keys do."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

MIN_SAID = 22  # a description's room, at least, before the keys go into more columns
SKIPPED = frozenset({"app.command_palette", "command_palette"})


def keys_of(screen: Screen[Any]) -> list[tuple[str, str]]:
    """(the keys, what they do) of every binding active on `screen`, keys of one action (the
    same description) together: the screen's own first, then the focused widget's, then the
    app's."""
    app = screen.app
    active = screen.active_bindings.values()
    grouped: dict[str, list[str]] = {}
    for item in sorted(active, key=lambda item: 0 if item.node is screen else
                       2 if item.node is app else 1):
        binding = item.binding
        if binding.action in SKIPPED or not binding.description:
            continue
        shown = app.get_key_display(binding)
        keys = grouped.setdefault(binding.description, [])
        if shown not in keys:
            keys.append(shown)
    return [(_joined(keys), description) for description, keys in grouped.items()]


def _joined(keys: list[str]) -> str:
    """`j ↓`; a run of digit keys as `0-7`."""
    if len(keys) > 2 and all(key.isdigit() and len(key) == 1 for key in keys):
        numbers = sorted(int(key) for key in keys)
        if numbers == list(range(numbers[0], numbers[-1] + 1)):
            return f"{numbers[0]}-{numbers[-1]}"
    return " ".join(keys)


def help_text(entries: list[tuple[str, str]], width: int) -> Text:
    """The entries in as many columns as `width` holds (three at most), read down each column;
    a description too long for its column is cut."""
    keys_width = max((len(keys) for keys, _ in entries), default=0)
    said_width = max((len(what) for _, what in entries), default=0)
    across = max(1, min(3, (width + 2) // (keys_width + 2 + min(said_width, MIN_SAID) + 2)))
    said_width = min(said_width, (width + 2) // across - keys_width - 4)
    down = -(-len(entries) // across)
    text = Text(no_wrap=True, overflow="ellipsis")
    for line in range(down):
        for column in range(across):
            index = column * down + line
            if index < len(entries):
                keys, what = entries[index]
                text.append(keys.ljust(keys_width), style="bold cyan")
                text.append("  " + _cut(what, said_width).ljust(said_width)
                            + ("  " if column < across - 1 else ""))
        text.append("\n")
    text.rstrip()
    return text


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


class HelpScreen(ModalScreen[None]):
    """Every key of the screen under it; Escape, `?` or `q` closes it."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen #help { width: 100%; height: auto; max-height: 100%; border: round $accent;
                       background: $surface; padding: 0 1; }
    HelpScreen .hint { color: $text-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "app.pop_screen", "Close help", show=False),
    ]

    def __init__(self, under: Screen[Any]) -> None:
        super().__init__()
        self.title_line = f"Keys of {getattr(under, 'NAME', 'this screen')}"
        self.entries = keys_of(under)

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Static(self.title_line, classes="hint", markup=False)
            yield Static(help_text(self.entries, self.app.size.width - 4), id="help-keys",
                         markup=False)
            yield Static("Esc / ? / q: close", classes="hint", markup=False)
