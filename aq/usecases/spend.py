"""What an attempt may spend and what it has spent: a job's `budget.usd` and `budget.tokens`
counted over all its attempts, read from the engine's output as it streams.

The engine's usage reader (aq.infra.usage) sees each line of its stdout; after every line the
running figure is priced (the CLI's own cost, else aq.yaml `prices:`) and compared with what
the job has left. Crossing it stops the attempt (`run_streaming`'s `limit`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aq.core.events import JobState
from aq.core.manifest import Budget
from aq.core.prices import priced
from aq.core.usage import Usage
from aq.infra.files import write_atomic
from aq.infra.rundir import RunFiles
from aq.infra.usage.reader import UsageReader

if TYPE_CHECKING:
    from aq.infra.engines import EngineSpec
    from aq.store.config import QueueConfig

# Readers whose figures on a resumed session are the session's running total, not this run's:
# codex `exec resume` reports the thread's usage so far.
CUMULATIVE_ON_RESUME = frozenset({"codex-json"})
# What a CLI that stopped itself at the cap we passed it says (claude --max-budget-usd).
CLI_BUDGET_ERRORS = ("error_max_budget_usd",)


@dataclass(frozen=True, slots=True)
class Spend:
    """A job's budget and what its earlier attempts used of it."""

    usd_left: float | None  # None: no budget.usd
    tokens_left: int | None
    unenforced: str | None = None  # a budget aq cannot enforce with this engine, said in the log

    @classmethod
    def of(cls, budget: Budget | None, usd_used: float, tokens_used: int,
           spec: EngineSpec | None) -> Spend:
        """What is left of `budget` after earlier attempts used `usd_used` and `tokens_used`."""
        usd = budget.usd if budget else None
        tokens = budget.tokens if budget else None
        unenforced = None
        if (usd is not None or tokens is not None) and spec is not None and spec.usage is None:
            unenforced = (f"budget not enforced: engine {spec.name!r} has no usage reader "
                          "(set usage: in its aq.yaml entry)")
        return cls(usd_left=None if usd is None else usd - usd_used,
                   tokens_left=None if tokens is None else tokens - tokens_used,
                   unenforced=unenforced)

    def exhausted(self) -> str | None:
        """Why no attempt may start, or None."""
        if self.usd_left is not None and self.usd_left <= 0:
            return "budget.usd is used up by earlier attempts"
        if self.tokens_left is not None and self.tokens_left <= 0:
            return "budget.tokens is used up by earlier attempts"
        return None

    def crossed(self, usage: Usage) -> str | None:
        """Why `usage` (priced) is over what is left, or None."""
        if self.usd_left is not None and usage.cost_usd is not None and usage.cost_usd >= self.usd_left:
            return f"budget.usd crossed: this attempt cost ${usage.cost_usd:.4f} of ${self.usd_left:.4f} left"
        tokens = usage.tokens
        if self.tokens_left is not None and tokens is not None and tokens >= self.tokens_left:
            return f"budget.tokens crossed: this attempt used {tokens:,} of {self.tokens_left:,} left"
        return None


