"""Taking back others' expired leases: a building job whose holder on this host is gone, or
whose lease this machine has watched go unrenewed for `lease_ttl`, moves back to the inbox (or
dead_letter), with what its dead attempt wrote and left running here dealt with."""

from __future__ import annotations

import contextlib
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from aq.core.decisions import reclaim_decision
from aq.core.events import finished, iso
from aq.core.leases import expired, look_is_fresh, may_expire, watch_gap
from aq.core.lifecycle import Stage
from aq.infra import proc, proctree
from aq.infra.rundir import RunFiles
from aq.store.snapshot import Job, Snapshot
from aq.store.sync import LeaseObserver
from aq.store.tx import Tx
from aq.usecases.spend import live_usage
from aq.worker.context import WorkerContext
from aq.worker.courier import Courier
from aq.worker.keeper import Keeper


def kill_leftovers(files: RunFiles) -> None:
    """KILL what an attempt of a worker that died left running on this machine: its process
    group and every process carrying its mark (tools that made sessions of their own)."""
    pgid: int | None = None
    with contextlib.suppress(OSError, ValueError):
        pgid = int(files.pgid.read_text())
    try:
        mark: str | None = files.mark.read_text().strip() or None
    except OSError:
        mark = None
    if mark is not None:
        proctree.sweep(mark, pgid)
    elif pgid is not None:
        proc.kill_group(pgid)


@dataclass(frozen=True, slots=True)
class Look:
    """The heartbeats as last looked up: when (monotonic), each lease's silence then, the
    leases seen renewed, and how many fetches had failed by then."""

    at: float
    silence: dict[str, float]
    confirmed: set[str]
    fetches_failed: int


