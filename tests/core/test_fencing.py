"""Fencing a result (DESIGN §5): one rule for a worker recording its own result and for a
salvage of a dead worker's commit, pinned here without any I/O."""

from __future__ import annotations

from aq.core.events import Event, claimed, finished, fold, moved, stale_result
from aq.core.fencing import Fence, Standing, fence
from aq.core.lifecycle import Action, Stage

TS = "2024-05-01T10:00:00.000000Z"


def _claim(token: str, by: str = "w1", attempt: int = 1) -> Event:
    return claimed(TS, by, attempt, token, host="h", pid=1)


def _fence(stage: Stage | None, events: list[Event], token: str = "1.w1.aa",
           outcome: str = "ok", worker: str = "w1") -> Fence:
    return fence(stage, fold(events), events, token=token, outcome=outcome, worker=worker)


def test_a_result_under_its_own_lease_in_building_is_current() -> None:
    """The job is in building under the token the attempt claimed it with: the result moves it."""
    assert _fence(Stage.BUILDING, [_claim("1.w1.aa")]) == Fence(Standing.CURRENT)


def test_the_same_result_recorded_already_is_not_recorded_again() -> None:
    """A push that was not confirmed but landed (or a salvage) recorded this very result: by
    its worker, under its token, with its outcome. Recording it again would move the job twice."""
    events = [_claim("1.w1.aa"), finished(TS, "w1", Stage.REVIEW, "pass", 1, "1.w1.aa", "ok")]
    assert _fence(Stage.REVIEW, events) == Fence(Standing.RECORDED)


def test_a_lease_taken_back_has_another_outcome_so_the_result_is_fenced() -> None:
    """A reclaim ends the attempt as lease_expired: the worker's own result (ok) is not that
    one, so it is fenced and kept, not taken for recorded."""
    events = [_claim("1.w1.aa"),
              finished(TS, "w2", Stage.INBOX, "reclaim", 1, "1.w1.aa", "lease_expired")]
    assert _fence(Stage.INBOX, events) == Fence(
        Standing.FENCED, "the job is in inbox under another lease")


def test_a_job_out_of_building_under_the_same_lease_is_fenced_where_it_is() -> None:
    """The job's file left building with no event ending the lease (moved by hand): the token
    is still the job's, so the why names only the stage."""
    assert _fence(Stage.REVIEW, [_claim("1.w1.aa")]) == Fence(
        Standing.FENCED, "the job is in review")


def test_a_job_claimed_again_by_another_fences_the_result_under_another_lease() -> None:
    """The job is in building again, but under a newer token: the old result moves nothing."""
    events = [_claim("1.w1.aa"),
              finished(TS, "w2", Stage.INBOX, "reclaim", 1, "1.w1.aa", "lease_expired"),
              _claim("2.w2.bb", by="w2", attempt=2)]
    assert _fence(Stage.BUILDING, events) == Fence(
        Standing.FENCED, "the job is in building under another lease")


def test_a_job_canceled_while_it_ran_is_fenced_and_its_lease_is_gone() -> None:
    """A person canceled the job while it ran: it is in failed, and the cancel ended the lease."""
    events = [_claim("1.w1.aa"),
              moved(TS, "me@h", Stage.BUILDING, Stage.FAILED, Action.CANCEL, "canceled")]
    assert _fence(Stage.FAILED, events) == Fence(
        Standing.FENCED, "the job is in failed under another lease")


def test_a_job_in_no_stage_is_fenced_and_said_so() -> None:
    """A job whose file is gone: its result is fenced, 'in no stage'."""
    assert _fence(None, [_claim("1.w1.aa")]) == Fence(Standing.FENCED, "the job is in no stage")


def test_a_job_in_no_stage_is_never_taken_for_recorded() -> None:
    """With no stage, even a matching attempt does not count as recorded (there is nowhere the
    result went); it is fenced like any other."""
    events = [_claim("1.w1.aa"), finished(TS, "w1", Stage.REVIEW, "pass", 1, "1.w1.aa", "ok")]
    assert _fence(None, events).standing is Standing.FENCED


def test_a_fenced_result_kept_as_stale_already_is_kept_once() -> None:
    """A stale_result of this token is there already (its worker's, or a salvage's): nothing
    more is written for it."""
    events = [_claim("1.w1.aa"),
              finished(TS, "w2", Stage.INBOX, "reclaim", 1, "1.w1.aa", "lease_expired"),
              stale_result(TS, "w1", 1, "1.w1.aa", "ok", None, why="fenced")]
    assert _fence(Stage.INBOX, events) == Fence(Standing.KEPT)


def test_a_stale_result_of_another_token_does_not_count() -> None:
    """Only a stale_result of the same lease token means this result is kept already."""
    events = [_claim("1.w1.aa"),
              finished(TS, "w2", Stage.INBOX, "reclaim", 1, "1.w1.aa", "lease_expired"),
              stale_result(TS, "w3", 1, "1.w3.cc", "ok", None, why="fenced")]
    assert _fence(Stage.INBOX, events).standing is Standing.FENCED


def test_a_result_of_another_worker_under_the_same_token_is_not_taken_for_recorded() -> None:
    """Recorded means this worker's result: the same token and outcome by another is not it."""
    events = [_claim("1.w1.aa"), finished(TS, "w1", Stage.REVIEW, "pass", 1, "1.w1.aa", "ok")]
    assert _fence(Stage.REVIEW, events, worker="w9").standing is Standing.FENCED
