"""A worker's tracker posts, sent on a thread of their own: a slow or absent tracker never
holds up claiming, running or recording jobs. The worker's loop calls `tick()`; only the
loop's thread touches the queue (to find what is owed, claim posts and record what was sent);
the courier's thread only talks to trackers."""

from __future__ import annotations

import os
import queue as stdqueue
import threading
from collections.abc import Callable
from datetime import datetime

from aq.core.events import iso
from aq.errors import AqError
from aq.store.queue import Queue
from aq.store.snapshot import Job
from aq.usecases.tracker_delivery import (
    Sent,
    Trackers,
    held_by,
    linked_jobs,
    new_run,
    posts_due,
    record_sent,
    send,
    take_over,
)
from aq.usecases.tracker_posts import OwedPost, owed_posts

SWEEP = 60.0  # how often every linked job is looked at (its owed posts, others' left behind)
MAX_SWEEP = 600.0  # the look-again interval while a tracker keeps failing


class Sightings:
    """How long this process has seen each post with its holder, on its own monotonic clock:
    a machine whose wall clock is off never takes over a live post early."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self.monotonic = monotonic
        self._first: dict[tuple[str, str], float] = {}

    def age(self, owed: OwedPost) -> float:
        return self.monotonic() - self._first.setdefault((owed.key, owed.since), self.monotonic())

    def claimed(self, key: str, since: str) -> None:
        """A claim this process pushed: its age counts from now, not from its next look."""
        self._first[(key, since)] = self.monotonic()


class Courier:
    def __init__(self, queue: Queue, me: str, clock: Callable[[], datetime],
                 monotonic: Callable[[], float], say: Callable[[str], None]) -> None:
        self.queue = queue
        self.me = me
        self.run = new_run(me)  # two workers started with one --worker name still differ here
        self.clock = clock
        self.monotonic = monotonic
        self.say = say
        self.sightings = Sightings(monotonic)
        self._env = dict(os.environ)
        self._todo: stdqueue.Queue[list[OwedPost]] = stdqueue.Queue()
        self._sent: list[tuple[list[OwedPost], list[Sent]]] = []
        self._lock = threading.Lock()
        self._idle = threading.Event()  # clear while a batch is with the courier's thread
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._moved: set[str] = set()
        self._next_sweep = 0.0
        self._sweep_every = SWEEP
        self._said: set[str] = set()
        self._refused: set[str] = set()  # trackers that refused this worker for good (no token...)
        self._refused_items: set[str] = set()  # items that refused it (no such issue, ...)
        self._own: set[str] = set()  # lease tokens of this worker's claims: its own moves
        self._unrecorded: list[Sent] = []  # sent, not yet recorded: recorded, never sent again
        self._ending = False
        self._trackers: Trackers | None = None
        self._settled: dict[str, int] = {}  # job id -> its event count when it owed nothing
        self.takeover = 600.0  # read on the loop's thread for the courier's

    def moved(self, job: Job, token: str | None = None) -> None:
        """This worker moved the job (under its lease `token`, when it holds one): what a
        linked job's move owes goes out at the next tick."""
        if token:
            self._own.add(token)
        if job.manifest is not None and job.manifest.tracker_item:
            self._moved.add(job.id)

    def tick(self) -> None:
        if not self._idle.is_set():
            return  # (results are appended before idle is set: none is read half-way)
        self._record()
        if self.queue.unpushed or not self.queue.remote_answered:
            return  # a move not on the remote yet may still lose: tell no tracker of it
        now = self.monotonic()
        sweep = now >= self._next_sweep
        if not sweep and not self._moved:
            return
        try:
            moved, self._moved = set(self._moved), set()
            if sweep:  # (a holder looks at least four times a takeover: it renews in time)
                self._next_sweep = now + min(self._sweep_every,
                                             max(self.queue.config.trackers.takeover / 4, 1.0))
            batch = self._due(None if sweep else moved)
        except AqError as err:
            self._say_once(f"tracker posts: {err}")
            return
        if batch:
            if self._trackers is None:
                self._trackers = Trackers(self.queue, self._env)
            self.takeover = self.queue.config.trackers.takeover
            self._idle.clear()
            self._todo.put(batch)
            self._start()

    def _due(self, only: set[str] | None) -> list[OwedPost]:
        """The posts to send now (those `posts_due` says, claimed first where it must), of the
        jobs in `only` or (None) every linked job that may owe something new."""
        takeover = self.queue.config.trackers.takeover
        with self.queue.lock():  # read as the queue stands, not half-way through a sibling's move
            jobs = [job for job in linked_jobs(self.queue, None)
                    if self._settled.get(job.id) != job.state.events
                    and (only is None or job.id in only)]
            ready, claim, waiting = posts_due(self.queue, jobs, me=self.me, run=self.run,
                                              age=self.sightings.age, takeover=takeover,
                                              env=self._env, own=self._own)
        owing = {p.job_id for p in [*ready, *claim, *waiting]}
        self._settled.update({job.id: job.state.events for job in jobs if job.id not in owing})
        pending = {s.key for s in self._unrecorded}
        unwelcome = [p for p in [*ready, *claim]
                     if not self._welcome(p) and held_by(p, self.me, self.run, self._own)]
        if unwelcome:  # what this worker will not send (its tracker refused it): anyone's now
            record_sent(self.queue, [], who=self.me, now=self.clock(), let_go=unwelcome,
                        run=self.run)
        ready = [p for p in ready if self._welcome(p) and p.key not in pending]
        claim = [p for p in claim if self._welcome(p) and p.key not in pending
                 and (not self._ending or held_by(p, self.me, self.run, self._own))]
        now = self.clock()
        won = take_over(self.queue, claim, me=self.me, run=self.run, age=self.sightings.age,
                        takeover=takeover, now=now, own=self._own)
        for owed in won:
            self.sightings.claimed(owed.key, iso(now))
        return [*ready, *won]

    def _welcome(self, owed: OwedPost) -> bool:
        return _tracker_of(owed.ref) not in self._refused and owed.ref not in self._refused_items

    def flush(self, timeout: float) -> bool:
        """Before the worker ends: send what its moves owe, waiting at most `timeout` seconds,
        then let go of what it could not send (anyone may send it at once). False if posts are
        still on their way."""
        end = self.monotonic() + timeout
        self._idle.wait(timeout)
        self._next_sweep = 0.0
        self._ending = True  # its own posts only: none of others' is taken over on the way out
        self.tick()
        self._idle.wait(max(0.0, end - self.monotonic()))
        self._record()
        if self._idle.is_set():
            self._let_go()
        return self._idle.is_set()

    def _let_go(self) -> None:
        held = []
        try:
            with self.queue.lock():
                for job in linked_jobs(self.queue, None):
                    held += [p for p in owed_posts(job, self.queue.read_events(job.id))
                             if held_by(p, self.me, self.run, self._own)]
            record_sent(self.queue, [], who=self.me, now=self.clock(), let_go=held, run=self.run)
        except AqError as err:
            self._say_once(f"tracker: could not let go of {len(held)} post(s) ({err}); they "
                           "are anyone's after trackers.takeover")

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="tracker-courier", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            batch = self._todo.get()
            assert self._trackers is not None
            # none started after a quarter takeover: the claims it holds stay young
            deadline = self.monotonic() + max(self.takeover / 4, 10.0)
            try:
                results = send(self._trackers, batch, deadline=deadline, monotonic=self.monotonic)
            except Exception as err:  # send() fails post by post; this is a bug of its own
                results = [Sent("", "", "", False, f"tracker posts failed: {err.__class__.__name__}")]
            with self._lock:
                self._sent.append((batch, results))
            self._idle.set()

    def _record(self) -> None:
        with self._lock:
            done, self._sent = self._sent, []
        results = list(self._unrecorded)
        for _batch, sent in done:
            results += sent
            failed = [r for r in sent if not r.ok]
            for result in failed:
                if result.everywhere and result.ref:  # no token, no Backlog.md: no item will do
                    self._refused.add(_tracker_of(result.ref))
                    self._say_once(f"tracker: {result.message}; this worker sends no more posts "
                                   "there (anyone else may)")
                elif not result.retry and result.ref:  # this item only (no such issue, ...)
                    self._refused_items.add(result.ref)
                    self._say_once(f"tracker: {result.message}; this worker leaves that item's "
                                   "posts to others")
                else:
                    self._say_once(f"tracker: {result.message}; it stays owed and is tried again")
            self._sweep_every = min(self._sweep_every * 2, MAX_SWEEP) if failed else SWEEP
            if failed:
                self._next_sweep = self.monotonic() + min(self._sweep_every,
                                                          max(self.takeover / 4, 1.0))
            for result in sent:
                if result.ok:
                    self.say(result.message)
        if not results:
            return
        refused = [p for batch, _ in done for p in batch if not self._welcome(p)]
        try:
            record_sent(self.queue, results, who=self.me, now=self.clock(), let_go=refused,
                        run=self.run)
            self._unrecorded = []
        except AqError as err:  # kept: recorded at the next tick, and not sent again meanwhile
            self._unrecorded = [r for r in results if r.ok]
            self._say_once(f"tracker: sent, not recorded yet ({err}); trying again")

    def _say_once(self, line: str) -> None:
        if line not in self._said and len(self._said) < 1000:
            self._said.add(line)
            self.say(line)


def _tracker_of(ref: str) -> str:
    """Which tracker an item is in: github, backlog, or cmd:NAME."""
    kind, _, rest = ref.partition(":")
    return f"cmd:{rest.partition(':')[0]}" if kind == "cmd" else kind
