"""Recording an attempt's result: a transaction that moves the job where the lifecycle decides
only if it is still in building under the same lease token; otherwise the result is fenced and
kept as a `stale_result` event with its log. The same commit claims the next job when the
worker will take one: one push per job instead of two."""

from __future__ import annotations

import functools
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aq.core.decisions import Decision, decide, failure_fingerprint
from aq.core.events import Event, JobState, finished, fold, iso, stale_result
from aq.core.fencing import Standing, fence
from aq.core.lifecycle import Action, Outcome, Stage
from aq.core.manifest import Manifest
from aq.errors import AqError
from aq.infra.repos import remove_workspace
from aq.store.layout import HALT_FILE
from aq.store.tx import Tx
from aq.usecases.spend import day_spend, queue_budget_crossed
from aq.worker.attempt import AttemptResult
from aq.worker.claims import Claimer
from aq.worker.context import Claim, Ended, WorkerContext
from aq.worker.courier import Courier
from aq.worker.keeper import Keeper
from aq.worker.pushes import BranchPushes


def usage_fields(result: AttemptResult) -> dict[str, object]:
    """What a `finished` (or `stale_result`) event says of the engine run: which engine and
    version, what it reported it used, and what it left running."""
    fields: dict[str, object] = {}
    if result.engine:
        fields["engine"] = result.engine
    if result.engine_version:
        fields["engine_version"] = result.engine_version
    if result.usage is not None:
        fields["usage"] = result.usage.to_event()
        if result.usage.session and result.cwd is not None:
            fields["session_where"] = f"{socket.gethostname()}:{result.cwd}"
    if result.session_usage is not None:
        fields["session_usage"] = result.session_usage.to_event()
    if result.leftovers:
        fields["leftovers_killed"] = result.leftovers
    return fields


@dataclass(frozen=True, slots=True)
class Recorded:
    """A result recorded: the next claim made in the same commit, if one was, and whether the
    remote has that commit (else a claim in it runs only once the remote shows it)."""

    taken: Claim | None
    confirmed: bool


