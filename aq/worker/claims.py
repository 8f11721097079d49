"""Picking and claiming jobs. A claim is a transaction that first takes back jobs whose lease
expired, then picks from what is on disk under the queue lock (the router's first of the ready
jobs) and renames inbox -> building with a `claimed` event carrying a fresh lease token, the
profile it pins and the router's score of the job. With a remote, the claim counts only once
pushed (a rejected push means another machine won; the transaction decides again on the new
tip); a claim whose push may or may not have landed waits, uncertain, until the remote shows
which. An offline claim is replayed on the remote's tip when it answers."""

from __future__ import annotations

import functools
import os
import random
import secrets
import socket
from collections.abc import Callable
from dataclasses import replace

from aq.core.events import claimed, iso, note
from aq.core.lifecycle import Stage
from aq.core.profile import Profile, apply_profile, choose_engine
from aq.core.scheduler import Routing, Verdict, assess
from aq.errors import AqError, PushUncertain, RemoteBusy, RemoteRefused, RemoteUnreachable
from aq.store.snapshot import Job, Snapshot
from aq.store.sync import LeaseObserver
from aq.store.tx import Tx
from aq.usecases.routing import rank_ready
from aq.worker.context import Claim, WorkerContext
from aq.worker.reclaim import Reclaimer


