"""`aq run`: a worker that claims jobs, runs attempts, and records where each job goes next.

The Worker runs the loop; its parts each do one job: start-up recovery (aq.worker.startup),
picking and claiming (aq.worker.claims), taking back others' expired leases
(aq.worker.reclaim), attempt threads (aq.worker.launcher), heartbeats and self-fencing
(aq.worker.heartbeat), recording results (aq.worker.recorder), and knowing when a drain is
done (aq.worker.drain). They share a WorkerContext (aq.worker.context): the queue, the
options, the clocks, and the roster of claims held.

Leases: the worker force-pushes a heartbeat listing the tokens it holds to its own ref
(`refs/aq/workers/<id>`) every `heartbeat_interval`. A lease is expired when the observer has
seen no renewal for `lease_ttl` on its own monotonic clock while it could see the remote: after
an outage (a fetch that failed) every lease gets a full `lease_ttl` again (aq.core.leases). A
holder that cannot renew for `renew_deadline` stops its attempts, so that no two engines work
one job at once.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime
from types import FrameType

from aq.core.leases import heartbeat_every, renew_deadline
from aq.errors import AqError
from aq.infra.clock import utc_now
from aq.store.config import QueueConfig
from aq.store.queue import Queue
from aq.worker.claims import Claimer
from aq.worker.context import (
    Claim,
    Mode,
    Options,
    Roster,
    RunSummary,
    Voice,
    WorkerContext,
    default_worker_id,
)
from aq.worker.courier import Courier
from aq.worker.drain import DrainCheck
from aq.worker.heartbeat import Heartbeat
from aq.worker.keeper import Keeper
from aq.worker.launcher import Launcher
from aq.worker.reclaim import Reclaimer
from aq.worker.recorder import Recorder
from aq.worker.startup import recover
from aq.worker.upkeep import Upkeep

COURIER_FLUSH = 30.0  # seconds a worker that ends waits for its last tracker posts


def read_options(config: QueueConfig, *, max_jobs: int, poll: float | None, mode: str,
                 capabilities: frozenset[str] | None, offline: bool, lease_ttl: float | None,
                 heartbeat: float | None) -> Options:
    """A worker's options: the command line's, else aq.yaml's."""
    ttl = lease_ttl or config.lease_ttl
    beat = heartbeat_every(ttl, heartbeat or config.heartbeat_interval)
    return Options(max_jobs=max(1, max_jobs), poll=poll if poll is not None else config.poll,
                   mode=Mode(mode), capabilities=capabilities, offline=offline, lease_ttl=ttl,
                   heartbeat_interval=beat, renew_deadline=renew_deadline(ttl, beat))