class Meter:
    """Feeds the engine's stdout to its usage reader and watches the budget while it runs."""

    def __init__(self, reader: UsageReader | None, spend: Spend, config: QueueConfig,
                 resumed: Usage | None, *, live: Path | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.reader = reader
        self.live = live  # where the usage so far is kept for `aq board` and `aq dash`
        self.clock = clock
        self._written_at: float | None = None
        self.spend = spend
        self.prices = config.prices
        self.resumed = resumed if reader is not None and reader.name in CUMULATIVE_ON_RESUME else None
        self.crossed: str | None = None
        self.reported: Usage | None = None  # as the CLI reported it (a session total, on resume)
        self._watch = spend.usd_left is not None or spend.tokens_left is not None

    def feed(self, line: bytes) -> None:
        if self.reader is None:
            return
        self.reader.feed(line.decode("utf-8", errors="replace"))
        now = self.clock()
        keep = self.live is not None and (self._written_at is None or now - self._written_at >= 1.0)
        if (self._watch and self.crossed is None) or keep:
            usage = self.current()
            if usage is not None and self._watch and self.crossed is None:
                self.crossed = self.spend.crossed(usage)
            if usage is not None and keep:
                self._keep(usage, now)

    def _keep(self, usage: Usage, now: float) -> None:
        assert self.live is not None
        self._written_at = now
        with contextlib.suppress(OSError):  # a view's nicety: never the attempt's failure
            write_atomic(self.live, json.dumps(usage.to_event()))

    def over(self) -> bool:
        return self.crossed is not None

    def current(self) -> Usage | None:
        """This run's usage so far, priced."""
        if self.reader is None or self.reader.usage is None:
            return None
        usage = self.reader.usage
        if self.resumed is not None:
            usage = usage.minus(self.resumed)
        return priced(usage, self.prices)

    def close(self, side_file: Path) -> Usage | None:
        """The run's usage once the engine ended (reading the file it wrote its usage to)."""
        if self.reader is None:
            return None
        if self.reader.side_file is not None:
            self.reader.read_file(side_file)
        self.reported = self.reader.usage
        usage = self.current()
        if usage is not None and self.live is not None:
            self._keep(usage, self.clock())
        return usage

    def capped(self, usage: Usage | None) -> str | None:
        """Why the CLI itself stopped at the cap aq passed it, or None."""
        if usage is not None and usage.cli_error and any(
                mark in usage.cli_error for mark in CLI_BUDGET_ERRORS):
            return f"budget.usd crossed: the engine stopped at its cap ({usage.cli_error})"
        return None


def live_usage(run_dir: Path, attempt: int) -> Usage | None:
    """What a running attempt on this machine has used so far, as its meter last kept it."""
    try:
        raw = json.loads(RunFiles(run_dir, attempt).live_usage.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Usage.from_event(raw)


def cost_so_far(state: JobState, building: bool, run_dir: Path) -> float | None:
    """What a job's attempts cost: those recorded, plus a building attempt's running figure
    when it runs on this machine (`run_dir`) and its engine streams usage; None: nothing known."""
    spent = state.usd_used
    if building and state.attempt_count:
        live = live_usage(run_dir, state.attempt_count)
        if live is not None and live.cost_usd is not None:
            spent += live.cost_usd
    return spent or None


def describe_usage(usage: Usage) -> str:
    """One line for a log or `aq show`: models, tokens, cost, session."""
    parts = []
    if usage.models:
        parts.append(", ".join(usage.models))
    for label, value in (("in", usage.input_tokens), ("out", usage.output_tokens),
                         ("cache read", usage.cache_read_tokens),
                         ("cache write", usage.cache_write_tokens),
                         ("reasoning", usage.reasoning_tokens)):
        if value:
            parts.append(f"{value:,} {label}")
    parts.append(f"${usage.cost_usd:.4f}" if usage.cost_usd is not None else "cost unknown")
    if usage.turns is not None:
        parts.append(f"{usage.turns} turn(s)")
    if usage.session:
        parts.append(f"session {usage.session}")
    if usage.permission_denials:
        parts.append(f"{usage.permission_denials} permission denial(s)")
    if usage.cli_error:
        parts.append(f"the CLI reported: {usage.cli_error}")
    return "; ".join(parts)


def day_spend(states: Iterable[JobState], day: str) -> tuple[float, int]:
    """What the attempts that finished on `day` (UTC, YYYY-MM-DD) cost, and their tokens."""
    usd, tokens = 0.0, 0
    for state in states:
        for attempt in state.attempts:
            if attempt.usage and attempt.finished and attempt.finished.startswith(day):
                usage = Usage.from_event(attempt.usage)
                if usage is not None:
                    usd += usage.cost_usd or 0.0
                    tokens += usage.tokens or 0
    return usd, tokens


def queue_budget_crossed(config: QueueConfig, usd: float, tokens: int, day: str) -> str | None:
    """Why the queue must halt: a day's spending crossed aq.yaml's `budget:`, or None."""
    if config.budget_usd_per_day is not None and usd >= config.budget_usd_per_day:
        return (f"budget: runs finished on {day} (UTC) cost ${usd:.2f}, over budget.usd_per_day "
                f"${config.budget_usd_per_day:.2f}; 'aq resume' to go on")
    if config.budget_tokens_per_day is not None and tokens >= config.budget_tokens_per_day:
        return (f"budget: runs finished on {day} (UTC) used {tokens:,} tokens, over "
                f"budget.tokens_per_day {config.budget_tokens_per_day:,}; 'aq resume' to go on")
    return None
