"""A worker's attempt threads: one per claim, each with its own stop. Started here, reaped here
into the roster's unrecorded list, and stopped here when their job leaves building under them."""

from __future__ import annotations

import socket
import threading
from dataclasses import replace

from aq.core.children import awaited, family
from aq.core.lifecycle import Stage
from aq.core.usage import Usage
from aq.store.queue import Queue
from aq.store.snapshot import Job
from aq.worker.attempt import crashed_attempt, execute
from aq.worker.context import Claim, Ended, Running, WorkerContext
from aq.worker.courier import Courier
from aq.worker.plan import AttemptPlan
from aq.worker.review import Reviewer
from aq.worker.samples import Sampler


class Launcher:
    def __init__(self, ctx: WorkerContext, courier: Courier) -> None:
        self.ctx = ctx
        self.courier = courier

    def start(self, claim: Claim) -> None:
        ctx = self.ctx
        ctx.summary.claimed += 1
        job = claim.job
        self.courier.moved(job, claim.token)
        assert job.manifest is not None  # only valid manifests are ever picked
        ctx.voice.say(f"claimed {job.id} (attempt {claim.attempt}): {job.manifest.title}")
        running = Running(claim=claim, thread=threading.Thread(), stop=threading.Event())
        if ctx.stopping.is_set():  # a signal landed while this claim was being committed
            running.graceful = True
            running.stop_reason = "the worker was told to stop as it claimed the job"
            running.stop.set()
        running.thread = threading.Thread(target=self._attempt, args=(running, self._plan(claim)),
                                          name=f"attempt-{job.id}", daemon=True)
        ctx.roster.started(running)
        running.thread.start()

    def _plan(self, claim: Claim) -> AttemptPlan:
        job, queue = claim.job, self.ctx.queue
        assert job.manifest is not None
        return AttemptPlan(
            job_id=job.id, attempt=claim.attempt, token=claim.token, worker=self.ctx.worker_id,
            manifest=job.manifest, queue_root=queue.root,
            run_dir=queue.running_dir() / job.id,
            previous_failure=job.state.last_failure_tail, wall_used=job.state.wall_used,
            persona=claim.persona,
            # a job with samples has no worktree: each of its samples has its own
            workspaces=(queue.config.workspaces_root(queue.workspace_key)
                        if queue.config.repo_for(job.manifest) and job.manifest.samples == 1
                        else None),
            usd_used=job.state.usd_used, tokens_used=job.state.tokens_used,
            resume=self._session_to_resume(job),
            verify_only=job.state.awaiting_children,
            review_round=1 + job.state.review_asks,
            work_attempt=_work_attempt(job, claim.attempt),
        )

    def _session_to_resume(self, job: Job) -> tuple[Usage, str] | None:
        """retry-from: session: the last run's agent session and where it lives (host:cwd),
        if it ran on this job's engine on this machine (agent CLIs keep sessions per folder)."""
        manifest, last = job.manifest, job.state.session
        if manifest is None or manifest.retry_from != "session" or last is None:
            return None
        engine, session, usage, where = last
        if (engine != self.ctx.queue.config.engine_for(manifest)
                or where.split(":", 1)[0] != socket.gethostname()):
            return None
        known = Usage.from_event(usage) or Usage()
        return replace(known, session=session), where.split(":", 1)[1] if ":" in where else ""

    def _attempt(self, running: Running, plan: AttemptPlan) -> None:
        try:
            running.result = execute(plan, self.ctx.queue.config, stop=running.stop,
                                     children=lambda: self._unsettled_children(plan.job_id),
                                     reviewer=self._reviewer(plan), sampler=self._sampler(plan))
        except Exception as err:  # a bug or an OS failure: recorded as a failed attempt, not lost
            running.result = crashed_attempt(plan, err)
        finally:
            self.ctx.wake.set()

    def _reviewer(self, plan: AttemptPlan) -> Reviewer | None:
        """The job's review gate as this attempt meets it: its round is the reviews that asked
        for changes so far, plus one."""
        gate = self.ctx.queue.config.review_for(plan.manifest)
        if gate is None:
            return None
        return Reviewer(plan.queue_root, plan.job_id, plan.manifest.body, gate,
                        plan.review_round, plan.work_attempt, self.ctx.worker_id, self.ctx.now)

    def _sampler(self, plan: AttemptPlan) -> Sampler | None:
        """Best of N: the samples of this attempt's round (a verify-only attempt judges those
        of the attempt it resumes)."""
        if plan.manifest.samples == 1:
            return None
        return Sampler(plan.queue_root, plan.job_id, plan.manifest,
                       self.ctx.queue.config.engine_for(plan.manifest), plan.work_attempt,
                       plan.previous_failure, self.ctx.worker_id, self.ctx.now)

    def _unsettled_children(self, job_id: str) -> tuple[str, ...]:
        """The job's children a worker may still run, as this clone has them now (a child it
        spawned was committed here before the engine ended). Read on the attempt's thread."""
        return family(Queue(self.ctx.queue.root).snapshot().jobs, job_id).unsettled

    def stop_all(self, reason: str) -> None:
        """Stop every attempt (a person stopped the worker): each keeps a reason of its own."""
        for running in self.ctx.roster.attempts():
            if running.stop_reason is None:  # not stopping already for a reason of its own
                running.graceful = True
            running.stop_reason = running.stop_reason or reason
            running.stop.set()

    def reap(self) -> None:
        """Move the attempts that ended from running to unrecorded."""
        for job_id, running in list(self.ctx.roster.running.items()):
            if running.thread.is_alive():
                continue
            if running.result is None:  # the attempt thread died of a bug: leave the lease to expire
                self.ctx.roster.ended(job_id, None)
                self.ctx.voice.say(f"attempt of {job_id} ended without a result")
                continue
            self.ctx.roster.ended(job_id, Ended(claim=running.claim, result=running.result,
                                                stop_reason=running.stop_reason,
                                                graceful=running.graceful))

    def watch_cancellations(self) -> None:
        """Stop an attempt whose job left building under us (canceled, or taken by another)."""
        for job_id, running in self.ctx.roster.running.items():
            if running.stop.is_set():
                continue
            if not self.ctx.queue.job_path(Stage.BUILDING, job_id).exists():
                running.stop_reason = "the job left building while it ran (canceled?)"
                running.stop.set()


def _work_attempt(job: Job, attempt: int) -> int:
    """The attempt whose work this one goes on with: its own, or, when it only runs verify
    after waiting, the last that ran the engine and waited (a take-back in between is none)."""
    if job.state.awaiting_children:
        return awaited(job.state.attempts) or attempt
    return attempt
