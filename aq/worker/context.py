"""What a worker's parts share: its options, its clocks, its voice, and the roster of the
claims it holds. Each part (claims, reclaim, heartbeat, launcher, recorder) keeps its own
state; what they must share is here, and a part that uses another is handed it at its start."""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from aq.store.queue import Queue
from aq.store.snapshot import Job
from aq.worker.attempt import AttemptResult


def default_worker_id() -> str:
    return f"{socket.gethostname().split('.')[0].lower()}-{os.getpid()}"


class Mode(StrEnum):
    ONCE = "once"  # one job, then exit
    DRAIN = "drain"  # until nothing is left that could run without a person
    FOREVER = "forever"


@dataclass(frozen=True, slots=True)
class Options:
    """How a worker works, fixed at its start (command line over aq.yaml)."""

    max_jobs: int
    poll: float
    mode: Mode
    capabilities: frozenset[str] | None
    offline: bool
    lease_ttl: float
    heartbeat_interval: float
    renew_deadline: float


@dataclass(frozen=True, slots=True)
class Claim:
    job: Job
    attempt: int
    token: str
    event: dict[str, object]
    claimed_at: float  # monotonic, before the claim was pushed: its lease cannot start earlier
    persona: str | None = None  # the profile's, as it was at the claim


@dataclass
class Running:
    claim: Claim
    thread: threading.Thread
    stop: threading.Event
    result: AttemptResult | None = None
    stop_reason: str | None = None
    landed_at: float | None = None  # an offline claim: when this worker saw it reach the remote
    graceful: bool = False  # a TERM/Ctrl-C stopped it: not counted toward max_reclaims


@dataclass(frozen=True, slots=True)
class Ended:
    """An attempt that ended, waiting to be recorded."""

    claim: Claim
    result: AttemptResult
    stop_reason: str | None
    graceful: bool


@dataclass
class RunSummary:
    claimed: int = 0
    finished: dict[str, str] = field(default_factory=dict)  # job id -> stage it went to
    stale: list[str] = field(default_factory=list)
    reclaimed: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # offline claims someone else also took
    interrupted: bool = False
    signal: str | None = None  # the signal that stopped it (SIGINT: a person's Ctrl-C)


class Roster:
    """The claims a worker holds, by where each is: running, uncertain (its push neither
    confirmed nor refused), ended but not recorded, recorded but not on the remote yet. The loop
    changes it; the heartbeat thread reads it (every held lease is renewed), under its lock."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # a signal handler on the loop's thread may read it too
        self.running: dict[str, Running] = {}
        self.uncertain: dict[str, Claim] = {}  # claims whose push may or may not have landed
        self.unrecorded: list[Ended] = []
        self.unlanded: set[str] = set()  # lease tokens recorded here, not on the remote yet

    def tokens(self) -> list[str]:
        """Every lease this worker holds on the remote: the heartbeat renews them."""
        with self._lock:
            return [*(r.claim.token for r in self.running.values()),
                    *(c.token for c in self.uncertain.values()),
                    *(e.claim.token for e in self.unrecorded), *self.unlanded]

    def attempts(self) -> list[Running]:
        with self._lock:
            return list(self.running.values())

    def holding(self) -> int:
        """Claims that take a place under max_jobs."""
        return len(self.running) + len(self.uncertain)

    def busy(self) -> bool:
        return bool(self.running or self.uncertain or self.unrecorded)

    def started(self, running: Running) -> None:
        with self._lock:
            self.running[running.claim.job.id] = running

    def ended(self, job_id: str, ended: Ended | None) -> None:
        """The attempt left running: listed as unrecorded in the same step (a heartbeat between
        the two would otherwise leave its lease out), unless it ended without a result."""
        with self._lock:
            if ended is not None:
                self.unrecorded.append(ended)
            del self.running[job_id]

    def recorded(self, ended: Ended) -> None:
        with self._lock:
            self.unrecorded.remove(ended)

    def hold_uncertain(self, claim: Claim) -> None:
        with self._lock:
            self.uncertain[claim.job.id] = claim

    def drop_uncertain(self, job_id: str) -> None:
        with self._lock:
            del self.uncertain[job_id]

    def hold_unlanded(self, token: str) -> None:
        with self._lock:
            self.unlanded.add(token)

    def landed(self) -> None:
        """Nothing is left unpushed any more: every result recorded here is on the remote."""
        with self._lock:
            self.unlanded.clear()


class Voice:
    """What a worker says: lines on stdout named by the worker, warnings on stderr said once."""

    def __init__(self, worker_id: str, say: Callable[[str], None] | None,
                 monotonic: Callable[[], float], remote: str | None,
                 why_unreachable: Callable[[], str] = lambda: "") -> None:
        self.worker_id = worker_id
        self._say = say or (lambda text: print(text, flush=True))
        self._monotonic = monotonic
        self._remote = remote
        self._why_unreachable = why_unreachable  # git's line when the last fetch failed
        self._warned: set[str] = set()
        self._last_unreachable_note = 0.0

    def say(self, line: str) -> None:
        self._say(f"{self.worker_id}: {line}")

    def say_once(self, line: str) -> None:
        """A line said once, not at every turn of the loop."""
        line = f"{self.worker_id}: {line}"
        if line not in self._warned:
            self._warned.add(line)
            self._say(line)

    def warn(self, line: str) -> None:
        """One line on stderr, said once (a transaction replayed does not say it again)."""
        if line not in self._warned:
            self._warned.add(line)
            print(f"aq: {line}", file=sys.stderr, flush=True)

    def unreachable(self, what: str) -> None:
        """That the remote does not answer, and what the worker does meanwhile: every 30s at most."""
        now = self._monotonic()
        if now - self._last_unreachable_note > 30:
            self._last_unreachable_note = now
            name = self._remote if self._remote is not None else "remote"
            why = self._why_unreachable().removeprefix("fatal: ").strip()
            self.say(f"the remote {name!r} does not answer{f' ({why})' if why else ''}: {what}")


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """What every part of one worker shares. Frozen: the parts share these objects, never
    replace them."""

    queue: Queue
    worker_id: str
    options: Options
    now: Callable[[], datetime]
    monotonic: Callable[[], float]
    voice: Voice
    roster: Roster
    summary: RunSummary
    stopping: threading.Event  # the worker was told to stop (or is ending)
    wake: threading.Event  # the loop looks again now (an attempt ended, a lease was lost)
