"""The dashboard's hold on the queue: every read and change through `aq.usecases`, one at a time."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from aq.core.lifecycle import Action
from aq.errors import AqError
from aq.store.queue import Queue
from aq.usecases.fleet import halt, resume
from aq.usecases.listing import Capabilities, Listing, list_jobs
from aq.usecases.logs import LogRef, find_log
from aq.usecases.moves import MoveResult, move_job


@dataclass(frozen=True, slots=True)
class Loaded:
    """The queue as one load saw it. `seq` orders loads: an older one never replaces a newer."""

    seq: int
    listing: Listing | None  # None: it could not be read (`problem` says why)
    halted: str | None
    reachable: bool | None  # the remote answered the fetch; None: no remote
    problem: str | None = None


class Session:
    """One person's hold on the queue: every read and change through `aq.usecases`, serialized,
    so a slow fetch and a move never interleave. Called from worker threads, never the UI's."""

    def __init__(self, queue: Queue, *, who: str, clock: Callable[[], datetime],
                 sync: Callable[[], bool] | None = None, capabilities: Capabilities = None,
                 env: Mapping[str, str] = os.environ) -> None:
        self.queue = queue
        self.who = who
        self.clock = clock
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
            try:
                listing = list_jobs(self.queue, now=self.clock(), capabilities=self.capabilities)
            except (AqError, OSError) as err:
                return Loaded(self._seq, None, self.queue.halted(), reachable, str(err))
            return Loaded(self._seq, listing, self.queue.halted(), reachable, problem)

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

    def find_log(self, job_id: str) -> LogRef:
        return find_log(self.queue, job_id, None)
