"""One card's words, whatever the layout: its priority label, its warning marks, its facts, and
the status a person reads first (who runs it, for how long and at what cost; why it waits; why it
failed), with every time said relative to when the board was read ("12m", "retry in 4m")."""

from __future__ import annotations

import re
from datetime import datetime

from rich.console import Console
from rich.text import Text

from aq.core.durations import format_duration
from aq.core.events import time_or_none
from aq.core.lifecycle import Stage
from aq.ui.board.data import Card

PRIORITY_LOOK = {"critical": ("CRIT", "bold red"), "high": ("HIGH", "yellow"),
                 "medium": ("MED", ""), "low": ("LOW", "dim")}
STAGE_STYLE = {"inbox": "bold", "building": "bold cyan", "review": "bold magenta",
               "testing": "bold blue", "shipped": "bold green", "failed": "bold red",
               "dead_letter": "bold red"}
STATUS_LINES = 2  # a reason or a failure wraps to this many lines before it is cut
_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?"
# a time in a reason, with the words before it that a relative time replaces, and the seconds
# aq puts after it, which the relative time says better: "until <iso> (42s more)"
_TIME_IN_REASON = re.compile(
    rf"(?:(?P<until>until)\s+|(?P<before>(?:not\s+)?before)\s+)?(?P<at>{_ISO})"
    r"(?:\s*\((?:in\s+)?\d+(?:\.\d+)?s(?:\s+more)?\))?")


def priority(card: Card) -> tuple[str, str]:
    """The card's priority as its label and style: CRIT in bold red down to a dim LOW."""
    return PRIORITY_LOOK.get(card.priority, (card.priority.upper(), ""))


def marks(card: Card) -> list[tuple[str, str]]:
    """What a person must not miss, so no cut may take it: files changed out of scope, work not
    on the repo's remote yet."""
    found = []
    if card.out_of_scope:
        found.append((f"⚠ scope ({card.out_of_scope})", "bold red"))
    if not card.branch_pushed:
        found.append(("⚠ unpushed", "bold red"))
    return found


def facts(card: Card, lead: list[tuple[str, str]]) -> Text | None:
    """The short line of facts: `lead` first (the marks, the priority where it did not fit beside
    the id), then attempt, children, parent, cost (a building card says it in its status),
    branch, profile, engine, capabilities, tracker item."""
    parts = list(lead)
    if card.attempt:
        parts.append((f"attempt {card.attempt}", "dim"))
    if card.children is not None:
        parts.append((f"children {card.children[0]}/{card.children[1]}", "dim"))
    if card.parent:
        parts.append((f"child of {card.parent}", "dim"))
    if card.cost_usd is not None and card.holder is None:
        parts.append((f"${card.cost_usd:.2f}", "dim"))
    if card.branch:
        parts.append((clean(card.branch), "dim"))
    for fact in (card.profile, card.engine, " ".join(card.capabilities), card.tracker_item):
        if fact:
            parts.append((clean(fact), "dim"))
    return joined(parts) if parts else None


def status(card: Card, now: datetime | None) -> Text | None:
    """What a person reads first on the card, by its stage: a building job's holder, how long its
    attempt has run, its cost so far and its heartbeat's age; an inbox job's retry time or why it
    waits, else `ready`; a failed or dead-lettered job's failure line."""
    if card.holder is not None:
        return _running(card, now)
    if card.stage == Stage.INBOX:
        retry = time_or_none(card.retry_at)
        if retry is not None and now is not None:
            return Text(f"↻ retry in {span((retry - now).total_seconds())}", style="yellow")
        if card.blocked is not None:
            return Text("⊘ " + humane(clean(card.blocked), now), style="yellow")
        return Text("ready", style="green")
    if card.failure and card.stage in (Stage.FAILED, Stage.DEAD_LETTER):
        return Text("✗ " + clean(card.failure), style="red")
    return None


def _running(card: Card, now: datetime | None) -> Text:
    parts = [(clean(card.holder or ""), "cyan")]
    started = time_or_none(card.started)
    if started is not None and now is not None:
        parts.append((span((now - started).total_seconds()), "bold"))
    if card.cost_usd is not None:
        parts.append((f"${card.cost_usd:.2f}", ""))
    if card.heartbeat_age is not None:
        parts.append((f"seen {span(card.heartbeat_age)} ago", "dim"))
    return joined(parts)


def span(seconds: float) -> str:
    """A time span as a glance wants it: `45s`, `12m`, `3h05m`, `2d4h` (no seconds past a minute)."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{int(seconds)}s"
    return format_duration(seconds // 60 * 60)


def humane(text: str, now: datetime | None) -> str:
    """`text` with each time in it said relative to `now`: "preferred for w2 until <iso> (42s
    more)" becomes "preferred for w2 for 42s more"; without `now`, the time to the minute."""
    def relative(found: re.Match[str]) -> str:
        moment = time_or_none(found["at"])
        if moment is None:
            return found[0]
        if now is None:
            return ("until " if found["until"] else "") + moment.strftime("%Y-%m-%d %H:%M UTC")
        ahead = (moment - now).total_seconds()
        if ahead <= 0:
            return f"{span(-ahead)} ago"
        return f"for {span(ahead)} more" if found["until"] else f"in {span(ahead)}"

    return _TIME_IN_REASON.sub(relative, text)


def joined(parts: list[tuple[str, str]]) -> Text:
    line = Text()
    for index, (fact, style) in enumerate(parts):
        if index:
            line.append(" · ", style="dim")
        line.append(fact, style=style)
    return line


def wrapped(console: Console, text: Text, width: int, lines: int = STATUS_LINES) -> list[Text]:
    """`text` wrapped to `width`, at most `lines` lines: the last one cut with '…'."""
    if width < 1:
        return []
    pieces = list(text.wrap(console, width, overflow="fold"))
    if len(pieces) > lines:
        rest = Text(" ").join(_stripped(piece) for piece in pieces[lines - 1:])
        pieces = [*pieces[:lines - 1], rest]
    return [fit(piece, width) for piece in pieces]


def _stripped(text: Text) -> Text:
    text = text.copy()
    text.rstrip()
    return text


def fit(text: Text, width: int | None = None) -> Text:
    """One line, never wrapped: cut with an ellipsis at `width` (None: wherever it is printed)."""
    text.no_wrap = True
    text.overflow = "ellipsis"
    text.end = "\n"
    if width is not None:
        text.rstrip()
        text.truncate(width, overflow="ellipsis")
    return text


def clean(text: str) -> str:
    """Text from a job file, made safe for one terminal line: no escape sequence (a title may
    hold one) nor other control character, whitespace runs as one space."""
    if text.isprintable():
        return text
    text = _ESCAPE.sub(" ", text)
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
