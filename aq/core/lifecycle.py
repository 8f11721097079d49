"""Stages, the moves between them (DESIGN §3), and the outcomes an attempt can have. Where
an outcome sends a job is aq.core.decisions'.

Only the moves in `MOVES` exist; any other is refused naming the stage and the moves it allows.
"""

from __future__ import annotations

from enum import StrEnum

from aq.errors import MoveRefused


class Stage(StrEnum):
    INBOX = "inbox"
    BUILDING = "building"
    REVIEW = "review"
    TESTING = "testing"
    SHIPPED = "shipped"
    FAILED = "failed"
    DEAD_LETTER = "dead_letter"


STAGES = tuple(Stage)
DONE_FOR_DEPS = frozenset({Stage.TESTING, Stage.SHIPPED})


class Action(StrEnum):
    # moves a worker makes
    CLAIM = "claim"
    SUBMIT = "submit"  # engine ok, no verify: a person reviews
    PASS = "pass"  # engine ok, verify ok
    AUTOSHIP = "autoship"  # verify ok and review-policy auto
    RETRY = "retry"
    DEAD = "dead"
    FAIL = "fail"
    RECLAIM = "reclaim"  # not the job's fault: lease expired, worker interrupted
    AWAIT = "await"  # engine ok, but children still in the workers' hands: back to wait for them
    # moves a person makes
    PROMOTE = "promote"
    SHIP = "ship"
    REJECT = "reject"
    REQUEUE = "requeue"
    CANCEL = "cancel"


_UNFINISHED = frozenset({Stage.INBOX, Stage.BUILDING, Stage.REVIEW, Stage.TESTING})
MOVES: dict[Action, tuple[frozenset[Stage], Stage]] = {
    Action.CLAIM: (frozenset({Stage.INBOX}), Stage.BUILDING),
    Action.SUBMIT: (frozenset({Stage.BUILDING}), Stage.REVIEW),
    Action.PASS: (frozenset({Stage.BUILDING}), Stage.TESTING),
    Action.AUTOSHIP: (frozenset({Stage.BUILDING}), Stage.SHIPPED),
    Action.RETRY: (frozenset({Stage.BUILDING}), Stage.INBOX),
    Action.DEAD: (frozenset({Stage.BUILDING}), Stage.DEAD_LETTER),
    Action.FAIL: (frozenset({Stage.BUILDING}), Stage.FAILED),
    Action.RECLAIM: (frozenset({Stage.BUILDING}), Stage.INBOX),
    Action.AWAIT: (frozenset({Stage.BUILDING}), Stage.INBOX),
    Action.PROMOTE: (frozenset({Stage.REVIEW}), Stage.TESTING),
    Action.SHIP: (frozenset({Stage.REVIEW, Stage.TESTING}), Stage.SHIPPED),
    Action.REJECT: (frozenset({Stage.REVIEW, Stage.TESTING}), Stage.FAILED),
    Action.REQUEUE: (frozenset({Stage.FAILED, Stage.DEAD_LETTER}), Stage.INBOX),
    Action.CANCEL: (_UNFINISHED, Stage.FAILED),
}
HUMAN_ACTIONS = (Action.PROMOTE, Action.SHIP, Action.REJECT, Action.REQUEUE, Action.CANCEL)


def allowed_actions(stage: Stage) -> tuple[Action, ...]:
    """The moves a person may make on a job in `stage`."""
    return tuple(action for action in HUMAN_ACTIONS if stage in MOVES[action][0])


def check_move(job_id: str, stage: Stage, action: Action) -> Stage:
    """The stage `action` takes a job in `stage` to, or MoveRefused saying what is allowed."""
    sources, target = MOVES[action]
    if stage in sources:
        return target
    allowed = ", ".join(allowed_actions(stage)) or "none (it is final)"
    raise MoveRefused(f"cannot {action} {job_id}: it is in {stage}; from {stage} a person may: {allowed}")


# --- what an attempt can end in ------------------------------------------------------------


class Outcome(StrEnum):
    OK = "ok"
    TIMEOUT = "timeout"
    VERIFY_FAILED = "verify_failed"
    ENGINE_FAILED = "engine_failed"
    ENGINE_MISSING = "engine_missing"
    BUDGET_EXHAUSTED = "budget_exhausted"  # budget.wall used up
    BUDGET_EXCEEDED = "budget_exceeded"  # budget.usd or budget.tokens crossed
    INTERRUPTED = "interrupted"  # the worker was stopped (Ctrl-C, TERM): not the job's fault
    AWAITING_CHILDREN = "awaiting_children"  # engine ok; some children not settled yet
    REVIEW_CHANGES = "review_changes"  # verify passed; the review gate's reviewer asked for changes
    REVIEW_FAILED = "review_failed"  # verify passed; its review job ended without a verdict


NEVER_RETRIED = frozenset({Outcome.BUDGET_EXHAUSTED, Outcome.BUDGET_EXCEEDED})


# A person's reason for a move or a halt: kept in an event log (and a commit message), so a
# paragraph at most; a log pasted in its place would weigh on every read of the job.
MAX_REASON = 2000


def reason_problem(reason: str) -> str | None:
    """Why `reason` cannot be kept, or None."""
    if len(reason) > MAX_REASON:
        return (f"the reason is {len(reason):,} characters, over the {MAX_REASON:,} one may be: "
                "say it in a few lines (put a long account in a file of the repository)")
    if "\0" in reason:
        return "the reason holds a NUL byte: write it as text"
    return None
