"""A worker's tracker posts, sent on a thread of their own: a slow or absent tracker never
holds up claiming, running or recording jobs. The worker's loop calls `tick()`; only the
loop's thread touches the queue (to find what is owed, take posts over and record what was
sent); the courier's thread only talks to trackers."""

from __future__ import annotations

import os
import queue as stdqueue
import threading
from collections.abc import Callable
from datetime import datetime

from aq.errors import AqError
from aq.store import Job, Queue
from aq.tracking import (
    OwedPost,
    Sent,
    Trackers,
    linked_jobs,
    posts_due,
    record_sent,
    send,
    take_over,
)

SWEEP = 60.0  # how often every linked job is looked at (its owed posts, others' left behind)
MAX_SWEEP = 600.0  # the look-again interval while a tracker keeps failing


class Courier:
    def __init__(self, queue: Queue, me: str, clock: Callable[[], datetime],
                 monotonic: Callable[[], float], say: Callable[[str], None]) -> None:
        self.queue = queue
        self.me = me
        self.clock = clock
        self.monotonic = monotonic
        self.say = say
        self._env = dict(os.environ)
        self._todo: stdqueue.Queue[list[OwedPost]] = stdqueue.Queue()
        self._sent: list[Sent] = []
        self._lock = threading.Lock()
        self._idle = threading.Event()  # clear while a batch is with the courier's thread
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._moved: set[str] = set()
        self._next_sweep = 0.0
        self._sweep_every = SWEEP
        self._said: set[str] = set()
        self._trackers: Trackers | None = None

    def moved(self, job: Job) -> None:
        """This worker moved the job: what a linked job's move owes goes out at the next tick."""
        if job.manifest is not None and job.manifest.tracker_item:
            self._moved.add(job.id)

    def tick(self) -> None:
        self._record()
        if not self._idle.is_set():
            return
        now = self.monotonic()
        sweep = now >= self._next_sweep
        if not sweep and not self._moved:
            return
        try:
            jobs = linked_jobs(self.queue, None)
            if not sweep:
                jobs = [job for job in jobs if job.id in self._moved]
            self._moved.clear()
            if sweep:
                self._next_sweep = now + self._sweep_every
            if not jobs:
                return
            takeover = self.queue.config.trackers.takeover
            mine, stale, _ = posts_due(self.queue, jobs, me=self.me, run=self.me, now=self.clock(),
                                       takeover=takeover, env=self._env, unique=True)
            won = take_over(self.queue, stale, me=self.me, run=self.me, now=self.clock(),
                            takeover=takeover)
        except AqError as err:
            self._say_once(f"tracker posts: {err}")
            return
        if mine or won:
            if self._trackers is None:
                self._trackers = Trackers(self.queue, self._env)
            self._idle.clear()
            self._todo.put([*mine, *won])
            self._start()

    def flush(self, timeout: float) -> bool:
        """Before the worker ends: send what its moves owe, waiting at most `timeout` seconds.
        False if posts are still on their way (a later sweep or `aq to-tracker` sends them)."""
        end = self.monotonic() + timeout
        self._idle.wait(timeout)
        self._next_sweep = 0.0
        self.tick()
        self._idle.wait(max(0.0, end - self.monotonic()))
        self._record()
        return self._idle.is_set()

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="tracker-courier", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            batch = self._todo.get()
            assert self._trackers is not None
            try:
                results = send(self._trackers, batch)
            except Exception as err:
                results = [Sent("", "", "", False, f"tracker posts failed: {err.__class__.__name__}")]
            with self._lock:
                self._sent += results
            self._idle.set()

    def _record(self) -> None:
        with self._lock:
            results, self._sent = self._sent, []
        if not results:
            return
        failed = [r for r in results if not r.ok]
        for result in failed:
            self._say_once(f"tracker: {result.message}; it stays owed and is tried again")
        self._sweep_every = min(self._sweep_every * 2, MAX_SWEEP) if failed else SWEEP
        if failed:
            self._next_sweep = self.monotonic() + self._sweep_every
        try:
            record_sent(self.queue, results, who=self.me, now=self.clock())
        except AqError as err:
            self._say_once(f"tracker: sent, but could not record it ({err}); a later send "
                           "finds the comment and skips it")
        for result in results:
            if result.ok:
                self.say(result.message)

    def _say_once(self, line: str) -> None:
        if line not in self._said:
            self._said.add(line)
            self.say(line)
