"""Where a job goes after an attempt, or when it is taken back from its worker (DESIGN §3):
a retry with its backoff, failed, dead_letter, or on to review, testing or shipped.

Only a worker recording a result needs this; listings and moves read the stages alone
(aq.core.lifecycle).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from aq.core.durations import MAX_DURATION, format_duration
from aq.core.lifecycle import NEVER_RETRIED, Action, Outcome, Stage


@dataclass(frozen=True, slots=True)
class RetryRule:
    """A job's retry policy with aq.yaml's defaults filled in. `max == 0` means retry is not set."""

    max: int
    backoff: float
    on: frozenset[str]


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    to: Stage
    reason: str
    not_before: datetime | None = None


def decide(
    outcome: Outcome,
    *,
    verified: bool | None,
    review_policy: str,
    retry: RetryRule,
    retries_used: int,
    fingerprint: str | None,
    last_fingerprint: str | None,
    reclaims: int,
    max_reclaims: int,
    now: datetime,
    stop_reason: str | None = None,
    graceful: bool = False,
    review_rounds: tuple[int, int] = (0, 0),
) -> Decision:
    """Where a job goes after an attempt (DESIGN §3). `verified` is None when the job has no
    verify; `stop_reason` says why an interrupted attempt was stopped; `graceful`: a person
    stopped the worker (TERM, Ctrl-C), which no job causes, so it does not count as a reclaim.
    `review_rounds`: (reviews that asked for changes, this one included; review.max_rounds)."""
    if outcome is Outcome.OK:
        if verified is None:
            return Decision(Action.SUBMIT, Stage.REVIEW, "engine ok, no verify: waiting for review")
        if review_policy == "auto":
            return Decision(Action.AUTOSHIP, Stage.SHIPPED, "verify passed and review-policy is auto")
        return Decision(Action.PASS, Stage.TESTING, "verify passed")
    if outcome is Outcome.REVIEW_CHANGES:  # (rounds that asked for changes, this one included; max)
        asked, most = review_rounds
        if asked >= most:
            return Decision(Action.DEAD, Stage.DEAD_LETTER,
                            f"the review asked for changes {asked} time(s), review.max_rounds")
        return Decision(Action.RETRY, Stage.INBOX,
                        f"review round {asked} of {most} asked for changes", not_before=now)
    if outcome is Outcome.REVIEW_FAILED:  # the reviewer's trouble is no verdict on the work
        return Decision(Action.SUBMIT, Stage.REVIEW,
                        "verify passed but its agent review failed: waiting for a person's review")
    if outcome is Outcome.AWAITING_CHILDREN:
        return Decision(Action.AWAIT, Stage.INBOX,
                        "engine ok; it waits for its children, then its verify runs")
    if outcome is Outcome.INTERRUPTED:
        return reclaim_decision("interrupted", stop_reason or "the worker stopped while running it",
                                reclaims, max_reclaims, counted=not graceful)
    if outcome in NEVER_RETRIED:  # spending more on the job is a person's call
        return Decision(Action.FAIL, Stage.FAILED, f"{outcome}: never retried automatically")
    if retry.max == 0:
        return Decision(Action.FAIL, Stage.FAILED, f"{outcome} and no retry is set")
    if outcome not in retry.on:
        return Decision(Action.FAIL, Stage.FAILED, f"{outcome} is not in retry.on ({', '.join(sorted(retry.on))})")
    if fingerprint is not None and fingerprint == last_fingerprint:
        return Decision(Action.DEAD, Stage.DEAD_LETTER, "stuck: the same failure twice in a row")
    if retries_used >= retry.max:
        return Decision(Action.DEAD, Stage.DEAD_LETTER, f"{outcome}; all {retry.max} retries used")
    # doubled each time, up to the longest duration aq takes: a later date overflows
    wait = min(retry.backoff * 2.0 ** min(retries_used, 64), MAX_DURATION)
    return Decision(
        Action.RETRY, Stage.INBOX,
        f"{outcome}; retry {retries_used + 1} of {retry.max} in {format_duration(wait)}",
        not_before=now + timedelta(seconds=wait),
    )


def reclaim_decision(code: str, cause: str, reclaims: int, max_reclaims: int, *,
                     counted: bool = True) -> Decision:
    """A job taken back from its worker: not its fault, so no retry is used. A take-back that
    counts (its holder vanished: a job that kills its machine looks like that) sends it to
    dead_letter the `max_reclaims`-th time; one that does not (`counted` False: a graceful
    stop) always sends it back to the inbox."""
    if not counted:
        return Decision(Action.RECLAIM, Stage.INBOX,
                        f"{code}: {cause}; a graceful stop: not counted as a retry or a reclaim")
    if reclaims + 1 >= max_reclaims:
        return Decision(Action.DEAD, Stage.DEAD_LETTER,
                        f"{code}: {cause}; taken back {reclaims + 1} times (max_reclaims {max_reclaims})")
    return Decision(Action.RECLAIM, Stage.INBOX, f"{code}: {cause}; not counted as a retry")


_VOLATILE = re.compile(r"0x[0-9a-f]+|\b(?=[0-9a-f]*\d)[0-9a-f]{7,}\b|\d+(\.\d+)?", re.I)


def failure_fingerprint(outcome: Outcome, tail: str) -> str:
    """Equal for two failures that differ only in numbers, hashes, times and addresses."""
    import hashlib

    lines = [line.strip() for line in tail.splitlines() if line.strip()][-20:]
    normalized = _VOLATILE.sub("#", "\n".join(lines))
    return hashlib.sha256(f"{outcome}\n{normalized}".encode()).hexdigest()[:16]
