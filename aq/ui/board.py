"""`aq board`: the queue as a kanban in the terminal, one column per stage and a card per job.

`board_data` gathers what a board shows (the jobs and block reasons `aq ls` gives, the lease
holders' heartbeat ages as this machine saw them); `render_board` lays it out with rich for a
terminal of a given width; `board_text` prints that to a string, with or without colour.
"""

from __future__ import annotations

import heapq
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from aq.core.children import Family, families
from aq.core.durations import format_duration
from aq.core.events import iso, parse_iso
from aq.core.leases import watch_gap
from aq.core.lifecycle import STAGES, Stage
from aq.core.profile import Profile
from aq.core.scheduler import Verdict
from aq.errors import AqError
from aq.store.queue import Queue
from aq.store.snapshot import Job, Snapshot
from aq.store.sync import LeaseObserver, Remote
from aq.usecases.listing import Capabilities, list_jobs, profiles_used

WIDE = 120  # from this many columns on, all seven stages stand side by side
STAGE_WIDTH = 38  # narrower: as many stages side by side as fit about this wide
CARDS_SHOWN = 8  # per stage; the rest are counted
EMPTY = "\N{EN DASH}"  # what an empty stage shows
ISO_LENGTH = len("2026-01-01T12:00:00.000000Z")
PROBLEMS_SHOWN = 3
LOCK_WAIT = 10.0  # seconds a refresh waits for the clone's lock before showing the clone as it is
PRIORITY_LOOK = {"critical": ("CRIT", "bold red"), "high": ("HIGH", "yellow"),
                 "medium": ("MED", ""), "low": ("LOW", "dim")}
STAGE_STYLE = {"inbox": "bold", "building": "bold cyan", "review": "bold magenta",
               "testing": "bold blue", "shipped": "bold green", "failed": "bold red",
               "dead_letter": "bold red"}


@dataclass(frozen=True, slots=True)
class Card:
    """One job as its card shows it."""

    job_id: str
    title: str
    priority: str  # critical / high / medium / low; "-" for a job whose manifest is invalid
    profile: str | None
    engine: str | None  # the job's or its profile's engine, else its engine class; None: the default
    capabilities: tuple[str, ...]  # the job's and its profile's
    tracker_item: str | None
    attempt: int  # attempts made so far
    holder: str | None  # the worker holding the lease (building jobs)
    heartbeat_age: float | None  # seconds since this machine saw the holder's heartbeat change
    blocked: str | None  # why an inbox job waits, as `aq ls` says it; None: ready (or not inbox)
    out_of_scope: int  # files changed outside the job's allowed-scope
    stage: str
    branch: str | None = None  # a job with a repo: its branch as the last attempt left it
    branch_pushed: bool = True  # False: that branch's work is not on the repo's remote yet
    cost_usd: float | None = None  # its attempts' cost, a building one's so far (None: unknown)
    started: str | None = None  # a building job: when its running attempt started (ISO, UTC)
    failure: str | None = None  # a failed or dead-lettered job: the last line of its failure
    parent: str | None = None  # the job it is a child of
    children: tuple[int, int] | None = None  # (settled, all) of its children; None: it has none


@dataclass(frozen=True, slots=True)
class BoardData:
    # (stage, jobs in it, cards shown): shipped holds its latest few, newest first; every other
    # stage all its cards, in pick order (priority, then oldest first, then id)
    columns: tuple[tuple[str, int, tuple[Card, ...]], ...]
    halted: str | None
    workers: int  # workers whose heartbeat this machine has seen (since boot)
    problems: tuple[str, ...]


# --- gathering ---------------------------------------------------------------------------------

