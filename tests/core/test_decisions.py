"""Where an attempt's outcome, or a take-back, sends a job (DESIGN §3)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aq.core.decisions import Decision, RetryRule, decide, failure_fingerprint, reclaim_decision
from aq.core.durations import MAX_DURATION
from aq.core.lifecycle import Action, Outcome, Stage
from tests.helpers.queue import T0

NO_RETRY = RetryRule(max=0, backoff=300.0, on=frozenset({"timeout", "verify_failed", "engine_failed"}))
RETRY_2 = RetryRule(max=2, backoff=300.0, on=frozenset({"timeout", "verify_failed", "engine_failed"}))


def decide_after(outcome: Outcome, **overrides: object) -> Decision:
    arguments: dict[str, object] = {
        "verified": None, "review_policy": "manual", "retry": RETRY_2, "retries_used": 0,
        "fingerprint": None, "last_fingerprint": None, "reclaims": 0, "max_reclaims": 3, "now": T0,
    }
    arguments.update(overrides)
    return decide(outcome, **arguments)  # type: ignore[arg-type]


def test_engine_ok_without_verify_goes_to_review() -> None:
    """Engine ok and no verify: the job waits in review for a person."""
    decision = decide_after(Outcome.OK, verified=None)
    assert (decision.action, decision.to, decision.not_before) == (Action.SUBMIT, Stage.REVIEW, None)


def test_verify_ok_goes_to_testing() -> None:
    """Engine ok and verify ok under the manual review policy: the job goes to testing."""
    decision = decide_after(Outcome.OK, verified=True, review_policy="manual")
    assert (decision.action, decision.to) == (Action.PASS, Stage.TESTING)


def test_verify_ok_with_auto_review_ships() -> None:
    """Engine ok and verify ok under review-policy auto: the job ships."""
    decision = decide_after(Outcome.OK, verified=True, review_policy="auto")
    assert (decision.action, decision.to) == (Action.AUTOSHIP, Stage.SHIPPED)


def test_auto_review_without_verify_still_waits_for_review() -> None:
    """review-policy auto ships only on a verify pass: with no verify the job goes to review."""
    decision = decide_after(Outcome.OK, verified=None, review_policy="auto")
    assert decision.to is Stage.REVIEW


@pytest.mark.parametrize("used", [0, 1])
def test_failure_with_retries_left_goes_back_with_backoff(used: int) -> None:
    """A failure with retries left goes to the inbox, not before now + backoff·2^k."""
    decision = decide_after(Outcome.VERIFY_FAILED, retries_used=used)
    assert (decision.action, decision.to) == (Action.RETRY, Stage.INBOX)
    assert decision.not_before == T0 + timedelta(seconds=300 * 2**used)
    assert f"retry {used + 1} of 2" in decision.reason


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10), st.data(), st.floats(1, 3600, allow_nan=False), st.sampled_from(
    [Outcome.TIMEOUT, Outcome.VERIFY_FAILED, Outcome.ENGINE_FAILED]))
def test_backoff_doubles_with_each_retry(maximum: int, data: st.DataObject, backoff: float, outcome: Outcome) -> None:
    """The k-th retry (k from 0) waits backoff·2^k; once max retries are used the job is dead-lettered."""
    used = data.draw(st.integers(0, maximum))
    rule = RetryRule(max=maximum, backoff=backoff, on=frozenset({"timeout", "verify_failed", "engine_failed"}))
    decision = decide_after(outcome, retry=rule, retries_used=used)
    if used < maximum:
        assert decision.to is Stage.INBOX
        assert decision.not_before == T0 + timedelta(seconds=backoff * 2**used)
    else:
        assert (decision.action, decision.to, decision.not_before) == (Action.DEAD, Stage.DEAD_LETTER, None)


@pytest.mark.parametrize("used", [7, 40, 2000])
def test_a_doubled_backoff_stops_at_a_century(used: int) -> None:
    """A long backoff doubled many times once made a date past the year 9999: the worker failed
    recording the result, and the job was run again and again until dead-lettered."""
    rule = RetryRule(max=10_000, backoff=MAX_DURATION / 2, on=frozenset({"verify_failed"}))
    decision = decide_after(Outcome.VERIFY_FAILED, retry=rule, retries_used=used)
    assert decision.to is Stage.INBOX and decision.not_before == T0 + timedelta(seconds=MAX_DURATION)


def test_failure_with_no_retries_left_is_dead_lettered() -> None:
    """A failure after all retries were used goes to dead_letter, saying so."""
    decision = decide_after(Outcome.TIMEOUT, retries_used=2)
    assert (decision.action, decision.to) == (Action.DEAD, Stage.DEAD_LETTER)
    assert decision.reason == "timeout; all 2 retries used"


@pytest.mark.parametrize("outcome", [Outcome.TIMEOUT, Outcome.VERIFY_FAILED, Outcome.ENGINE_FAILED,
                                     Outcome.ENGINE_MISSING])
def test_failure_without_retry_fails(outcome: Outcome) -> None:
    """A failure of a job with no retry set goes to failed."""
    decision = decide_after(outcome, retry=NO_RETRY)
    assert (decision.action, decision.to, decision.not_before) == (Action.FAIL, Stage.FAILED, None)
    assert decision.reason == f"{outcome} and no retry is set"


@pytest.mark.parametrize("outcome", [Outcome.BUDGET_EXHAUSTED, Outcome.BUDGET_EXCEEDED])
def test_a_job_over_its_budget_fails_and_is_never_retried(outcome: Outcome) -> None:
    """A job whose budget is used up goes to failed even with retries left and the outcome in retry.on."""
    rule = RetryRule(max=3, backoff=1.0, on=frozenset({str(outcome)}))
    decision = decide_after(outcome, retry=rule)
    assert (decision.action, decision.to, decision.not_before) == (Action.FAIL, Stage.FAILED, None)
    assert decision.reason == f"{outcome}: never retried automatically"


def test_outcome_not_in_retry_on_fails() -> None:
    """A failure whose outcome is not in retry.on goes to failed even with retries left."""
    rule = RetryRule(max=3, backoff=60.0, on=frozenset({"timeout"}))
    decision = decide_after(Outcome.VERIFY_FAILED, retry=rule)
    assert (decision.action, decision.to) == (Action.FAIL, Stage.FAILED)
    assert decision.reason == "verify_failed is not in retry.on (timeout)"


def test_same_failure_twice_is_stuck() -> None:
    """The same failure fingerprint twice in a row ends retries early in dead_letter as stuck."""
    decision = decide_after(Outcome.VERIFY_FAILED, retries_used=0, fingerprint="abc", last_fingerprint="abc")
    assert (decision.action, decision.to) == (Action.DEAD, Stage.DEAD_LETTER)
    assert decision.reason.startswith("stuck")


def test_different_failure_is_not_stuck() -> None:
    """A failure unlike the last one is retried as usual."""
    decision = decide_after(Outcome.VERIFY_FAILED, fingerprint="abc", last_fingerprint="def")
    assert decision.to is Stage.INBOX


def test_interrupted_goes_back_without_using_a_retry() -> None:
    """An interrupted attempt goes back to the inbox as a reclaim, not a retry, with no wait."""
    decision = decide_after(Outcome.INTERRUPTED, retries_used=2, reclaims=0)
    assert (decision.action, decision.to, decision.not_before) == (Action.RECLAIM, Stage.INBOX, None)


def test_interrupted_goes_back_even_without_retry() -> None:
    """An interrupted attempt of a job with no retry set is not a failure: it goes back to the inbox."""
    decision = decide_after(Outcome.INTERRUPTED, retry=NO_RETRY)
    assert decision.to is Stage.INBOX


def test_interrupted_too_often_is_dead_lettered() -> None:
    """Once a job has been reclaimed max_reclaims times, the next interruption dead-letters it."""
    decision = decide_after(Outcome.INTERRUPTED, reclaims=3, max_reclaims=3)
    assert (decision.action, decision.to) == (Action.DEAD, Stage.DEAD_LETTER)


def test_the_max_reclaims_th_interruption_dead_letters() -> None:
    """With max_reclaims 3, the 1st and 2nd interruptions send the job back; the 3rd dead-letters it (issue 3)."""
    sent = [decide_after(Outcome.INTERRUPTED, reclaims=done, max_reclaims=3).to for done in range(3)]
    assert sent == [Stage.INBOX, Stage.INBOX, Stage.DEAD_LETTER]


def test_a_graceful_stop_goes_back_to_the_inbox_however_often_it_happened() -> None:
    """A person stopping the worker (TERM, Ctrl-C) is not the job's doing: the job goes back to
    the inbox, never to dead_letter, whatever its reclaims; the reason says it is not counted."""
    for done in range(5):
        decision = decide_after(Outcome.INTERRUPTED, reclaims=done, max_reclaims=3, graceful=True,
                                stop_reason="got SIGTERM")
        assert (decision.action, decision.to, decision.not_before) == (Action.RECLAIM, Stage.INBOX, None)
        assert "got SIGTERM" in decision.reason and "not counted as a retry or a reclaim" in decision.reason


def test_a_lease_taken_back_still_counts_toward_max_reclaims() -> None:
    """A take-back of an expired lease (the holder vanished) counts: the max_reclaims-th one
    dead-letters the job."""
    sent = [reclaim_decision("lease_expired", "no heartbeat", done, 3).to for done in range(3)]
    assert sent == [Stage.INBOX, Stage.INBOX, Stage.DEAD_LETTER]


# --- failure_fingerprint ---------------------------------------------------------------------


def test_fingerprint_ignores_numbers_hashes_times_and_addresses() -> None:
    """Two failures that differ only in numbers, hashes, times and addresses share a fingerprint."""
    first = ("FAILED tests/test_auth.py::test_login - assert 3 == 4\n"
             "at 2026-01-01 12:00:03.120 object at 0x7f3a2c1d\n"
             "commit 3f2a9b1c0d4e5f60718293a4b5c6d7e8f9012345\n"
             "took 1.52s, 17 passed")
    second = ("FAILED tests/test_auth.py::test_login - assert 8 == 9\n"
              "at 2026-02-11 09:41:57.004 object at 0x55d0e1a2\n"
              "commit 0badc0ffee0ddf00d1234567890abcdef1234567\n"
              "took 11.0s, 2 passed")
    assert failure_fingerprint(Outcome.VERIFY_FAILED, first) == failure_fingerprint(Outcome.VERIFY_FAILED, second)


def test_fingerprint_ignores_blank_lines_and_indentation() -> None:
    """Blank lines and surrounding whitespace do not change a fingerprint."""
    assert failure_fingerprint(Outcome.TIMEOUT, "  error: boom  \n\n") == failure_fingerprint(
        Outcome.TIMEOUT, "error: boom")


def test_fingerprint_tells_different_messages_apart() -> None:
    """Different failure messages, or the same tail under another outcome, have different fingerprints."""
    login = failure_fingerprint(Outcome.VERIFY_FAILED, "AssertionError: login returned 500")
    logout = failure_fingerprint(Outcome.VERIFY_FAILED, "KeyError: 'session' in logout")
    as_engine = failure_fingerprint(Outcome.ENGINE_FAILED, "AssertionError: login returned 500")
    assert len({login, logout, as_engine}) == 3
    assert len(login) == 16


def test_fingerprint_looks_at_the_last_twenty_lines() -> None:
    """Only the last twenty non-blank lines count: older output does not change the fingerprint."""
    tail = "\n".join(f"line {chr(97 + i % 26)}" for i in range(20))
    assert failure_fingerprint(Outcome.TIMEOUT, "old noise\n" + tail) == failure_fingerprint(Outcome.TIMEOUT, tail)


def test_fingerprint_ignores_short_git_hashes() -> None:
    """Failures that differ only in a git short hash (7 characters) share a fingerprint."""
    first = "error: [main 3f2a9b1] could not apply patch"
    second = "error: [main a1c0e7d] could not apply patch"
    assert failure_fingerprint(Outcome.ENGINE_FAILED, first) == failure_fingerprint(Outcome.ENGINE_FAILED, second)


def test_an_engine_that_finished_before_its_children_sends_the_job_back_to_wait() -> None:
    """Not a failure and not a retry: no retry is used, whatever the job's retry rule."""
    decision = decide(Outcome.AWAITING_CHILDREN, verified=None, review_policy="auto",
                      retry=RetryRule(max=0, backoff=0.0, on=frozenset()), retries_used=0,
                      fingerprint=None, last_fingerprint=None, reclaims=0, max_reclaims=3, now=T0)
    assert (decision.action, decision.to) == (Action.AWAIT, Stage.INBOX)
    assert decision.not_before is None


@pytest.mark.parametrize("policy", ["auto", "manual"])
def test_a_failed_agent_review_hands_the_work_to_a_person(policy: str) -> None:
    """No verdict is no approval, even under review-policy auto, and no request for changes."""
    decision = decide(Outcome.REVIEW_FAILED, verified=True, review_policy=policy,
                      retry=RetryRule(max=3, backoff=0.0, on=frozenset({"review_failed"})),
                      retries_used=0, fingerprint=None, last_fingerprint=None, reclaims=0,
                      max_reclaims=3, now=T0, review_rounds=(0, 2))
    assert (decision.action, decision.to) == (Action.SUBMIT, Stage.REVIEW)
