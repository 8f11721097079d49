"""When a worker run with --drain (or --once) is done: nothing it holds, nothing it could claim,
and nothing that will become claimable without a person (a retry coming due, a job waiting on
one that runs, a lease elsewhere that may expire), or a remote gone away for a lease TTL."""

from __future__ import annotations

from datetime import timedelta

from aq.core.durations import format_duration
from aq.core.events import parse_iso
from aq.core.lifecycle import Stage
from aq.core.scheduler import Verdict
from aq.store.snapshot import Snapshot
from aq.store.sync import denied
from aq.worker.claims import Claimer
from aq.worker.context import Mode, WorkerContext
from aq.worker.reclaim import Reclaimer


class DrainCheck:
    def __init__(self, ctx: WorkerContext, claimer: Claimer, reclaimer: Reclaimer) -> None:
        self.ctx = ctx
        self.claimer = claimer
        self.reclaimer = reclaimer
        self._unreachable_since: float | None = None
        self._waits_said: set[tuple[str, int]] = set()  # (job, attempts) whose retry wait was said
        self._ready_seen: set[tuple[str, int]] = set()  # ready jobs given one more round

    def done(self, busy: bool, claimed_now: int) -> bool:
        """Whether a worker that drains (or runs once) may end, after a round that claimed
        `claimed_now` jobs."""
        ctx = self.ctx
        mode = ctx.options.mode
        if (mode not in (Mode.ONCE, Mode.DRAIN) or busy or claimed_now or self.claimer.contended
                or ctx.queue.held_back):  # the remote refused a push: what it holds is unknown
            return False
        if (mode is Mode.DRAIN and ctx.queue.remote is not None and not ctx.queue.remote_answered
                and self._unreachable_for() < ctx.options.lease_ttl
                and not denied(ctx.queue.unreachable_said)):
            # the remote is away: what is left there is unknown, so wait (a while); one that
            # refuses this clone's credentials will not let it in by waiting
            return False
        return mode is Mode.ONCE or not self._waiting_on_others()

    def _unreachable_for(self) -> float:
        now = self.ctx.monotonic()
        if self.ctx.queue.remote_answered:
            self._unreachable_since = None
            return 0.0
        if self._unreachable_since is None:
            self._unreachable_since = now
        return now - self._unreachable_since

    def _waiting_on_others(self) -> bool:
        """True while an inbox job will become takeable without a person: its retry time is
        coming, or (drain) it waits for a job that is running or for a lock a running job holds."""
        snapshot = self.ctx.queue.snapshot()
        verdicts = self.claimer.assess(snapshot)
        self._say_retry_waits(snapshot, verdicts)
        # A retry whose backoff ended after this round's claim is ready now: one more round takes
        # it (once per attempt, so a ready job the claim refuses cannot keep the worker forever).
        ready = {(v.job.id, v.job.state.attempt_count) for v in verdicts if v.ready} - self._ready_seen
        self._ready_seen |= ready
        return bool(ready) or any(v.kind == "not_before" for v in verdicts) or (
            self.reclaimer.silent_leases) or (
            self.ctx.queue.remote is not None
            and any(job.stage is Stage.BUILDING for job in snapshot.jobs)
            and any(v.kind in ("dep", "lock") for v in verdicts))

    def _say_retry_waits(self, snapshot: Snapshot, verdicts: list[Verdict]) -> None:
        """Once per retry: what a draining worker waits for, and until when (else a long backoff
        looks like a hang)."""
        waiting = [v.job for v in verdicts if v.kind == "not_before"
                   and (v.job.id, v.job.state.attempt_count) not in self._waits_said]
        if not waiting:
            return
        waits = self.claimer.retry_waits(snapshot)
        now = self.ctx.now()
        for job in waiting:
            self._waits_said.add((job.id, job.state.attempt_count))
            if waits is not None:
                seconds = waits.get(job.id, 0.0)
            else:
                not_before = job.state.not_before
                seconds = (parse_iso(not_before) - now).total_seconds() if not_before else 0.0
            until = (now + timedelta(seconds=seconds)).strftime("%H:%M:%S")
            self.ctx.voice.say(f"waiting {format_duration(seconds)} for {job.id}'s retry "
                               f"backoff (until {until} UTC)")
