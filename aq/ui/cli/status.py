"""`aq run`'s status line on a terminal: the jobs it holds, how long each has run and the newest
line of its log, redrawn every second below the worker's own lines (which scroll above it as
always). Piped, or on a terminal that cannot redraw, there is no status line: plain lines only.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aq.infra.rundir import RunFiles, last_line

if TYPE_CHECKING:
    from rich.text import Text

    from aq.worker.runner import Worker



@dataclass(frozen=True, slots=True)
class Held:
    """One job the worker runs, as the status line shows it."""

    job_id: str
    seconds: float
    last_line: str


def elapsed(seconds: float) -> str:
    """12s, 3m12s, 1h04m."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def status_text(held: Sequence[Held], finished: int) -> str:
    """The line itself: each job held, or that the worker waits for work."""
    if not held:
        return f"waiting for work · {finished} finished"
    parts = []
    for job in held:
        part = f"▶ {job.job_id} {elapsed(job.seconds)}"
        parts.append(f"{part} ─ {job.last_line}" if job.last_line else part)
    return " │ ".join(parts)


def worker_status(worker: Worker, monotonic: Callable[[], float] = time.monotonic) -> str:
    """What `worker` holds now, as one line."""
    now = monotonic()
    running_dir = worker.queue.running_dir()
    held = [Held(run.claim.job.id, now - run.claim.claimed_at,
                 last_line(RunFiles(running_dir / run.claim.job.id, run.claim.attempt).log))
            for run in worker.ctx.roster.attempts()]
    return status_text(held, len(worker.summary.finished))


def wanted() -> bool:
    """A status line only where it can be redrawn: stdout and stderr on a terminal."""
    return sys.stdout.isatty() and sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


@contextmanager
def status_line(worker: Worker) -> Iterator[None]:
    """While the block runs, `worker`'s status as the terminal's last line; every line printed
    meanwhile (the worker's, its warnings) goes above it. Gone when the block ends."""
    from rich.console import Console
    from rich.live import Live

    console = Console(highlight=False)

    def render() -> Text:
        from rich.text import Text

        return Text(worker_status(worker), style="dim", no_wrap=True, overflow="ellipsis")

    with Live(get_renderable=render, console=console, refresh_per_second=1, transient=True,
              redirect_stdout=True, redirect_stderr=True):
        yield