def board_data(
    queue: Queue,
    *,
    now: datetime,
    monotonic: float,
    fetch: bool = False,
    shipped_shown: int = 5,
    capabilities: Capabilities = None,
    shown: int | None = None,
) -> BoardData:
    """The board at `now` (`monotonic`: this machine's clock, for heartbeat ages). With `fetch`
    and a remote, the clone is brought to the remote's tip first; a remote that does not answer
    becomes a problem line and the board shows the clone as it is. `shown`: at most this many
    cards per stage are made (the first in pick order); a column still counts all its jobs."""
    problems: list[str] = []
    remote = _sync(queue, problems) if fetch else None
    listing = list_jobs(queue, now=now, capabilities=capabilities)
    observer = LeaseObserver(queue.state_dir / "leases.json")
    if remote is not None:
        _observe(queue, remote, observer, monotonic, listing.jobs, problems)
    seen = observer.workers(monotonic)
    ages = {worker: age for worker, (age, _payload) in seen.items()}
    profiles = profiles_used(queue, Snapshot(listing.jobs, listing.problems))
    kin = families(listing.jobs)
    by_stage: dict[Stage, list[Job]] = {stage: [] for stage in STAGES}
    for job in listing.jobs:
        by_stage[job.stage].append(job)
    columns = []
    for stage, jobs in by_stage.items():
        if stage is Stage.SHIPPED:
            chosen = heapq.nlargest(shipped_shown, jobs, key=_shipped_order)
        else:  # listed oldest first (then by id): a stable sort by priority gives pick order
            picked = sorted(jobs, key=_priority_rank)
            chosen = picked if shown is None else picked[:shown]
        cards = tuple(_with_family(_card(job, listing.verdicts.get(job.id), profiles, ages,
                                         _cost(queue, job)), job, kin) for job in chosen)
        columns.append((str(stage), len(jobs), cards))
    return BoardData(tuple(columns), queue.halted(), len(seen), (*problems, *listing.problems))


def _sync(queue: Queue, problems: list[str]) -> Remote | None:
    """Bring the clone to the remote's tip, as `aq workers` does; the remote when it answered."""
    try:
        remote = queue.remote
        if remote is None:
            return None
        reachable = queue.refresh_from_remote(LOCK_WAIT)
    except AqError as err:
        problems.append(f"not synced with the remote: {err}")
        return None
    if not reachable:
        problems.append(f"cannot reach the queue's remote {remote.name!r}: showing this clone as "
                        "last fetched")
        return None
    return remote


def _observe(queue: Queue, remote: Remote, observer: LeaseObserver, monotonic: float,
             jobs: Iterable[Job], problems: list[str]) -> None:
    """Note the heartbeats just fetched, so that ages count from when this machine saw them."""
    building = {job.state.token: str(job.state.holder) for job in jobs
                if job.stage is Stage.BUILDING and job.state.token}
    config = queue.config
    try:
        with queue.lock(LOCK_WAIT):
            observer.observe(remote, monotonic, building,
                             gap=watch_gap(config.lease_ttl, config.poll))
    except AqError as err:
        problems.append(f"heartbeats not updated: {err}")


def _priority_rank(job: Job) -> int:
    return job.manifest.priority_rank if job.manifest else 99


def _shipped_order(job: Job) -> str:
    """When the job last moved, as far as its state tells without reading its events: the end
    of its last attempt, else when it was added. As aq writes it (`iso`), a time's text sorts
    as the time does; any other spelling is put in that form first."""
    state = job.state
    moved = state.attempts[-1].finished if state.attempts else None
    text = max(moved or "", state.added_at or "") or iso(job.added)
    if len(text) == ISO_LENGTH and text.endswith("Z"):
        return text
    try:
        return iso(parse_iso(text))
    except (ValueError, TypeError):
        return iso(job.added)


def _cost(queue: Queue, job: Job) -> float | None:
    from aq.usecases.spend import cost_so_far

    return cost_so_far(job.state, job.stage is Stage.BUILDING, queue.running_dir() / job.id)


