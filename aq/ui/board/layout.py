"""The board laid out for a terminal of a given width and height.

Two layouts, chosen by the width each stage would get:

- columns (a kanban, stages side by side) when every stage shown gets `COLUMN_MIN` cells: all
  seven from `WIDE` columns on, fewer with `--stage`;
- lanes otherwise (an 80-column terminal): the stages stacked, each a title line with its count,
  its cards one line each (id, priority, title, status). A status too long to sit beside the
  title (a reason, a failure) goes on the line under it, wrapped to two lines, never cut to a
  stub. Like lazygit's panels on a small terminal, every stage keeps its title line, so every
  stage is on screen whatever the height; the lines left are shared among the stages a card at a
  time, and a stage whose cards do not all fit says how many more on its title line.

With a height (a terminal's), nothing is drawn past it: a lane shows its facts line too only when
every card fits with it, a column as many cards as its height holds.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.text import Text

from aq.core.lifecycle import STAGES, Stage
from aq.errors import UsageError
from aq.ui.board import cards as look
from aq.ui.board.data import BoardData, Card

CARDS_SHOWN = 8  # per stage when no height limits the board; the rest are counted
COLUMN_MIN = 20  # a column narrower than this cuts a reason to a stub: the stages go in lanes
SEPARATOR = " │ "
WIDE = 7 * COLUMN_MIN + 6 * len(SEPARATOR)  # from this many columns on, all seven side by side
EMPTY = "\N{EN DASH}"  # what an empty column shows
PROBLEMS_SHOWN = 3
INDENT = 2  # a lane's cards, under its title
DETAIL_INDENT = 4  # a lane card's facts and long status, under its id
MIN_TITLE = 12  # a status sits beside the title only if this much of the title still shows
# when lines run short, the stages that get theirs first: what needs a person, then what runs
ATTENTION = ("failed", "dead_letter", "review", "building", "testing", "inbox", "shipped")

Column = tuple[str, int, tuple[Card, ...]]


def stages_from(given: Sequence[str] | None) -> tuple[str, ...] | None:
    """The stages `--stage` names (repeated, or comma-separated), in board order; None: all."""
    names = [part.strip() for value in given or () for part in value.split(",") if part.strip()]
    for name in names:
        if name not in STAGES:
            raise UsageError(f"--stage {name!r} is not a stage: {', '.join(STAGES)}")
    return tuple(stage for stage in STAGES if stage in names) or None


def render_board(data: BoardData, *, width: int, height: int | None = None,
                 max_cards: int | None = None, stages: Sequence[str] | None = None) -> _Board:
    """The board `width` columns wide and at most `height` lines high (None: as high as it
    takes), showing `stages` (None: all). A stage shows at most `max_cards` cards (None: what
    fits the height, else `CARDS_SHOWN`)."""
    cap = max_cards if max_cards is not None else (CARDS_SHOWN if height is None else 10**6)
    return _Board(data, width, height, cap, tuple(stages) if stages else None)


def board_text(data: BoardData, *, width: int, color: bool, max_cards: int | None = None,
               height: int | None = None, stages: Sequence[str] | None = None) -> str:
    """The board as text `width` columns wide; without `color`, plain text with no escape code."""
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=color, no_color=not color,
                      color_system="standard" if color else None, force_jupyter=False,
                      force_interactive=False, legacy_windows=False, highlight=False,
                      markup=False, emoji=False, soft_wrap=False)
    console.print(render_board(data, width=width, height=height, max_cards=max_cards,
                               stages=stages))
    if color:
        return out.getvalue()
    return "".join(line.rstrip() + "\n" for line in out.getvalue().splitlines())


class _Board:
    """The board as rich renders it: lines laid out here, each exactly as wide as it may be."""

    def __init__(self, data: BoardData, width: int, height: int | None, max_cards: int,
                 stages: tuple[str, ...] | None) -> None:
        self.data, self.width, self.height = data, width, height
        self.max_cards, self.stages = max_cards, stages

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(1, min(self.width, options.max_width))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from board_lines(console, self.data, width=min(self.width, options.max_width),
                               height=self.height, max_cards=self.max_cards, stages=self.stages)


def board_lines(console: Console, data: BoardData, *, width: int, height: int | None,
                max_cards: int, stages: tuple[str, ...] | None) -> list[Text]:
    """The board's lines: a header, the stages, and the queue's problems last."""
    shown = [column for column in data.columns if stages is None or column[0] in stages]
    footer = _problem_lines(data.problems, width)
    budget = None if height is None else max(0, height - 1 - len(footer) - bool(footer))
    limit = max_cards if budget is None else min(max_cards, budget)  # a card takes a line or more
    picked = [(stage, count, cards[:limit]) for stage, count, cards in shown]
    if len(shown) > 1 and _column_width(width, len(shown)) >= COLUMN_MIN:
        body, counts = _column_lines(console, picked, width, budget, data.now)
    else:
        body, counts = _lane_lines(console, picked, width, budget, data.now)
    # a card the board has but did not show (shipped's older ones it never has: `aq ls` lists them)
    hidden = any(counts[stage] < len(cards) for stage, _count, cards in shown)
    where = "aq ls" if stages else "aq board"  # a focused board shows what fits: `aq ls` lists all
    header = _header(data, width, f"more: {where} -s STAGE" if hidden else None)
    return [header, *body, *([Text("")] if footer else []), *footer]


def _header(data: BoardData, width: int, hint: str | None) -> Text:
    total = sum(count for _stage, count, _cards in data.columns)
    state = (("HALTED: " + look.clean(data.halted), "bold red") if data.halted is not None
             else ("running", "green"))
    workers = f"{data.workers} worker{'' if data.workers == 1 else 's'} seen"
    line = Text.assemble(("aq board", "bold"), "  ", state, "  ·  ", workers,
                         "  ·  ", f"{total} job{'' if total == 1 else 's'}")
    if hint is not None:  # where the cards that did not fit are
        line.append("  ·  " + hint, style="dim")
    return look.fit(line, width)


# --- lanes -------------------------------------------------------------------------------------

def _lane_lines(console: Console, columns: Sequence[Column], width: int, budget: int | None,
                now: datetime | None) -> tuple[list[Text], dict[str, int]]:
    """The stages one under the other; with a `budget` of lines, the cards that fit it. Also
    how many cards each stage shows."""
    def made(full: bool) -> dict[str, list[list[Text]]]:
        return {stage: [_lane_card(console, card, width, _id_width(cards, width), now, full)
                        for card in cards] for stage, _count, cards in columns}

    cards = made(full=True)
    needed = len(columns) + sum(len(card) for lane in cards.values() for card in lane)
    if budget is not None and needed > budget:
        cards = made(full=False)
        cards = _share(cards, budget - len(columns))
    lines: list[Text] = []
    for stage, count, _cards in columns:
        lines.append(_lane_title(stage, count, len(cards[stage]), width))
        lines += [line for card in cards[stage] for line in card]
    return lines, {stage: len(lane) for stage, lane in cards.items()}


def _share(lanes: dict[str, list[list[Text]]], room: int) -> dict[str, list[list[Text]]]:
    """The first cards of each lane that fit `room` lines, handed out a card at a time to each
    lane in turn (by `ATTENTION`), so a full lane cannot crowd the others out. A lane whose next
    card does not fit takes no more: a card further down is never shown above it."""
    taken = dict.fromkeys(lanes, 0)
    growing = sorted(lanes, key=lambda stage: ATTENTION.index(stage) if stage in ATTENTION else 99)
    while growing:
        for stage in list(growing):
            lane, index = lanes[stage], taken[stage]
            if index < len(lane) and len(lane[index]) <= room:
                room -= len(lane[index])
                taken[stage] += 1
            else:
                growing.remove(stage)
    return {stage: lane[:taken[stage]] for stage, lane in lanes.items()}


def _lane_title(stage: str, count: int, shown: int, width: int) -> Text:
    """`inbox (31) ──── … 27 more`: the stage, its count, and how many of its cards are not shown."""
    label = Text(f"{stage} ({count})", style=look.STAGE_STYLE.get(stage, "bold"))
    more = ""
    if shown < count:
        more = f" … {count - shown} {'earlier' if stage == Stage.SHIPPED else 'more'}"
    rule = width - cell_len(label.plain) - cell_len(more) - 1
    line = label + Text(" " + "─" * max(0, rule), style="dim") + Text(more, style="dim")
    return look.fit(line, width)


def _id_width(cards: Sequence[Card], width: int) -> int:
    """The width a lane's ids are padded to, so its titles start in one column."""
    return min(max((cell_len(card.job_id) for card in cards), default=0), max(8, width // 4))


def _lane_card(console: Console, card: Card, width: int, id_width: int, now: datetime | None,
               full: bool) -> list[Text]:
    """A card in a lane: `id  PRIO  marks title  status` on one line; the status under it when
    it does not fit beside the title, wrapped to two lines; with `full`, the facts between."""
    label, style = look.priority(card)
    head = Text(" " * INDENT)
    head.append(look.clean(card.job_id).ljust(id_width), style="bold")
    head.append("  ")
    head.append(label.ljust(4), style=style)
    head.append("  ")
    for mark, mark_style in look.marks(card):
        head.append(mark + " ", style=mark_style)
    status = look.status(card, now)
    room = width - cell_len(head.plain)
    status_cells = cell_len(status.plain) if status is not None else 0
    beside = status is not None and room - status_cells - 2 >= min(MIN_TITLE, cell_len(card.title))
    title = Text(look.clean(card.title))
    if beside and status is not None:
        title = look.fit(title, room - status_cells - 2)
        title.pad_right(room - status_cells - cell_len(title.plain))
        lines = [look.fit(head + title + status, width)]
    else:
        lines = [look.fit(head + title, width)]
    inner = width - DETAIL_INDENT
    facts = look.facts(card, []) if full else None
    if facts is not None:
        lines.append(look.fit(Text(" " * DETAIL_INDENT) + facts, width))
    if status is not None and not beside:
        lines += [look.fit(Text(" " * DETAIL_INDENT) + part, width)
                  for part in look.wrapped(console, status, inner)]
    return lines


# --- columns -----------------------------------------------------------------------------------

def _column_width(width: int, columns: int) -> int:
    return (width - len(SEPARATOR) * (columns - 1)) // columns


def _column_lines(console: Console, columns: Sequence[Column], width: int, budget: int | None,
                  now: datetime | None) -> tuple[list[Text], dict[str, int]]:
    """The stages side by side: a title row, a rule, then each stage's cards, blank-separated.
    Also how many cards each stage shows."""
    spare = width - len(SEPARATOR) * (len(columns) - 1)
    widths = [spare // len(columns) + (index < spare % len(columns))
              for index in range(len(columns))]
    room = None if budget is None else max(0, budget - 2)
    cells = [_column_cell(console, column, cell_width, room, now)
             for column, cell_width in zip(columns, widths, strict=True)]
    titles = [Text(f"{stage} ({count})", style=look.STAGE_STYLE.get(stage, "bold"))
              for stage, count, _cards in columns]
    rows = [_row(titles, widths, SEPARATOR),
            _row([Text("─" * w, style="dim") for w in widths], widths, "─┼─")]
    depth = max((len(lines) for lines, _shown in cells), default=0)
    for index in range(depth):
        rows.append(_row([lines[index] if index < len(lines) else Text("")
                          for lines, _shown in cells], widths, SEPARATOR))
    return rows, {stage: shown for (stage, _count, _cards), (_lines, shown) in zip(
        columns, cells, strict=True)}


def _row(cells: Sequence[Text], widths: Sequence[int], separator: str) -> Text:
    row = Text()
    for index, (cell, cell_width) in enumerate(zip(cells, widths, strict=True)):
        if index:
            row.append(separator, style="dim")
        piece = look.fit(cell.copy(), cell_width)
        piece.pad_right(cell_width - cell_len(piece.plain))
        row.append_text(piece)
    return look.fit(row)


def _column_cell(console: Console, column: Column, width: int, room: int | None,
                 now: datetime | None) -> tuple[list[Text], int]:
    """A stage's cards in its column, as many as `room` lines hold: (lines, cards shown)."""
    stage, count, cards = column
    if not cards:
        return [Text(EMPTY, style="dim")], 0
    lines: list[Text] = []
    shown = 0
    for card in cards:
        made = ([Text("")] if lines else []) + _column_card(console, card, width, now)
        left_over = count - shown - 1  # after this one
        if room is not None and len(lines) + len(made) + (2 if left_over else 0) > room:
            break
        lines += made
        shown += 1
    if count > shown:
        word = "earlier" if stage == Stage.SHIPPED else "more"
        lines += [*([Text("")] if lines else []),
                  look.fit(Text(f"… {count - shown} {word}", style="dim"), width)]
    return lines, shown


def _column_card(console: Console, card: Card, width: int, now: datetime | None) -> list[Text]:
    """A card in a column: `id  PRIO`, the title, the facts, the status wrapped to two lines."""
    label, style = look.priority(card)
    line = Text(look.clean(card.job_id), style="bold")
    beside = cell_len(line.plain) + 1 + len(label) <= width
    lead = look.marks(card)
    if beside:  # else the priority leads the facts: an id's tail tells it from its siblings
        line.pad_right(width - cell_len(line.plain) - len(label))
        line.append(label, style=style)
    else:
        lead.append((label, style))
    lines = [look.fit(line, width), look.fit(Text(look.clean(card.title)), width)]
    facts = look.facts(card, lead)
    if facts is not None:
        lines.append(look.fit(facts, width))
    status = look.status(card, now)
    if status is not None:
        lines += look.wrapped(console, status, width)
    return lines


def _problem_lines(problems: Sequence[str], width: int) -> list[Text]:
    lines = [look.fit(Text("⚠ " + look.clean(problem), style="yellow"), width)
             for problem in problems[:PROBLEMS_SHOWN]]
    if len(problems) > PROBLEMS_SHOWN:
        lines.append(look.fit(Text(f"… and {len(problems) - PROBLEMS_SHOWN} more: run 'aq lint'",
                                   style="dim"), width))
    return lines