class Worker:
    """The loop: claim up to capacity, reap and record attempts, keep leases, until the mode
    says it is done or a person stops it. Time comes from `now` and `monotonic`, never read
    directly, so a test can drive it."""

    def __init__(
        self,
        queue: Queue,
        *,
        worker_id: str | None = None,
        max_jobs: int = 1,
        poll: float | None = None,
        mode: str = Mode.FOREVER,
        capabilities: frozenset[str] | None = None,
        offline: bool = False,
        lease_ttl: float | None = None,
        heartbeat: float | None = None,
        now: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.queue = queue
        self.worker_id = worker_id or default_worker_id()
        self.options = read_options(queue.config, max_jobs=max_jobs, poll=poll, mode=mode,
                                    capabilities=capabilities, offline=offline,
                                    lease_ttl=lease_ttl, heartbeat=heartbeat)
        remote = queue.remote
        voice = Voice(self.worker_id, say, monotonic, remote.name if remote else None,
                      lambda: queue.unreachable_said)
        self.ctx = ctx = WorkerContext(
            queue=queue, worker_id=self.worker_id, options=self.options, now=now,
            monotonic=monotonic, voice=voice, roster=Roster(), summary=RunSummary(),
            stopping=threading.Event(), wake=threading.Event())
        self.summary = ctx.summary
        self.courier = Courier(queue, self.worker_id, now, monotonic, voice.say)
        keeper = Keeper(queue, voice)
        self.reclaimer = Reclaimer(ctx, keeper, self.courier)
        self.claims = Claimer(ctx, self.reclaimer)
        self.heartbeat = Heartbeat(ctx)
        self.launcher = Launcher(ctx, self.courier)
        self.recorder = Recorder(ctx, keeper, self.courier, self.claims)
        self.drain = DrainCheck(ctx, self.claims, self.reclaimer)
        self.upkeep = Upkeep(ctx)
        self._next_refresh = 0.0

    def run(self) -> RunSummary:
        self.queue.check_folders()  # a stage folder that is a link: the queue is refused at once
        restore = self._install_signals()
        self.heartbeat.start()
        if self.queue.config.push_budget is not None:
            # the budget is shared by the machines whose beats it sees: be one of them first
            self.heartbeat.ticked.wait(timeout=min(5.0, self.options.lease_ttl / 4))
        try:
            recover(self.ctx)
            self._loop()
        finally:
            restore()
            self.heartbeat.stop()
        return self.summary

    def request_stop(self, reason: str = "stop requested") -> None:
        ctx = self.ctx
        if not ctx.stopping.is_set():
            ctx.voice.say(f"{reason}; stopping the jobs it runs")
        ctx.stopping.set()
        self.summary.interrupted = True
        self.launcher.stop_all(reason)
        ctx.wake.set()

    def _loop(self) -> None:
        ctx = self.ctx
        while True:
            self.launcher.reap()
            self._record_unrecorded()
            if ctx.stopping.is_set():
                if not ctx.roster.running and not ctx.roster.unrecorded:
                    self._flush_on_exit()
                    return
            else:
                claimed_now = self.claims.claim_while(self._room_to_claim, self._start)
                if self.options.mode is Mode.ONCE and self.summary.claimed >= 1 and not self._busy():
                    self._flush_on_exit()
                    return
                if self.drain.done(self._busy(), claimed_now):
                    if self.summary.claimed == 0:
                        ctx.voice.say("nothing to run")
                    self._flush_on_exit()
                    return
            self._turn()

    def _turn(self) -> None:
        """The rest of one turn of the loop, then a wait until something happens (or a poll)."""
        ctx = self.ctx
        self.heartbeat.check_renewal()
        self._say_notices()
        self._refresh_while_busy()
        self.claims.settle_uncertain(self._start)
        self.launcher.watch_cancellations()
        self.courier.tick()
        if not self._busy() and not ctx.stopping.is_set():
            self.upkeep.idle_turn()
        ctx.wake.wait(timeout=0.2 if self._busy() else self._idle_wait())
        ctx.wake.clear()

    def _say_notices(self) -> None:
        for notice in self.queue.take_notices():
            self.ctx.voice.say(notice)

    def _refresh_while_busy(self) -> None:
        """At capacity a worker claims nothing, so it fetches on its own every poll: to see a
        job canceled or taken from it elsewhere, and to push the work the remote lacks."""
        if self.queue.remote is None or not self._busy():
            return
        now = self.ctx.monotonic()
        if now < self._next_refresh:
            return
        self._next_refresh = now + self.options.poll
        try:
            self.queue.transact(self.reclaimer.keep_watch, "aq: refresh", replay=lambda _: None)
        except AqError as err:
            self.ctx.voice.say(f"could not refresh from the remote: {err}")
        if not self.queue.unpushed:
            self.ctx.roster.landed()

    def _busy(self) -> bool:
        return self.ctx.roster.busy() or bool(self.queue.unpushed)

    def _idle_wait(self) -> float:
        return min(self.options.poll, 1.0) if self.options.mode is Mode.DRAIN else self.options.poll

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum: int, _frame: FrameType | None) -> None:
            self.summary.signal = self.summary.signal or signal.Signals(signum).name
            self.request_stop(f"got {signal.Signals(signum).name}")

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore

    # --- claims and results ----------------------------------------------------------------

    def _room_to_claim(self) -> bool:
        """Room for one more claim now (and, with --once, none made yet)."""
        if self.ctx.stopping.is_set() or (self.options.mode is Mode.ONCE and self.summary.claimed >= 1):
            return False
        return self.ctx.roster.holding() < self.options.max_jobs

    def _may_claim_after_finish(self) -> bool:
        if self.ctx.stopping.is_set() or self.options.mode is Mode.ONCE:
            return False
        return self.ctx.roster.holding() < self.options.max_jobs

    def _start(self, claim: Claim) -> None:
        self.launcher.start(claim)
        # the claim commit itself starts the lease: observers count from when they first see it,
        # and the next regular heartbeat renews it
        self._next_refresh = self.ctx.monotonic() + self.options.poll

    def _record_unrecorded(self) -> None:
        """Record each ended attempt, and start what its commit claimed. Entries stay listed
        until recorded: the heartbeat thread keeps renewing their leases."""
        roster = self.ctx.roster
        for ended in list(roster.unrecorded):
            recorded = self.recorder.finish(ended, self._may_claim_after_finish)
            if recorded is None:
                continue
            taken = recorded.taken
            if taken is not None:
                if recorded.confirmed or self.options.offline:
                    self._start(taken)
                else:  # the push was not confirmed: run it only once the remote shows the claim
                    roster.hold_uncertain(taken)
            roster.recorded(ended)

    def _flush_on_exit(self) -> None:
        """Before exiting, give work the remote has not taken a few chances to land, and
        tracker posts a while to go out."""
        if not self.courier.flush(timeout=COURIER_FLUSH):  # first: its records are unpushed work too
            self.ctx.voice.say("tracker posts still on their way; what does not arrive stays "
                               "owed ('aq to-tracker' sends it)")
        for attempt in range(5):
            if not self.queue.unpushed:
                return
            try:
                self.queue.transact(lambda tx: None, "aq: flush")
            except AqError:
                time.sleep(min(2.0, 0.2 * 2 ** attempt))
        if self.queue.unpushed:
            self.ctx.voice.say(f"{self.queue.unpushed} result(s) not yet on the remote; they are "
                               "committed in this clone and are sent by the next 'aq run' here")