def _card(job: Job, verdict: Verdict | None, profiles: Mapping[str, Profile],
          ages: Mapping[str, float | None], cost: float | None = None) -> Card:
    manifest, state = job.manifest, job.state
    profile = profiles.get(manifest.profile) if manifest and manifest.profile else None
    engine = None
    capabilities: tuple[str, ...] = ()
    if manifest is not None:
        engine = manifest.engine or (profile.engine if profile else None) \
            or manifest.engine_class or (profile.engine_class if profile else None)
        capabilities = manifest.capabilities
        if profile is not None and profile.capabilities:
            capabilities = tuple(dict.fromkeys((*capabilities, *profile.capabilities)))
    holder = state.holder if job.stage is Stage.BUILDING else None
    return Card(
        job_id=job.id,
        title=manifest.title if manifest else "(invalid manifest)",
        priority=manifest.priority if manifest else "-",
        profile=manifest.profile if manifest else None,
        engine=engine,
        capabilities=capabilities,
        tracker_item=manifest.tracker_item if manifest else None,
        attempt=state.attempt_count,
        holder=holder,
        heartbeat_age=ages.get(holder) if holder else None,
        blocked=verdict.reason if verdict is not None and not verdict.ready else None,
        out_of_scope=len(state.out_of_scope),
        stage=str(job.stage),
        branch=state.branch,
        branch_pushed=state.branch_pushed or state.branch is None,
        cost_usd=cost,
        started=state.attempts[-1].started if holder and state.attempts else None,
        failure=_last_line(state.last_failure_tail or state.last_reason)
        if job.stage in (Stage.FAILED, Stage.DEAD_LETTER) else None,
    )


def _with_family(card: Card, job: Job, kin: Mapping[str, Family]) -> Card:
    family = kin.get(job.id)
    children = None if family is None else (
        len(family.children) - len(family.unsettled), len(family.children))
    parent = job.manifest.parent if job.manifest else None
    return card if parent is None and children is None else replace(
        card, parent=parent, children=children)


def _last_line(text: str | None) -> str | None:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else None


# --- rendering ---------------------------------------------------------------------------------

def render_board(data: BoardData, *, width: int, max_cards: int = CARDS_SHOWN) -> RenderableType:
    """A header line, then the stages: all seven side by side from `WIDE` columns on, else in
    rows of as many as fit `STAGE_WIDTH` wide. Each stage shows at most `max_cards` cards."""
    per_row = len(data.columns) if width >= WIDE else max(1, width // STAGE_WIDTH)
    parts: list[RenderableType] = [_header(data)]
    for start in range(0, len(data.columns), per_row):
        if start:
            parts.append(Text(""))
        parts.append(_stage_row(data.columns[start:start + per_row], per_row, max_cards))
    if data.problems:
        parts.append(Text(""))
        parts += _problem_lines(data.problems)
    return Group(*parts)


def board_text(data: BoardData, *, width: int, color: bool, max_cards: int = CARDS_SHOWN) -> str:
    """The board as text `width` columns wide; without `color`, plain text with no escape code."""
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=color, no_color=not color,
                      color_system="standard" if color else None, force_jupyter=False,
                      force_interactive=False, legacy_windows=False, highlight=False,
                      markup=False, emoji=False, soft_wrap=False)
    console.print(render_board(data, width=width, max_cards=max_cards))
    if color:
        return out.getvalue()
    return "".join(line.rstrip() + "\n" for line in out.getvalue().splitlines())


def _header(data: BoardData) -> Text:
    total = sum(count for _stage, count, _cards in data.columns)
    state = (("HALTED: " + _clean(data.halted), "bold red") if data.halted is not None
             else ("running", "green"))
    workers = f"{data.workers} worker{'' if data.workers == 1 else 's'} seen"
    return _fit(Text.assemble(("aq board", "bold"), "  ", state, "  ·  ", workers,
                              "  ·  ", f"{total} job{'' if total == 1 else 's'}"))


def _stage_row(columns: Sequence[tuple[str, int, tuple[Card, ...]]], slots: int,
               max_cards: int) -> Table:
    table = Table(box=box.MINIMAL, expand=True, padding=(0, 1), pad_edge=False,
                  show_edge=False)
    cells: list[RenderableType] = []
    for stage, count, cards in columns:
        table.add_column(Text(f"{stage} ({count})", style=STAGE_STYLE.get(stage, "bold")),
                         ratio=1, no_wrap=True, overflow="ellipsis")
        cells.append(_stage_cell(stage, count, cards, max_cards))
    for _blank in range(slots - len(columns)):  # the last row keeps the widths of the others
        table.add_column("", ratio=1)
        cells.append("")
    table.add_row(*cells)
    return table


