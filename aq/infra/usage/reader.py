"""What every usage reader shares: the line-by-line feed, the running figure, JSON lookups."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from aq.core.usage import NOTHING, Usage, count, one_line, short_text, with_tokens

MAX_READ = 64 * 2**20  # characters of a side file, or of one pretty-printed document, read
LINE_CHUNK = 2**20  # a side file is read in lines of at most this, so no line can eat memory


class UsageReader:
    """Turns what one CLI prints into a running `Usage`; a subclass per output format.

    `feed` takes each line of the CLI's stdout as it arrives; `read_file` a side file it wrote
    (aider's analytics log, copilot's usage file: `side_file` says which, None for the rest).
    """

    name: ClassVar[str] = ""
    side_file: ClassVar[str | None] = None
    _openers: ClassVar[str] = "{"  # first character of a line worth parsing (cheap pre-check)

    def __init__(self) -> None:
        self._now = NOTHING

    @property
    def usage(self) -> Usage | None:
        """What the CLI has reported so far; None while it has reported nothing usable."""
        return None if self._now == NOTHING else self._now

    def feed(self, line: str) -> None:
        """One line of the CLI's stdout. Never raises."""
        # The parsing below is written not to raise; this is the backstop, because usage is
        # bookkeeping and a bug in it must never fail the job whose output it watches.
        with contextlib.suppress(Exception):
            self._feed(line)

    def read_file(self, path: Path) -> None:
        """A side file the CLI wrote; missing or garbage changes nothing. Never raises."""

    def _feed(self, line: str) -> None:
        for event in self._events(line):
            self._take(event)

    def _events(self, text: str) -> Iterator[dict[str, object]]:
        text = text.strip()
        if not text or text[0] not in self._openers:
            return
        parsed = loads(text)
        if isinstance(parsed, dict):
            yield parsed
        elif isinstance(parsed, list):  # qwen's json mode: every message in one array
            yield from (item for item in parsed if isinstance(item, dict))

    def _take(self, event: dict[str, object]) -> None:
        """One JSON object the CLI printed."""

    def _set_tokens(self, tokens: Usage) -> None:
        self._now = with_tokens(self._now, tokens)

    def _take_session(self, value: object) -> None:
        session = short_text(value)
        if session is not None:
            self._now = replace(self._now, session=session)

    def _count_turn(self) -> None:
        self._now = replace(self._now, turns=(self._now.turns or 0) + 1)

    def _fail(self, what: str, detail: object) -> None:
        """Record the CLI's failure signal as one line, "<what>: <detail>"."""
        line = one_line(f"{what}: {short_text(detail) or 'no detail'}")
        self._now = replace(self._now, cli_error=line)


def loads(text: str) -> object:
    """The JSON value of `text`, or None: garbage, truncated JSON, nesting too deep, a number
    with more digits than Python converts."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def as_dict(value: object) -> dict[str, object]:
    """`value` if it is a JSON object, else an empty one (so lookups chain without checks)."""
    return value if isinstance(value, dict) else {}


def first_count(raw: dict[str, object], *keys: str) -> int | None:
    """The first of `keys` that holds a count (CLIs spell the same field differently)."""
    for key in keys:
        value = count(raw.get(key))
        if value is not None:
            return value
    return None