class Claimer:
    def __init__(self, ctx: WorkerContext, reclaimer: Reclaimer) -> None:
        self.ctx = ctx
        self.reclaimer = reclaimer
        self.contended = False  # the last claim lost every race: work is there
        self._profiles: dict[str, Profile] = {}
        self._claimed_at: float | None = None  # when this worker's last claim landed
        self._window = 0.0  # how long that claim took, fetch to push

    def take_turn(self) -> None:
        """Fairness among workers racing for claims: one whose last claim landed moments ago
        (on a streak: short jobs, a clone nearer the remote) waits a random part of two claim
        windows before it claims again, so that a worker that lost to it gets a window of its
        own; without this, in a 6-worker run two workers made every claim. A claim window is
        how long this worker's last claim took, at most 1s: a worker of agent jobs minutes
        long never waits."""
        if self._claimed_at is None or self.ctx.queue.remote is None:
            return
        window = min(1.0, self._window)
        if self.ctx.monotonic() - self._claimed_at < 2 * window:
            self.ctx.stopping.wait(random.uniform(0, 2 * window))

    def landed(self, started: float) -> None:
        """A claim that began at `started` landed now."""
        self._claimed_at = self.ctx.monotonic()
        self._window = self._claimed_at - started

    def claim_while(self, room: Callable[[], bool], start: Callable[[Claim], None]) -> int:
        """Claim and start jobs while there is `room`: how many."""
        self.contended = False
        count = 0
        while room():
            claim = self.transact_claim()
            if claim is None:
                break
            count += 1
            start(claim)
        return count

    def transact_claim(self) -> Claim | None:
        """One claim transaction: the claim, or None (nothing to take, or the remote said no)."""
        ctx = self.ctx
        replay = ((lambda c: functools.partial(self.replay_claim, c) if c else None)
                  if ctx.options.offline else None)
        if ctx.queue.held_back:  # the remote refused a push: no claim until the wait is over
            return None
        self.take_turn()
        started = ctx.monotonic()
        try:
            # a look for work: a sibling worker's fetch within a poll is as good as its own
            claim: Claim | None = ctx.queue.transact(
                self.claim, f"aq: claim by {ctx.worker_id}",
                describe=lambda c: f"aq: claim {c.job.id if c else ''} by {ctx.worker_id}",
                replay=replay, fresh=ctx.options.poll)
            if claim is not None:
                self.landed(started)
            return claim
        except RemoteUnreachable:
            ctx.voice.unreachable("claiming nothing new until it answers")
        except PushUncertain as err:
            if isinstance(err.result, Claim):
                ctx.roster.hold_uncertain(err.result)
                ctx.voice.say(f"{err.result.job.id}: the remote stopped answering during the "
                              "claim; it runs once the claim is confirmed")
        except RemoteRefused as err:
            ctx.voice.say_once(f"claiming nothing new for a while: {err}")
        except RemoteBusy as err:
            self.contended = True  # others kept winning: there is work, try again shortly
            ctx.voice.say(str(err))
        except AqError as err:
            ctx.voice.say(f"could not claim: {err}")
        return None

    def claim(self, tx: Tx) -> Claim | None:
        """In a transaction: take back expired leases, then claim the first job ready to run."""
        ctx = self.ctx
        snapshot = ctx.queue.snapshot()
        if self.reclaimer.take_back_expired(tx, snapshot):
            snapshot = ctx.queue.snapshot()
        self._warn_invalid(snapshot)
        verdicts = self.assess(snapshot)
        ranked = rank_ready(ctx.queue, snapshot, verdicts, ctx.now(), profiles=self._profiles,
                            worker_caps=ctx.options.capabilities, worker_id=ctx.worker_id,
                            leaving=ctx.roster.running)
        if not ranked:
            return None
        job = snapshot.by_id()[ranked[0].job.id]
        job, persona, pinned = self._as_profiled(job)
        attempt = job.state.attempt_count + 1
        token = f"{attempt}.{ctx.worker_id}.{secrets.token_hex(3)}"
        event = claimed(iso(ctx.now()), ctx.worker_id, attempt, token,
                        host=socket.gethostname(), pid=os.getpid(),
                        score=ranked[0].score.breakdown(), **pinned)
        if not tx.online:
            event["offline"] = True
        tx.move(job.id, Stage.INBOX, Stage.BUILDING, event)
        return Claim(job=job, attempt=attempt, token=token, event=event,
                     claimed_at=ctx.monotonic(), persona=persona)

    def assess(self, snapshot: Snapshot) -> list[Verdict]:
        """Each job's verdict for this worker, with the profiles as they are on disk now."""
        ctx = self.ctx
        config = ctx.queue.config
        loaded = ctx.queue.profiles()  # read afresh: the claim pins what it saw
        self._profiles = loaded.found
        for line in loaded.problems:  # a profile that cannot be read (or is a link) is skipped
            ctx.voice.warn(f"skipping {line}")
        routing = Routing(self._profiles, config.engine_classes, ctx.worker_id,
                          config.prefer_window)
        return assess(snapshot.views(), ctx.now(), halted=ctx.queue.halted(),
                      worker_caps=ctx.options.capabilities,
                      retry_waits=self.retry_waits(snapshot), routing=routing)

    def _as_profiled(self, job: Job) -> tuple[Job, str | None, dict[str, object]]:
        """The job as this attempt runs it: its profile's defaults applied and its engine class
        resolved to an engine this worker has. Also the persona, and what the claim event
        records (profile name, version and content hash; the engine chosen), so an edit to the
        profile while the job runs does not change this attempt."""
        assert job.manifest is not None
        profile = self._profiles.get(job.manifest.profile) if job.manifest.profile else None
        manifest = apply_profile(job.manifest, profile)
        pinned: dict[str, object] = {}
        if profile is not None:
            pinned["profile"] = {"name": profile.name, "version": profile.version,
                                 "hash": profile.content_hash}
        if manifest.engine is None and manifest.engine_class is not None:
            routing = Routing(self._profiles, self.ctx.queue.config.engine_classes)
            engines = routing.engines_of(manifest.engine_class, profile)
            manifest = replace(manifest, engine=choose_engine(manifest.engine_class, engines,
                                                              self.ctx.options.capabilities))
            pinned["engine"] = manifest.engine
        ladder = manifest.retry.escalate if manifest.retry else ()
        if ladder:  # each retry one step up the job's engine ladder; a take-back is no step
            step = min(job.state.retries_used, len(ladder) - 1)
            manifest = replace(manifest, engine=ladder[step], engine_class=None)
            pinned["engine"] = manifest.engine
            pinned["engine_why"] = (f"retry.escalate step {step + 1} of {len(ladder)}, after "
                                    f"{job.state.retries_used} retr"
                                    f"{'y' if job.state.retries_used == 1 else 'ies'}")
        return replace(job, manifest=manifest), profile.persona if profile else None, pinned

    def retry_waits(self, snapshot: Snapshot) -> dict[str, float] | None:
        """In a fleet, a retry's backoff runs on this machine's monotonic clock from when it first
        saw the retry, not on the finishing worker's wall clock (which may be an hour off)."""
        queue = self.ctx.queue
        if queue.remote is None:
            return None
        pending = {f"{job.id}:{job.state.attempt_count}": backoff for job in snapshot.jobs
                   if job.stage is Stage.INBOX and (backoff := job.state.retry_backoff) is not None}
        if not pending:
            return {}

        waits = LeaseObserver(queue.state_dir / "leases.json").retry_waits(self.ctx.monotonic(), pending)
        return {key.rpartition(":")[0]: wait for key, wait in waits.items()}

    def _warn_invalid(self, snapshot: Snapshot) -> None:
        lines = [job.error for job in snapshot.jobs if job.stage is Stage.INBOX and job.error]
        for line in [*lines, *snapshot.problems]:
            if line:
                self.ctx.voice.warn(f"skipping {line}")

    def replay_claim(self, claim: Claim, tx: Tx) -> None:
        """An offline claim, replayed on the remote's tip: it stands only if the job is still waiting."""
        ctx, job_id = self.ctx, claim.job.id
        stage = tx.stage_of(job_id)
        if stage is Stage.INBOX:
            tx.move(job_id, Stage.INBOX, Stage.BUILDING, {**claim.event, "replayed": iso(ctx.now())})
            return
        ctx.summary.conflicts.append(job_id)
        ctx.voice.say(f"{job_id}: ran offline, but it was taken meanwhile (now in {stage}); "
                      "its result is kept as stale_result, not counted")
        tx.append_event(job_id, note(
            iso(ctx.now()), ctx.worker_id, claim.token,
            why=f"offline_conflict: claimed offline by {ctx.worker_id}, but the job was in {stage} "
                "on the remote"))

    def settle_uncertain(self, start: Callable[[Claim], None]) -> None:
        """Start a claim once the remote shows it landed; forget it once it shows it did not."""
        queue, roster = self.ctx.queue, self.ctx.roster
        remote = queue.remote
        if not roster.uncertain or not queue.remote_answered or remote is None:
            return
        if remote.head() != remote.tip():
            return  # the clone still holds commits the remote has not taken: not the remote's view
        for job_id, claim in list(roster.uncertain.items()):
            roster.drop_uncertain(job_id)
            stage = queue.stage_of(job_id)
            token = queue.state_of(job_id).token
            if stage is Stage.BUILDING and token == claim.token:
                self.ctx.voice.say(f"{job_id}: the claim landed after all")
                start(claim)
            else:
                self.ctx.voice.say(f"{job_id}: the claim did not land; not running it")
