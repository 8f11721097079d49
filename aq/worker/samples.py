"""Best of N as an attempt meets it (aq.core.samples): the job's attempt asks for its samples
(child jobs) and waits; once one of them passed, an attempt adopts its branch and cancels the
others; when every one failed, the attempt fails with all their tails."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from aq.core.lifecycle import Action, Outcome, Stage
from aq.core.manifest import Manifest, split_frontmatter
from aq.core.samples import Round, Sample, engine_of_sample, sample_body, sample_fields, sample_of
from aq.errors import AqError
from aq.store.queue import Queue
from aq.worker.attemptlog import AttemptLog
from aq.worker.ending import Ending


@dataclass(frozen=True, slots=True)
class Adopted:
    """The winning sample's work, which becomes the job's."""

    sample: str
    branch: str
    head: str | None


@dataclass(frozen=True, slots=True)
class Sampler:
    """What an attempt of a job with `samples:` needs to ask for its samples and judge them."""

    queue_root: Path
    job_id: str
    manifest: Manifest  # as this attempt runs it: its profile applied
    engine: str  # the job's engine on this attempt (the samples' unless `engines:` says)
    work: int  # the attempt whose samples these are: this one, or the one a verify-only resumes
    previous_failure: str | None  # the last round's failure, for a new round's samples
    who: str
    now: Callable[[], datetime]

    def run(self, log: AttemptLog, *, repo: str | None) -> tuple[Ending, Adopted | None]:
        """How the attempt ends: ok with the winner's work adopted; failed with every sample's
        tail; else waiting for its samples (asked for now if they are not all there)."""
        wanted = self.manifest.samples
        if not repo or not self.manifest.verify:
            need = "a repo (repo: in the job, its profile or aq.yaml)" if not repo else "a verify"
            return Ending(Outcome.ENGINE_FAILED, f"samples: needs {need}: each sample works on a "
                          "branch of its own, and the first whose verify passes wins"), None
        queue = Queue(self.queue_root)
        round_ = self.round(queue)
        winner = round_.winner
        if winner is not None:
            return self._adopt(queue, round_, winner, log)
        if round_.all_failed:
            outcome, tail = round_.failure()
            log.start_section()  # every sample's tail is this attempt's failure
            log.note(f"all {wanted} samples failed:")
            for line in tail.splitlines():
                log.write(f"{line}\n".encode())
            return Ending(Outcome(outcome), f"all {wanted} samples failed"), None
        if round_.missing:
            self._spawn(queue, round_.missing, log)
        settled = len(round_.samples) - len(round_.unsettled)
        log.note(f"it waits for its samples: {settled} of {wanted} settled, none passed yet")
        return Ending(Outcome.AWAITING_CHILDREN, f"waits for its {wanted} samples: {settled} "
                      "settled, none passed yet", exit_code=0), None

    def round(self, queue: Queue) -> Round:
        """The samples of this attempt's round, as this clone has them now."""
        found = []
        for job in queue.snapshot().jobs:
            manifest = job.manifest
            asked = (sample_of(manifest.parent, manifest.idempotency_key, self.job_id)
                     if manifest else None)
            if asked is None or asked[0] != self.work:
                continue
            last = job.state.attempts[-1] if job.state.attempts else None
            found.append(Sample(
                id=job.id, number=asked[1], stage=job.stage,
                finished=last.finished if last else None, outcome=last.outcome if last else None,
                tail=job.state.last_failure_tail, engine=manifest.engine if manifest else None,
                branch=job.state.branch, head=job.state.branch_head))
        return Round(self.manifest.samples, tuple(sorted(found, key=lambda sample: sample.number)))

    def _adopt(self, queue: Queue, round_: Round, winner: Sample, log: AttemptLog
               ) -> tuple[Ending, Adopted | None]:
        """The winner's branch becomes the job's; the samples still running are canceled."""
        from aq.usecases.moves import move_job

        if winner.branch is None:  # a sample on a repo always pushes its branch before it passes
            return Ending(Outcome.ENGINE_FAILED, f"sample {winner.id} passed but left no branch"), None
        for loser in round_.unsettled:
            with contextlib.suppress(AqError):  # moved on meanwhile: it is settled anyway
                move_job(queue, loser.id, Action.CANCEL, who=self.who, now=self.now(),
                         env=os.environ, reason=f"sample {winner.number} ({winner.id}) of "
                         f"{self.job_id} passed first")
                log.note(f"sample {loser.number} ({loser.id}) canceled: it lost")
        log.note(f"sample {winner.number} of {len(round_.samples)} ({winner.id}, engine "
                 f"{winner.engine}) passed first: its branch {winner.branch} is the job's")
        return (Ending(Outcome.OK, f"sample {winner.number} ({winner.id}, {winner.engine}) "
                       "passed first", verified=True, exit_code=0, verify_exit=0),
                Adopted(winner.id, winner.branch, winner.head))

    def _spawn(self, queue: Queue, numbers: tuple[int, ...], log: AttemptLog) -> None:
        """The samples not made yet, each a child of the job. One that cannot be made now (the
        lock or the remote in the way) is asked for again by the next attempt."""
        from aq.usecases.children import spawn_child

        try:
            text = queue.job_path(Stage.BUILDING, self.job_id).read_text(encoding="utf-8")
            front, _ = split_frontmatter(text, self.job_id)
        except (OSError, UnicodeDecodeError, AqError) as err:
            log.note(f"cannot read the job's own file to make its samples: {err}")
            return
        frontmatter = {str(key): value for key, value in front.items()}
        body = sample_body(self.manifest.body, self.previous_failure)
        for number in numbers:
            engine = engine_of_sample(self.manifest.engines, self.engine, number)
            fields = sample_fields(frontmatter, job_id=self.job_id, title=self.manifest.title,
                                   attempt=self.work, number=number,
                                   wanted=self.manifest.samples, engine=engine)
            try:
                made = spawn_child(queue, self.job_id, body, fields, now=self.now(), who=self.who,
                                   entropy=secrets.randbits(30), source=f"sample {number}",
                                   reserved=True)
            except AqError as err:
                log.note(f"sample {number} not made yet ({err}): asked for again next time")
                continue
            log.note(f"sample {number} of {self.manifest.samples} on {engine}: {made.job.id}")
