"""The dashboard's hold on the queue: every read and change through `aq.usecases`, one at a time."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from aq.core.lifecycle import Action, Stage
from aq.errors import AqError
from aq.infra.rundir import RunFiles, last_line
from aq.store.queue import Queue
from aq.usecases.fleet import WorkerRow, halt, list_workers, resume
from aq.usecases.listing import Capabilities, Listing, list_jobs
from aq.usecases.logs import LogRef, find_log
from aq.usecases.moves import MoveResult, move_job


@dataclass(frozen=True, slots=True)
class Live:
    """What this machine sees of a building job's attempt running here."""

    last_line: str = ""
    cost: float | None = None  # dollars so far, when known


@dataclass(frozen=True, slots=True)
class Loaded:
    """The queue as one load saw it. `seq` orders loads: an older one never replaces a newer."""

    seq: int
    listing: Listing | None  # None: it could not be read (`problem` says why)
    halted: str | None
    reachable: bool | None  # the remote answered the fetch; None: no remote
    problem: str | None = None
    now: datetime | None = None  # the clock when it was read: relative times count from it
    live: Mapping[str, Live] = field(default_factory=dict)  # by job id: attempts running here


class Session:
    """One person's hold on the queue: every read and change through `aq.usecases`, serialized,
    so a slow fetch and a move never interleave. Called from worker threads, never the UI's."""

    def __init__(self, queue: Queue, *, who: str, clock: Callable[[], datetime],
                 sync: Callable[[], bool] | None = None, capabilities: Capabilities = None,
                 env: Mapping[str, str] = os.environ,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.queue = queue
        self.who = who
        self.clock = clock
        self.monotonic = monotonic  # heartbeat ages in the workers view
        self.env = env  # where a tracker's token is, for the post a move owes
        self.sync = sync
        self.capabilities = capabilities
        self._lock = threading.Lock()
        self._seq = 0

    def load(self) -> Loaded:
        with self._lock:
            self._seq += 1
            reachable, problem = None, None
            if self.sync is not None:
                try:
                    reachable = self.sync()
                except AqError as err:
                    reachable, problem = False, str(err)
            now = self.clock()
            try:
                listing = list_jobs(self.queue, now=now, capabilities=self.capabilities)
            except (AqError, OSError) as err:
                return Loaded(self._seq, None, self.queue.halted(), reachable, str(err), now)
            return Loaded(self._seq, listing, self.queue.halted(), reachable, problem, now,
                          live_of(listing, self.queue.running_dir()))

    def move(self, job_id: str, action: Action, reason: str | None = None) -> MoveResult:
        with self._lock:
            return move_job(self.queue, job_id, action, who=self.who, now=self.clock(),
                            env=self.env, reason=reason)

    def halt(self, reason: str) -> bool:
        with self._lock:
            return halt(self.queue, reason=reason, who=self.who, now=self.clock())

    def resume(self) -> bool:
        with self._lock:
            return resume(self.queue, who=self.who)

    def halted(self) -> str | None:
        return self.queue.halted()

    def find_log(self, job_id: str, attempt: int | None = None) -> LogRef:
        return find_log(self.queue, job_id, attempt)

    def attempts(self, job_id: str) -> int:
        return self.queue.resolve(job_id).state.attempt_count

    def detail(self, job_id: str) -> str:
        """What `aq show JOB` prints."""
        from aq.ui.cli.detail import detail_text
        from aq.usecases.jobs import show_job

        with self._lock:
            detail = show_job(self.queue, job_id, now=self.clock(), capabilities=self.capabilities)
            metered = frozenset(name for name, spec in self.queue.config.engines.items()
                                if spec.usage)
        return detail_text(detail, metered)

    def workers(self) -> tuple[WorkerRow, ...]:
        """What `aq workers` lists (fetching from the remote first)."""
        with self._lock:
            return list_workers(self.queue, monotonic=self.monotonic(), now=self.clock())


def live_of(listing: Listing, running: Path) -> dict[str, Live]:
    """The last log line and the cost so far of each building job whose attempt runs here."""
    from aq.usecases.spend import cost_so_far

    live = {}
    for job in listing.jobs:
        count = job.state.attempt_count
        if job.stage is not Stage.BUILDING or not count:
            continue
        folder = running / job.id
        if folder.is_dir():
            live[job.id] = Live(last_line(RunFiles(folder, count).log),
                                cost_so_far(job.state, True, folder))
    return live