class Reclaimer:
    def __init__(self, ctx: WorkerContext, keeper: Keeper, courier: Courier) -> None:
        self.ctx = ctx
        self.keeper = keeper
        self.courier = courier
        self.silent_leases = False  # some lease held elsewhere is going unrenewed
        self._look: Look | None = None

    def take_back_expired(self, tx: Tx, snapshot: Snapshot) -> bool:
        """Move building jobs whose lease expired back to the inbox (or dead_letter). True if any."""
        ctx, roster = self.ctx, self.ctx.roster
        every = {job.state.token: job for job in snapshot.jobs
                 if job.stage is Stage.BUILDING and job.state.token}
        building = {token: job for token, job in every.items()
                    if job.id not in roster.running and job.id not in roster.uncertain}
        silence: dict[str, float] = {}
        if not building:
            self.silent_leases = False
            return False
        if ctx.queue.remote is not None and tx.online:
            # observed for every lease, this worker's own too: what this machine saw is shared
            # by all workers of the clone, and one must not drop another's record of a renewal
            looked = self.observe(every)
            if looked is None:  # a sibling's fetch read, no look of its own: it judges
                return False
            seen, confirmed = looked
            silence = {token: s for token, s in seen.items() if token in building}
        else:
            confirmed = set(building)
        # drain waits for a lease that may expire
        overdue = min(ctx.options.heartbeat_interval, ctx.options.lease_ttl / 4)
        self.silent_leases = any(may_expire(s, token in confirmed, overdue)
                                 for token, s in silence.items())
        taken = False
        for token, job in building.items():
            cause = self._expiry(job, silence.get(token))
            if cause is not None:
                self._take_back(tx, job, cause)
                taken = True
        return taken

    def _expiry(self, job: Job, silent: float | None) -> str | None:
        """Why the job's lease is expired, or None while it holds."""
        state, ttl = job.state, self.ctx.options.lease_ttl
        if (state.holder_host == socket.gethostname() and state.holder_pid
                and not proc.pid_alive(state.holder_pid)):
            return f"worker {state.holder} (pid {state.holder_pid}) on this host is gone"
        if silent is not None and expired(silent, ttl):
            return (f"no heartbeat from {state.holder} renewed lease {state.token} for "
                    f"{silent:.0f}s (lease_ttl {ttl:.0f}s)")
        return None

    def keep_watch(self, tx: Tx) -> None:
        """A busy worker's refresh notes the heartbeats now and then, so that this machine's
        watch of the remote does not lapse while all its workers are busy: a lapsed watch
        restarts every lease's silence (aq.core.leases), which delays taking back a dead one."""
        ctx, last = self.ctx, self._look
        gap = watch_gap(ctx.options.lease_ttl, ctx.options.poll)
        if ctx.queue.remote is None or not tx.online or (
                last is not None and ctx.monotonic() - last.at < gap / 3):
            return
        every = {job.state.token: job for job in ctx.queue.snapshot().jobs
                 if job.stage is Stage.BUILDING and job.state.token}
        if every:
            self.observe(every)

    def observe(self, building: Mapping[str, Job]) -> tuple[dict[str, float], set[str]] | None:
        """Each lease's silence and the leases seen renewed, from the heartbeats fetched last.
        Looked up at most every quarter heartbeat interval: in between the last figures are
        aged by the time passed (aq.core.leases.look_is_fresh). A fetch that failed since makes
        them out of date: the outage restarts every lease's silence. None when this worker's
        last sync read a sibling's fetch and its own figures are not fresh: it has no look of
        its own (the sibling that fetched judged the leases on it)."""
        ctx = self.ctx
        now, last = ctx.monotonic(), self._look
        if (last is not None and last.fetches_failed == ctx.queue.fetches_failed
                and look_is_fresh(last.at, now, ctx.options.heartbeat_interval)):
            aged = now - last.at
            return ({token: last.silence[token] + aged for token in building if token in last.silence},
                    last.confirmed & set(building))
        if not ctx.queue.looked:
            return None

        remote = ctx.queue.remote
        assert remote is not None
        observer = LeaseObserver(ctx.queue.state_dir / "leases.json")
        silence, confirmed = observer.observe(
            remote, now, {token: str(job.state.holder) for token, job in building.items()},
            gap=watch_gap(ctx.options.lease_ttl, ctx.options.poll))
        self._look = Look(at=now, silence=silence, confirmed=confirmed,
                          fetches_failed=ctx.queue.fetches_failed)
        return silence, confirmed

    def _take_back(self, tx: Tx, job: Job, cause: str) -> None:
        ctx, state = self.ctx, job.state
        config = ctx.queue.config
        decision = reclaim_decision("lease_expired", cause, state.reclaims, config.max_reclaims)
        files = RunFiles(ctx.queue.running_dir() / job.id, state.attempt_count)
        kill_leftovers(files)  # what a dead worker's engine left running here
        spent = live_usage(files.folder, files.attempt)  # what it cost, when its meter kept it here
        log_rel, lost = self._keep_live_log(tx, job, files, cause)
        tx.move(job.id, Stage.BUILDING, decision.to, finished(
            iso(ctx.now()), ctx.worker_id, decision.to, decision.action, state.attempt_count,
            state.token, "lease_expired", why=decision.reason, reclaim=True, log=log_rel,
            **({"log_not_kept": lost} if lost else {}),
            **({"usage": spent.to_event()} if spent is not None else {})))
        ctx.summary.reclaimed.append(job.id)
        self.courier.moved(job)
        ctx.voice.say(f"{job.id}: {decision.reason} -> {decision.to}")

    def _keep_live_log(self, tx: Tx, job: Job, files: RunFiles, cause: str
                       ) -> tuple[str | None, str | None]:
        """What the dead attempt wrote (already scrubbed), kept with the cause, its tail if long:
        the kept log's path, and why it could not be kept."""
        attempt, live = files.attempt, files.log
        if not live.exists():
            return None, None
        kept = self.ctx.queue.logs_dir(job.id) / f"{attempt}.log"
        lost = self.keeper.write(tx, kept, live.read_bytes()[-self.ctx.queue.config.log_max:]
                                 + f"\n[aq] {cause}\n".encode())
        if lost is not None:  # the live log stays on this machine
            self.ctx.voice.warn(f"{job.id}: the log of attempt {attempt} was not kept ({lost})")
            return None, lost
        shutil.rmtree(files.folder, ignore_errors=True)
        return self.ctx.queue.relative(kept), None