def _stage_cell(stage: str, count: int, cards: tuple[Card, ...], max_cards: int) -> RenderableType:
    if not cards:
        return Text(EMPTY, style="dim")
    shown = cards[:max_cards]
    parts: list[RenderableType] = []
    for index, card in enumerate(shown):
        if index:
            parts.append(Text(""))
        parts.append(_CardView(card))
    rest = count - len(shown)
    if rest > 0:
        parts += [Text(""), _fit(Text(f"… {rest} {'earlier' if stage == Stage.SHIPPED else 'more'}",
                                      style="dim"))]
    return Group(*parts)


class _CardView:
    """A card cut to the width its column gets: `id  PRIO`, the title, the facts, the status."""

    def __init__(self, card: Card) -> None:
        self.card = card

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(1, options.max_width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        card = self.card
        label, style = PRIORITY_LOOK.get(card.priority, (card.priority.upper(), ""))
        line = Text(card.job_id, style="bold")
        beside = len(card.job_id) + 1 + len(label) <= width
        if beside:  # else the priority leads the facts: an id's tail tells it from its siblings
            line.pad_right(width - len(card.job_id) - len(label))
            line.append(label, style=style)
        yield _fit(line, width)
        yield _fit(Text(_clean(card.title)), width)
        for extra in (_facts(card, None if beside else (label, style)), _status(card)):
            if extra is not None:
                yield _fit(extra, width)


def _facts(card: Card, priority: tuple[str, str] | None) -> Text | None:
    """The short line under the title: the scope and unpushed-branch marks first (a cut must
    not take them), the priority when it did not fit beside the id, then attempt, branch, profile, engine,
    capabilities, tracker item."""
    parts: list[tuple[str, str]] = []
    if card.out_of_scope:
        parts.append((f"⚠ scope ({card.out_of_scope})", "bold red"))
    if not card.branch_pushed:
        parts.append(("⚠ unpushed", "bold red"))
    if priority is not None:
        parts.append(priority)
    if card.attempt:
        parts.append((f"attempt {card.attempt}", "dim"))
    if card.children is not None:
        parts.append((f"children {card.children[0]}/{card.children[1]}", "dim"))
    if card.parent:
        parts.append((f"child of {card.parent}", "dim"))
    if card.cost_usd is not None:
        parts.append((f"${card.cost_usd:.2f}", "dim"))
    if card.branch:
        parts.append((_clean(card.branch), "dim"))
    for fact in (card.profile, card.engine, " ".join(card.capabilities), card.tracker_item):
        if fact:
            parts.append((_clean(fact), "dim"))
    if not parts:
        return None
    line = Text()
    for index, (fact, style) in enumerate(parts):
        if index:
            line.append(" · ", style="dim")
        line.append(fact, style=style)
    return line


def _status(card: Card) -> Text | None:
    """Who holds a building job and how long ago its heartbeat moved; why an inbox job waits."""
    if card.holder is not None:
        line = Text(_clean(card.holder), style="cyan")
        if card.heartbeat_age is not None:
            line.append(f" · {format_duration(card.heartbeat_age)} ago", style="dim")
        return line
    if card.stage == Stage.INBOX:
        if card.blocked is not None:
            return Text("⊘ " + _clean(card.blocked), style="yellow")
        return Text("ready", style="green")
    return None


def _problem_lines(problems: Sequence[str]) -> list[RenderableType]:
    lines: list[RenderableType] = [_fit(Text("⚠ " + _clean(problem), style="yellow"))
                                   for problem in problems[:PROBLEMS_SHOWN]]
    if len(problems) > PROBLEMS_SHOWN:
        lines.append(_fit(Text(f"… and {len(problems) - PROBLEMS_SHOWN} more: run 'aq lint'",
                               style="dim")))
    return lines


def _fit(text: Text, width: int | None = None) -> Text:
    """One line, never wrapped: cut with an ellipsis at `width` (None: wherever it is printed)."""
    text.no_wrap = True
    text.overflow = "ellipsis"
    text.end = "\n"
    if width is not None:
        text.truncate(width, overflow="ellipsis")
    return text


def _clean(text: str) -> str:
    """Text from a job file, made safe for one terminal line: no control characters (a title may
    hold an escape code), whitespace runs as one space."""
    if text.isprintable():
        return text
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
