"""Best of N (`samples: N`): a job's work done as N independent attempts, each a child job of
its own (a sample) on whichever worker takes it, in its own worktree. The first sample whose
verify passes wins: its branch becomes the job's and the other samples are canceled. When
every sample of a round fails, the job's attempt fails once, with each sample's tail.

A sample is marked by its idempotency key, `sample:<job>:<the job's attempt that asked for
it>:<its number>`, and by `parent: <job>`: both must say so (as for a review, core.review).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aq.core.lifecycle import Outcome, Stage

SAMPLE_KEY = "sample:"
WON = Stage.SHIPPED  # a sample that passed its verify ships itself (review-policy: auto)
TAIL_EACH = 1200  # of each failed sample's tail, in the job's own failure
# what a sample does not take from its job: what makes the job a parent of samples, what
# belongs to the job alone (its tracker item, its human gate, its retries, its reviews)
NOT_COPIED = frozenset({"title", "samples", "engines", "children", "review", "review-policy",
                        "retry", "retry-from", "deps", "idempotency-key", "tracker-item",
                        "ship", "parent", "engine", "engine-class"})


def sample_key(job_id: str, attempt: int, number: int) -> str:
    return f"{SAMPLE_KEY}{job_id}:{attempt}:{number}"


def sample_of(parent: str | None, key: str | None, job_id: str) -> tuple[int, int] | None:
    """(the attempt of `job_id` that asked for it, its number) of a sample of `job_id`, given
    a job's `parent:` and idempotency key; None: it is no sample of that job."""
    prefix = f"{SAMPLE_KEY}{job_id}:"
    if parent != job_id or not key or not key.startswith(prefix):
        return None
    attempt, _, number = key[len(prefix):].partition(":")
    if not attempt.isdigit() or not number.isdigit():
        return None
    return int(attempt), int(number)


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample as the queue has it."""

    id: str
    number: int
    stage: Stage
    finished: str | None  # when its last attempt ended (ISO), for which passed first
    outcome: str | None  # its last attempt's outcome
    tail: str | None  # its last failure's tail
    engine: str | None
    branch: str | None  # its branch, once an attempt pushed one
    head: str | None


@dataclass(frozen=True, slots=True)
class Round:
    """The samples one attempt of the job asked for, as they stand."""

    wanted: int
    samples: tuple[Sample, ...]  # by number

    @property
    def missing(self) -> tuple[int, ...]:
        """The numbers of the samples not made yet (a spawn that failed or was cut short)."""
        made = {sample.number for sample in self.samples}
        return tuple(number for number in range(1, self.wanted + 1) if number not in made)

    @property
    def winner(self) -> Sample | None:
        """The first sample (by when its attempt ended, then number) whose verify passed."""
        passed = [sample for sample in self.samples if sample.stage is WON]
        return min(passed, key=lambda sample: (sample.finished or "", sample.number), default=None)

    @property
    def unsettled(self) -> tuple[Sample, ...]:
        return tuple(sample for sample in self.samples
                     if sample.stage in (Stage.INBOX, Stage.BUILDING))

    @property
    def all_failed(self) -> bool:
        return not self.missing and not self.unsettled and self.winner is None

    def failure(self) -> tuple[Outcome, str]:
        """The job's outcome when every sample failed, and its tail: each sample's, in turn."""
        outcomes = {sample.outcome for sample in self.samples}
        if Outcome.VERIFY_FAILED in outcomes:
            outcome = Outcome.VERIFY_FAILED
        elif outcomes == {Outcome.TIMEOUT}:
            outcome = Outcome.TIMEOUT
        else:
            outcome = Outcome.ENGINE_FAILED
        parts = []
        for sample in self.samples:
            said = (sample.tail or "").strip()[-TAIL_EACH:] or f"(it ended in {sample.stage})"
            parts.append(f"## sample {sample.number} ({sample.id}, engine "
                         f"{sample.engine or '?'}): {sample.outcome or sample.stage}\n{said}")
        return outcome, "\n\n".join(parts)


def sample_fields(frontmatter: Mapping[str, Any], *, job_id: str, title: str, attempt: int,
                  number: int, wanted: int, engine: str) -> dict[str, Any]:
    """A sample's frontmatter: its job's, less what belongs to the job alone, as a child of
    the job on `engine`, with no retry of its own (the job's retry is a new round) and shipped
    as soon as its verify passes (that is how it wins: the job, not the sample, meets the
    human gate)."""
    fields = {key: value for key, value in frontmatter.items() if key not in NOT_COPIED}
    fields.update({"title": f"sample {number} of {wanted} of {job_id}: {title}"[:200],
                   "parent": job_id, "idempotency-key": sample_key(job_id, attempt, number),
                   "engine": engine, "retry": 0, "review-policy": "auto"})
    return fields


def sample_body(body: str, previous_failure: str | None) -> str:
    """A sample's task: its job's, and (a new round after one where every sample failed) what
    went wrong then."""
    if not previous_failure:
        return body
    return (f"{body.rstrip()}\n\n---\n\nAn earlier attempt at this task failed. The end of its "
            f"output:\n\n```\n{previous_failure.strip()}\n```\n\nFix the cause of that failure.\n")


def engine_of_sample(engines: tuple[str, ...], default: str, number: int) -> str:
    """The engines taken in turn (sample 1 on the first); the job's own engine without them."""
    return engines[(number - 1) % len(engines)] if engines else default
