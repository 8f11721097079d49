"""The agent review gate as an attempt meets it (aq.core.review): once the job's verify passed,
the review of this round is asked for (a child job), waited for like any child, and its
verdict read when it is settled."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from aq.core.children import UNSETTLED
from aq.core.lifecycle import Outcome, Stage
from aq.core.manifest import ReviewGate
from aq.core.review import Verdict, read_verdict, review_body, review_fields, reviewed_attempt
from aq.errors import AqError
from aq.infra import gitops
from aq.store.queue import Queue
from aq.worker.attemptlog import AttemptLog
from aq.worker.ending import Ending


@dataclass(frozen=True, slots=True)
class Reviewer:
    """What an attempt of a job with a review gate needs to ask for its review and read it."""

    queue_root: Path
    job_id: str
    task: str  # the job's body
    gate: ReviewGate
    round: int  # this attempt's round: the reviews that asked for changes so far, plus one
    work: int  # the attempt whose work is reviewed: this one, or the one a verify-only resumes
    who: str
    now: Callable[[], datetime]

    def judge(self, passed: Ending, log: AttemptLog, cwd: Path, *, branch: str | None = None
              ) -> Ending:
        """`passed` (the job's verify passed, or it has none) as the review gate lets it end:
        as it is when the review of this round approved; review_changes with the review as its
        tail when it asked for changes; review_failed when the review job ended without running
        to its end (a person then reviews the work); awaiting_children while it is asked for or
        runs.
        `branch`: the job's work, when it is not (yet) the branch the queue has for it."""
        verdict = self._verdict(cwd, branch)
        if verdict is None:
            log.note(f"review {self.round} of {self.gate.max_rounds} is asked for: it waits for it")
            return Ending(Outcome.AWAITING_CHILDREN,
                          f"{passed.detail}; waits for review {self.round}", exit_code=0,
                          verified=passed.verified, verify_exit=passed.verify_exit)
        if isinstance(verdict, str):
            log.note(f"review {self.round} failed: {verdict}; a person reviews the work instead")
            return Ending(Outcome.REVIEW_FAILED, f"{passed.detail}; review {self.round} failed: "
                          f"{verdict}", verified=passed.verified, exit_code=passed.exit_code,
                          verify_exit=passed.verify_exit)
        if verdict.approved:
            log.note(f"review {self.round} approved")
            return Ending(Outcome.OK, f"{passed.detail}; review {self.round} approved",
                          verified=passed.verified, exit_code=passed.exit_code,
                          verify_exit=passed.verify_exit)
        log.start_section()  # the review is this attempt's failure: the next prompt carries it
        log.note(f"review {self.round} asked for changes:")
        for line in verdict.text.splitlines():
            log.write(f"{line}\n".encode())
        return Ending(Outcome.REVIEW_CHANGES, f"review {self.round} asked for changes",
                      verified=passed.verified, exit_code=passed.exit_code,
                      verify_exit=passed.verify_exit)

    def _verdict(self, cwd: Path, branch: str | None) -> Verdict | str | None:
        """The verdict on this attempt's work once its review is settled; why there is none when
        the review job failed (its engine did, or it was canceled); None while it is asked for
        (made now if there is none, tried again next time if that fails) or runs."""
        queue = Queue(self.queue_root)
        found = [job for job in queue.snapshot().jobs
                 if reviewed_attempt(job.manifest, self.job_id) == self.work]
        if not found:
            from aq.usecases.children import spawn_child

            # the remote or the lock in the way: the job waits, and asks again when it is back
            with contextlib.suppress(AqError):
                spawn_child(queue, self.job_id, review_body(self.job_id, self.round, self.task,
                                                            self._diff(queue, cwd, branch)),
                            review_fields(self.job_id, self.work, self.round, self.gate),
                            now=self.now(), who=self.who, entropy=secrets.randbits(30),
                            source="the review", reserved=True)
            return None
        review = found[0]
        if review.stage in UNSETTLED:
            return None
        if review.stage in (Stage.FAILED, Stage.DEAD_LETTER):
            return f"its job {review.id} ended in {review.stage}"
        count = review.state.attempt_count
        kept = queue.logs_dir(review.id) / f"{count}.log"
        try:
            text = kept.read_text(errors="replace") if count else ""
        except OSError:
            text = ""
        return read_verdict(text)

    def _diff(self, queue: Queue, cwd: Path, branch: str | None) -> str:
        """The job's change: its branch against base for a job with a repo; else what is not
        committed in its cwd, if that is a git work tree."""
        from aq.usecases.ship import job_diff

        try:
            return job_diff(queue, self.job_id, branch=branch).patch
        except AqError:
            pass
        done = gitops.git(cwd, "diff", "HEAD", check=False)
        if done.returncode != 0:
            return f"(the job works in {cwd}, which is no git work tree: no diff to show)"
        return done.stdout or "(no change in its working folder)"