class Recorder:
    def __init__(self, ctx: WorkerContext, keeper: Keeper, courier: Courier,
                 claimer: Claimer) -> None:
        self.ctx = ctx
        self.keeper = keeper
        self.courier = courier
        self.claimer = claimer
        self.pushes = BranchPushes(ctx)
        self._reasons: dict[str, str] = {}  # job id -> why it went where it did

    def finish(self, ended: Ended, may_claim: Callable[[], bool]) -> Recorded | None:
        """Record the attempt's result, and in the same commit claim the next job if the worker
        `may_claim` one. None if the result could not be recorded yet (it is tried again)."""
        ctx, claim = self.ctx, ended.claim
        if not self.pushes.work_is_pushed(claim, ended.result):
            return None  # the job waits in building (its lease renewed) until its branch lands
        record = functools.partial(self._record, ended)
        claim_next = may_claim()
        if claim_next:
            self.claimer.take_turn()
        started = ctx.monotonic()

        def change(tx: Tx) -> tuple[str | None, Claim | None]:
            moved = record(tx)
            taken = (self.claimer.claim(tx)
                     if claim_next and (tx.online or ctx.options.offline) else None)
            return moved, taken

        def replay(done: tuple[str | None, Claim | None]) -> Callable[[Tx], object]:
            taken = done[1]
            if taken is None:
                return record

            def again(tx: Tx) -> None:
                record(tx)
                self.claimer.replay_claim(taken, tx)

            return again

        message = f"aq: {claim.job.id} attempt {claim.attempt} {ended.result.outcome} by {ctx.worker_id}"
        try:
            synced = ctx.queue.transact_synced(
                change, message, replay=replay,
                describe=lambda done: message + (f"; claim {done[1].job.id}" if done[1] else ""))
        except (AqError, OSError) as err:  # the result stays listed and is tried again
            ctx.voice.say_once(f"{claim.job.id}: result not recorded yet "
                               f"({self.keeper.reason(err)}); trying again")
            return None
        moved, taken = synced.value
        if taken is not None and synced.confirmed:
            self.claimer.landed(started)
        self._recorded(ended, moved, unpushed=synced.unpushed)
        return Recorded(taken, synced.confirmed)

    def _recorded(self, ended: Ended, moved: str | None, *, unpushed: int) -> None:
        """After the commit: free the disk, and say where the job went. `unpushed`: work the
        remote has not taken yet after the commit (this result's, or earlier)."""
        ctx, claim, result = self.ctx, ended.claim, ended.result
        job_id = claim.job.id
        shutil.rmtree(ctx.queue.running_dir() / job_id, ignore_errors=True)
        if result.workspace is not None:  # the work is on the pushed branch: free the disk
            try:
                remove_workspace(result.workspace)
            except AqError as err:
                ctx.voice.say(f"{job_id}: worktree not removed ({err}); the next worker start "
                              "here cleans it")
        if unpushed:
            ctx.roster.hold_unlanded(claim.token)
            ctx.voice.unreachable("results are kept and sent when it answers")
        else:
            ctx.roster.landed()
        self.courier.moved(claim.job, claim.token)
        if moved is None:
            ctx.summary.stale.append(job_id)
            ctx.voice.say(f"{job_id}: result kept as stale_result (the job is no longer ours)")
        else:
            ctx.summary.finished[job_id] = moved
            why = self._reasons.pop(job_id, None)
            ctx.voice.say(f"{job_id}: {result.detail} -> {moved}"
                          + (f" ({why})" if why and result.outcome is not Outcome.OK else ""))

    def _record(self, ended: Ended, tx: Tx) -> str | None:
        """In the transaction: move the job (the stage it went to), or keep the result as stale
        (None) when the job is no longer ours."""
        claim, result = ended.claim, ended.result
        job_id, manifest = claim.job.id, claim.job.manifest
        assert manifest is not None
        now = self.ctx.now()
        stage, events = tx.stage_of(job_id), tx.events(job_id)
        state = fold(events)
        fenced = fence(stage, state, events, token=claim.token, outcome=result.outcome,
                       worker=self.ctx.worker_id)
        if fenced.standing is Standing.RECORDED:  # salvaged, or a push we could not confirm landed
            return str(stage)
        if fenced.standing is Standing.KEPT:  # a salvage of our commit kept it as stale already
            return None
        log_rel, log_lost = self.keeper.log(tx, job_id, claim.attempt, result)
        lost = {"log_not_kept": log_lost} if log_lost else {}  # the event says why, not the log
        if fenced.standing is Standing.FENCED:
            tx.append_event(job_id, stale_result(
                iso(now), self.ctx.worker_id, claim.attempt, claim.token, result.outcome, log_rel,
                **lost, **usage_fields(result), why=f"fenced: {fenced.where}"))
            return None
        fingerprint = (failure_fingerprint(result.outcome, result.tail)
                       if result.outcome not in (Outcome.OK, Outcome.INTERRUPTED,
                                                 Outcome.AWAITING_CHILDREN) else None)
        if fingerprint and manifest.retry and manifest.retry.escalate:
            # the same failure on the next engine up is what escalation is for, not 'stuck'
            fingerprint = f"{result.engine}:{fingerprint}"
        decision = self._decide(ended, fingerprint, state, now)
        kept: dict[str, object] = {"log": log_rel, **lost,
                                   "artifacts": self.keeper.artifacts(tx, job_id, claim.attempt,
                                                                      result, manifest)}
        tx.move(job_id, Stage.BUILDING, decision.to,
                self._finished_event(ended, decision, fingerprint, now, kept))
        if result.usage is not None:
            self._halt_if_over_budget(tx, now)
        self._reasons[job_id] = decision.reason  # for the line that says where the job went
        return str(decision.to)

    def _decide(self, ended: Ended, fingerprint: str | None, state: JobState,
                now: datetime) -> Decision:
        """Where the job goes (aq.core.decisions.decide), held back from autoship when files
        changed outside its allowed scope."""
        claim, result = ended.claim, ended.result
        manifest = claim.job.manifest
        assert manifest is not None
        config = self.ctx.queue.config
        decision = decide(
            result.outcome, verified=result.verified,
            review_policy=manifest.review_policy or "manual",
            retry=config.retry_rule(manifest), retries_used=state.retries_used,
            fingerprint=fingerprint, last_fingerprint=state.last_fingerprint,
            reclaims=state.reclaims, max_reclaims=config.max_reclaims, now=now,
            stop_reason=ended.stop_reason, graceful=ended.graceful,
            review_rounds=self._review_rounds(manifest, state),
        )
        # earlier attempts' count too, unless this one judged the job's whole branch against base
        outside = (set(result.out_of_scope) if result.scope_against_base
                   else {*state.out_of_scope, *result.out_of_scope})
        if outside and decision.action is Action.AUTOSHIP:  # a person looks first
            decision = Decision(Action.PASS, Stage.TESTING,
                                f"verify passed; not shipped by review-policy auto: "
                                f"{len(outside)} file(s) changed outside allowed-scope")
        return decision

    def _review_rounds(self, manifest: Manifest, state: JobState) -> tuple[int, int]:
        """(reviews that asked for changes, this one included; review.max_rounds)."""
        gate = self.ctx.queue.config.review_for(manifest)
        if gate is None:
            return (0, 0)
        return (1 + state.review_asks, gate.max_rounds)

    def _finished_event(self, ended: Ended, decision: Decision, fingerprint: str | None,
                        now: datetime, kept: dict[str, object]) -> Event:
        """The `finished` event of a result recorded; `kept` says where its log and artifacts are."""
        claim, result = ended.claim, ended.result
        return finished(
            iso(now), self.ctx.worker_id, decision.to, decision.action, claim.attempt,
            claim.token, result.outcome, exit_code=result.exit_code,
            verify_exit=result.verify_exit, detail=result.detail, why=decision.reason,
            not_before=iso(decision.not_before) if decision.not_before else None,
            backoff=(round((decision.not_before - now).total_seconds(), 3)
                     if decision.not_before else None),
            fingerprint=fingerprint, tail=result.tail or None, **kept,
            duration=round(result.duration, 3),
            reclaim=result.outcome is Outcome.INTERRUPTED,
            # a person stopped the worker: not counted toward max_reclaims (counts_as_reclaim)
            **({"graceful": True} if result.outcome is Outcome.INTERRUPTED and ended.graceful
               else {}),
            **usage_fields(result),
            **({"out_of_scope": list(result.out_of_scope)} if result.out_of_scope else {}),
            **({"scope": "branch"} if result.scope_against_base else {}),
            **({"branch": result.workspace.branch, "base": result.workspace.base,
                "head": result.head, "pushed": self.pushes.pushed(result)}
               if result.workspace else {}),
            # best of N: the winning sample's branch, pushed by it, is the job's from now on
            **({"branch": result.adopted.branch, "head": result.adopted.head, "pushed": True,
                "sample": result.adopted.sample} if result.adopted else {}),
        )

    def _halt_if_over_budget(self, tx: Tx, now: datetime) -> None:
        """aq.yaml `budget:` crossed by today's runs: halt the queue for a person to resume."""
        queue = self.ctx.queue
        config = queue.config
        if config.budget_usd_per_day is None and config.budget_tokens_per_day is None:
            return
        if queue.halted() is not None:
            return
        day = iso(now)[:10]
        usd, tokens = day_spend((job.state for job in queue.snapshot().jobs), day)
        why = queue_budget_crossed(config, usd, tokens, day)
        if why is not None:
            tx.write(queue.qdir / HALT_FILE, f"{why}\nby {self.ctx.worker_id} at {iso(now)}\n")
            self.ctx.voice.say(f"queue halted: {why}")
