"""The lifecycle: only the moves of DESIGN §3 exist."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aq.core.lifecycle import Action, Stage, allowed_actions, check_move
from aq.errors import ExitStatus, MoveRefused

# DESIGN §3, written out by hand: (stage, action) -> stage it leads to.
TABLE: dict[tuple[str, str], str] = {
    ("inbox", "claim"): "building",
    ("building", "submit"): "review",  # engine ok, no verify
    ("building", "pass"): "testing",  # engine ok, verify ok
    ("building", "autoship"): "shipped",  # verify ok, review-policy auto
    ("building", "retry"): "inbox",  # fail, retries left
    ("building", "dead"): "dead_letter",  # fail, none left, retry set
    ("building", "fail"): "failed",  # fail, no retry
    ("building", "reclaim"): "inbox",  # lease expired
    ("building", "await"): "inbox",  # engine ok, children not settled: waits for them
    ("review", "promote"): "testing",
    ("review", "ship"): "shipped",
    ("testing", "ship"): "shipped",
    ("review", "reject"): "failed",
    ("testing", "reject"): "failed",
    ("failed", "requeue"): "inbox",
    ("dead_letter", "requeue"): "inbox",
    ("inbox", "cancel"): "failed",
    ("building", "cancel"): "failed",
    ("review", "cancel"): "failed",
    ("testing", "cancel"): "failed",
}
# the moves a person may make from each stage, as a refusal lists them
HUMAN_MOVES: dict[str, list[str]] = {
    "inbox": ["cancel"],
    "building": ["cancel"],
    "review": ["promote", "ship", "reject", "cancel"],
    "testing": ["ship", "reject", "cancel"],
    "shipped": [],
    "failed": ["requeue"],
    "dead_letter": ["requeue"],
}
STAGE_NAMES = ["inbox", "building", "review", "testing", "shipped", "failed", "dead_letter"]
ACTION_NAMES = ["claim", "submit", "pass", "autoship", "retry", "dead", "fail", "reclaim",
                "await", "promote", "ship", "reject", "requeue", "cancel"]


def test_the_stages_and_actions_are_those_of_the_table() -> None:
    """The code knows exactly the stages and actions the hand-written table covers."""
    assert sorted(stage.value for stage in Stage) == sorted(STAGE_NAMES)
    assert sorted(action.value for action in Action) == sorted(ACTION_NAMES)


def _assert_move(job_id: str, stage: str, action: str) -> None:
    if (stage, action) in TABLE:
        assert check_move(job_id, Stage(stage), Action(action)) == Stage(TABLE[stage, action])
        return
    with pytest.raises(MoveRefused) as caught:
        check_move(job_id, Stage(stage), Action(action))
    message = str(caught.value)
    assert message.startswith(f"cannot {action} {job_id}: it is in {stage}; from {stage} a person may: ")
    allowed = message.rsplit(": ", 1)[1]
    assert allowed == (", ".join(HUMAN_MOVES[stage]) or "none (it is final)")
    assert caught.value.exit_status is ExitStatus.REFUSED


def test_every_stage_action_pair_follows_the_table() -> None:
    """Each of the 91 (stage, action) pairs is allowed exactly when DESIGN §3 lists it."""
    for stage, action in itertools.product(STAGE_NAMES, ACTION_NAMES):
        _assert_move("fix-login-3f2a", stage, action)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(STAGE_NAMES),
    st.sampled_from(ACTION_NAMES),
    st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True),
)
def test_check_move_succeeds_exactly_on_the_table(stage: str, action: str, job_id: str) -> None:
    """check_move succeeds exactly for the DESIGN §3 pairs; a refusal names the job, stage and allowed moves."""
    _assert_move(job_id, stage, action)


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_allowed_actions_are_the_human_moves(stage: str) -> None:
    """allowed_actions lists the moves a person may make from each stage."""
    assert [action.value for action in allowed_actions(Stage(stage))] == HUMAN_MOVES[stage]


def _target(stage: str, action: str) -> Stage | None:
    try:
        return check_move("j", Stage(stage), Action(action))
    except MoveRefused:
        return None


def test_nothing_reaches_shipped_but_ship_and_autoship() -> None:
    """Only `ship` (the human gate) and `autoship` (review-policy auto) lead to shipped."""
    into_shipped = {(stage, action) for stage, action in itertools.product(STAGE_NAMES, ACTION_NAMES)
                    if _target(stage, action) is Stage.SHIPPED}
    assert into_shipped == {("review", "ship"), ("testing", "ship"), ("building", "autoship")}
