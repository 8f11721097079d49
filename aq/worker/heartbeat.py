"""A worker's heartbeat: a thread that ticks often and cheaply and, when its machine's beat is
due, pushes it (aq.store.beats: one ref per machine, `refs/aq/workers/<machine>`, listing every
lease the machine's workers hold); and the self-fencing that goes with it: a holder whose
renewals have not reached the remote for `renew_deadline` stops its attempts, so that no two
engines work one job at once."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from aq.core.events import iso
from aq.core.leases import unrenewed
from aq.store.beats import ALIVE, LEASES, MachineBeat, Me, Timing, machine_id, trailer
from aq.store.sync import LeaseObserver
from aq.worker.context import WorkerContext


class Heartbeat:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.renewed_at = ctx.monotonic()  # when the last renewal that reached the remote left
        self._beat_now = threading.Event()
        self.ticked = threading.Event()  # the thread's first tick is done
        self._ending = threading.Event()
        self._thread: threading.Thread | None = None
        options = ctx.options
        self.timing = Timing(interval=options.heartbeat_interval,
                             tick=min(options.heartbeat_interval, options.lease_ttl / 20),
                             idle=options.lease_ttl)
        self.machine = MachineBeat(ctx.queue.state_dir, machine_id(ctx.queue.root),
                                   LeaseObserver.boot_id())

    def start(self) -> None:
        if self.ctx.queue.remote is None:
            return
        # the worker's commits name the machine's leases; their landing renews them
        self.ctx.queue.local.trailer = self.trailer
        self.ctx.queue.replica.on_renewal = self.renewal
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread, after a last tick (its stop is said if the machine's beat is due)."""
        if self._thread is None:
            return
        self._ending.set()
        self._beat_now.set()
        self._thread.join(timeout=5)

    def _done(self) -> bool:
        """The worker stops and runs nothing more: this beat is the last."""
        return (self._ending.is_set() or self.ctx.stopping.is_set()) and not self.ctx.roster.running

    def _run(self) -> None:
        while True:
            retiring = self._done()
            try:
                self.beat(force=False, retiring=retiring)  # a stop is said if a beat is due
            except Exception as err:  # the thread must outlive any one beat, or every lease expires
                self.ctx.voice.say(f"heartbeat failed: {err!r}; trying again")
            self.ticked.set()
            if retiring:
                return
            self._beat_now.wait(timeout=self.timing.tick)
            self._beat_now.clear()

    def beat(self, seq: int = 0, *, retiring: bool = False, force: bool = True) -> None:
        """Tick: note what this worker holds and push the machine's beat if it is due (always,
        when `force`d); stop the attempts whose lease went unrenewed too long meanwhile.
        (`seq` is kept for callers that number their beats; the machine numbers its own.)"""
        ctx = self.ctx
        remote = ctx.queue.remote
        assert remote is not None
        tokens = tuple(ctx.roster.tokens())
        me = Me(ctx.worker_id, os.getpid(), tokens, tuple(sorted(ctx.options.capabilities or ())),
                retiring)
        started = ctx.monotonic()
        renewed_before = self.renewed_at
        # a push that hangs must not outlast the renew deadline (the main loop checks it too)
        timeout = max(2.0, min(ctx.options.heartbeat_interval, ctx.options.lease_ttl / 4))

        def push(payload: dict[str, object]) -> bool:
            counts = remote.pacer.counts() if remote.pacer is not None else {}
            if counts:  # the machine's push counts, for aq stats: read only for a beat pushed,
                # and this beat among them (it is counted as it goes, after this is written)
                payload["pushes"] = {**counts, "heartbeats": counts["heartbeats"] + 1}
            return remote.heartbeat(self.machine.machine, payload, timeout=timeout,
                                    identity=ctx.queue.identity or ())

        # a landed commit renews a lease, or shows the machine alive, only where every machine
        # counts it so (an older aq does not): it is seen within three TTLs of its last beat
        reads = LeaseObserver(ctx.queue.state_dir / "leases.json").fleet_reads(
            started, 3 * ctx.options.lease_ttl)
        commits = LEASES in reads
        tick = self.machine.tick(me, started, self.timing, push, iso(ctx.now()), force=force,
                                 commits=commits, alive=commits and ALIVE in reads)
        # silence before this beat counts even if it renewed: a pause (SIGSTOP, a suspended
        # laptop) between renewals may have let observers expire the lease
        self.lose_silent_leases(renewed_before, started)
        renewed = tick.renewed(tokens, commits=commits)  # by a beat, or a commit that landed
        if renewed is not None:
            self.renewed_at = max(self.renewed_at, renewed)
        if tick.pushed and not tick.landed:
            self.lose_silent_leases(renewed_before, ctx.monotonic())
            silent = ctx.monotonic() - self.renewed_at
            if silent >= ctx.options.lease_ttl / 2 and ctx.roster.busy():
                ctx.voice.unreachable(f"no heartbeat has reached it for {silent:.0f}s")

    def trailer(self) -> tuple[str, frozenset[str]]:
        """The line a commit of this worker carries to renew the machine's leases (this
        worker's own, and those of its live siblings), and those leases."""
        ctx = self.ctx
        tokens = self.machine.leases(ctx.monotonic(), self.timing) | set(ctx.roster.tokens())
        return trailer(self.machine.machine, tokens), tokens

    def renewal(self) -> Callable[[frozenset[str]], None]:
        """As a push of the worker's commits leaves: what renews the leases they named, as of
        now, once it landed."""
        leaving = self.ctx.monotonic()
        return lambda tokens: self.machine.renewed(tokens, leaving)

    def check_renewal(self) -> None:
        """The renew deadline, checked from the main loop as well: the heartbeat thread may be
        stuck in a push that neither lands nor fails. Offline claims count from when the remote
        took them (nothing left unpushed: the claim's replay stays so until a push of it lands)."""
        ctx = self.ctx
        if ctx.queue.remote is None:
            return
        if not ctx.queue.unpushed:
            for running in ctx.roster.attempts():
                if running.claim.event.get("offline") and running.landed_at is None:
                    running.landed_at = ctx.monotonic()
        self.lose_silent_leases(self.renewed_at, ctx.monotonic())

    def lose_silent_leases(self, renewed_at: float, now: float) -> None:
        """Stop each attempt whose lease went unrenewed for the renew deadline: another machine
        may own the job now. A result is recorded only if the job is still ours on the remote
        (the token check fences it)."""
        deadline = self.ctx.options.renew_deadline
        for running in self.ctx.roster.attempts():
            claim = running.claim
            silent = unrenewed(now, renewed_at, claim.claimed_at, running.landed_at,
                               offline=bool(claim.event.get("offline")))
            if silent is not None and silent >= deadline and not running.stop.is_set():
                running.stop_reason = (f"lease lost: no heartbeat reached the remote for "
                                       f"{silent:.0f}s (renew deadline {deadline:.0f}s)")
                running.stop.set()
                self.ctx.wake.set()
