"""Waiting for an attempt's branch to reach the repo's remote: a job whose attempt succeeded
leaves building only once its branch holds the work there. Its push is tried again (at most
every poll interval) while the job waits in building, its lease renewed."""

from __future__ import annotations

from aq.core.events import iso, note
from aq.core.lifecycle import Outcome
from aq.errors import AqError
from aq.infra.repos import push_branch
from aq.store.tx import Tx
from aq.worker.attempt import AttemptResult
from aq.worker.context import Claim, WorkerContext


class BranchPushes:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self._heads_pushed: set[str] = set()  # job branch commits pushed after their attempt
        self._retry_at: dict[str, float] = {}  # lease token -> when to push its branch again
        self._noted: set[str] = set()  # lease tokens whose wait for a push is in the log

    def pushed(self, result: AttemptResult) -> bool:
        return result.pushed or result.head in self._heads_pushed

    def work_is_pushed(self, claim: Claim, result: AttemptResult) -> bool:
        """Whether the job may leave building: its branch holds the work on the repo's remote
        (or it has no branch). If not, push it again now if the attempt's own push failed (at
        most every poll interval), and say why the job waits, once, in its event log."""
        ctx = self.ctx
        workspace, job_id = result.workspace, claim.job.id
        if workspace is None or result.head is None or self.pushed(result):
            return True
        now = ctx.monotonic()
        if now < self._retry_at.get(claim.token, 0.0):
            return False
        self._retry_at[claim.token] = now + min(ctx.options.poll, 10.0)

        reason = "origin's branch has commits this attempt lacks"
        try:
            if push_branch(workspace):
                self._heads_pushed.add(result.head)
                self._retry_at.pop(claim.token, None)
                return True
        except AqError as err:
            reason = str(err)
            ctx.voice.say(f"{job_id}: {err}")
        if result.outcome is not Outcome.OK:
            return True  # a failure moves on; its work stays on the local branch and is rescued
        ctx.voice.unreachable(f"{job_id}'s branch {workspace.branch} is not pushed yet: the job "
                              "stays in building until it is")
        self._note_waiting(claim, workspace.branch, reason)
        return False

    def _note_waiting(self, claim: Claim, branch: str, reason: str) -> None:
        """The job's state says why it stays in building: one note event per attempt."""
        ctx = self.ctx
        if claim.token in self._noted:
            return
        event = note(iso(ctx.now()), ctx.worker_id, claim.token, attempt=claim.attempt,
                     waiting="branch_push",
                     why=f"waiting for branch {branch} to reach the repo's remote ({reason}); "
                         "the job stays in building, its lease renewed, until the push succeeds")
        try:
            def write(tx: Tx) -> None:
                tx.append_event(claim.job.id, event)

            ctx.queue.transact(write, f"aq: {claim.job.id} waits for its branch push",
                               replay=lambda _: write)
            self._noted.add(claim.token)
        except AqError as err:
            ctx.voice.say(f"{claim.job.id}: could not note the wait ({err})")
