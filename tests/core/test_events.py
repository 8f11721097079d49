"""The fold of a job's events into its current state."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from aq.core.events import Attempt, Event, JobState, counts_as_reclaim, fold, iso, parse_iso
from tests.helpers.queue import T0


def at(minutes: float) -> str:
    return iso(T0 + timedelta(minutes=minutes))


def added(minutes: float = 0) -> Event:
    return {"ts": at(minutes), "type": "added", "by": "ann@laptop"}


def claimed(attempt: int, token: str, worker: str = "box-1", minutes: float = 1) -> Event:
    return {"ts": at(minutes), "type": "claimed", "by": worker, "from": "inbox", "to": "building",
            "attempt": attempt, "token": token}


def finished(token: str, outcome: str, action: str, minutes: float = 2, **extra: object) -> Event:
    event: Event = {"ts": at(minutes), "type": "finished", "by": "box-1", "from": "building",
                    "token": token, "outcome": outcome, "action": action, "why": f"{outcome} ({action})"}
    event.update(extra)
    return event


def moved(action: str, why: str, minutes: float = 10) -> Event:
    return {"ts": at(minutes), "type": "moved", "by": "ann@laptop", "action": action, "why": why}


def test_no_events_is_the_empty_state() -> None:
    """A job with no events has no attempts, no lease and nothing used."""
    assert fold([]) == JobState()


def test_added_time_is_the_first_added_event() -> None:
    """`added_at` is the time of the first `added` event, not of a later one."""
    assert fold([added(0), added(5)]).added_at == at(0)


def test_claim_holds_a_lease_and_opens_an_attempt() -> None:
    """A claim records the lease token and holder and starts attempt n."""
    state = fold([added(), claimed(1, "box-1:1")])
    assert (state.token, state.holder) == ("box-1:1", "box-1")
    assert state.attempts == (Attempt(number=1, worker="box-1", token="box-1:1", started=at(1)),)
    assert state.attempt_count == 1


def test_claim_records_the_holders_host_and_pid() -> None:
    """A claim carrying host and pid records them for the holder; the finish clears them."""
    claim = {**claimed(1, "box-1:1"), "host": "box-1.lan", "pid": 4242}
    assert (fold([claim]).holder_host, fold([claim]).holder_pid) == ("box-1.lan", 4242)
    assert fold([{**claim, "pid": "4242"}]).holder_pid is None
    done = fold([claim, finished("box-1:1", "ok", "submit")])
    assert (done.holder_host, done.holder_pid) == (None, None)


def test_finished_closes_the_attempt_and_releases_the_lease() -> None:
    """A finished event fills in the attempt's outcome, log and artifacts, and clears the lease."""
    state = fold([
        added(), claimed(1, "box-1:1"),
        finished("box-1:1", "ok", "pass", minutes=3, verify_exit=0, log="queue/.logs/j/1.log",
                 artifacts=["dist/a.whl"], duration=120.5),
    ])
    assert state.attempts == (Attempt(
        number=1, worker="box-1", token="box-1:1", started=at(1), outcome="ok", verify_exit=0,
        finished=at(3), log="queue/.logs/j/1.log", artifacts=("dist/a.whl",), reason="ok (pass)",
    ),)
    assert (state.token, state.holder) == (None, None)
    assert (state.last_outcome, state.last_reason) == ("ok", "ok (pass)")
    assert state.wall_used == 120.5


def test_finished_with_another_token_leaves_the_attempt_open() -> None:
    """A finished event whose token is not the current attempt's does not rewrite that attempt."""
    state = fold([claimed(1, "box-1:1"), finished("box-9:1", "ok", "pass")])
    assert state.attempts[0].outcome is None


def test_retries_count_and_set_not_before() -> None:
    """Each retry counts one retry used and sets the not-before time; the next claim clears it."""
    wait = at(12)
    events = [
        added(), claimed(1, "w:1"),
        finished("w:1", "verify_failed", "retry", not_before=wait, fingerprint="f1", tail="boom 1", duration=30),
    ]
    state = fold(events)
    assert (state.retries_used, state.not_before) == (1, wait)
    assert (state.last_fingerprint, state.last_failure_tail) == ("f1", "boom 1")
    events += [claimed(2, "w:2", minutes=13),
               finished("w:2", "timeout", "retry", minutes=14, not_before=at(30), fingerprint="f2", duration=45)]
    state = fold(events)
    assert (state.retries_used, state.not_before, state.last_fingerprint) == (2, at(30), "f2")
    assert [attempt.number for attempt in state.attempts] == [1, 2]
    assert state.wall_used == 75.0
    assert fold([*events, claimed(3, "w:3", minutes=31)]).not_before is None


def test_a_retry_keeps_its_backoff_until_the_next_claim() -> None:
    """A retry's backoff in seconds is kept beside its not-before time, for machines whose clock
    differs from the finisher's; the next claim clears both."""
    waiting = fold([added(), claimed(1, "t1"),
                    finished("t1", "verify_failed", "retry", not_before=at(7), backoff=300.0)])
    assert (waiting.not_before, waiting.retry_backoff) == (at(7), 300.0)
    again = fold([added(), claimed(1, "t1"),
                  finished("t1", "verify_failed", "retry", not_before=at(7), backoff=300.0),
                  claimed(2, "t2", minutes=8)])
    assert (again.not_before, again.retry_backoff) == (None, None)


def test_success_keeps_the_last_failure_fingerprint() -> None:
    """An ok or interrupted attempt does not overwrite the fingerprint of the last failure."""
    state = fold([
        claimed(1, "w:1"), finished("w:1", "verify_failed", "retry", fingerprint="f1", tail="boom"),
        claimed(2, "w:2"), finished("w:2", "interrupted", "reclaim", reclaim=True, fingerprint=None),
        claimed(3, "w:3"), finished("w:3", "ok", "submit", fingerprint=None),
    ])
    assert (state.last_fingerprint, state.last_failure_tail, state.last_outcome) == ("f1", "boom", "ok")


def test_reclaims_are_counted_but_are_not_retries() -> None:
    """A reclaim counts a reclaim, not a retry; an interrupted attempt that dead-letters counts too."""
    state = fold([
        claimed(1, "w:1"), finished("w:1", "interrupted", "reclaim", reclaim=True),
        claimed(2, "w:2"), finished("w:2", "interrupted", "reclaim", reclaim=True),
        claimed(3, "w:3"), finished("w:3", "interrupted", "dead", reclaim=True),
    ])
    assert (state.reclaims, state.retries_used) == (3, 0)


def test_a_graceful_stop_does_not_count_as_a_reclaim_and_a_lease_taken_back_does() -> None:
    """Attempts a person stopped (TERM, Ctrl-C: `graceful`) go back to the inbox uncounted; a
    lease that expired still counts toward max_reclaims."""
    stopped = [e for n in (1, 2, 3) for e in (
        claimed(n, f"w:{n}"), finished(f"w:{n}", "interrupted", "reclaim", reclaim=True, graceful=True))]
    assert fold(stopped).reclaims == 0
    state = fold([*stopped, claimed(4, "w:4"),
                  finished("w:4", "lease_expired", "reclaim", reclaim=True)])
    assert (state.reclaims, state.retries_used) == (1, 0)
    assert all(counts_as_reclaim(e) is False for e in stopped)


def test_requeue_resets_retries_reclaims_and_wait() -> None:
    """A requeue gives the job fresh retries and reclaims, forgets the stuck fingerprint and the wait."""
    state = fold([
        added(), claimed(1, "w:1"),
        finished("w:1", "verify_failed", "retry", not_before=at(8), fingerprint="f1", duration=10),
        claimed(2, "w:2"), finished("w:2", "interrupted", "reclaim", reclaim=True, duration=5),
        claimed(3, "w:3"), finished("w:3", "verify_failed", "dead", fingerprint="f1", duration=10),
        moved("requeue", "try again with the new fixture"),
    ])
    assert (state.retries_used, state.reclaims, state.last_fingerprint, state.not_before) == (0, 0, None, None)
    assert state.attempt_count == 3  # attempts stay in the record
    assert state.wall_used == 25.0
    assert state.last_reason == "try again with the new fixture"


def test_cancel_releases_the_lease() -> None:
    """Canceling a building job clears its lease token and holder."""
    state = fold([claimed(1, "w:1"), moved("cancel", "canceled")])
    assert (state.token, state.holder, state.last_reason) == (None, None, "canceled")


def test_unknown_event_types_are_tolerated() -> None:
    """An event of a type this version does not know, or with no type, is counted and otherwise ignored."""
    events = [added(), {"ts": at(1), "type": "from-the-future", "x": 1}, {"ts": at(2)}, claimed(1, "w:1"),
              {"ts": at(3), "type": "stale_result", "token": "old:1", "outcome": "ok"}]
    state = fold(events)
    assert state.events == 5
    assert (state.token, state.attempt_count, state.added_at) == ("w:1", 1, at(0))


def test_iso_is_utc_and_parses_back() -> None:
    """iso writes UTC with a Z, and parse_iso reads it back to the same moment."""
    moment = datetime(2026, 3, 1, 14, 30, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    text = iso(moment)
    assert text == "2026-03-01T12:30:05.123456Z"
    assert parse_iso(text) == moment


def test_the_session_to_resume_is_the_last_finished_runs_not_a_late_fenced_ones() -> None:
    """fold keeps the last finished run's (engine, session, usage, where); a stale_result
    recorded later counts toward spending but does not replace the session to resume."""
    usage = {"input_tokens": 10, "cost_usd": 0.5, "session": "s-2"}
    state = fold([
        {"type": "added", "ts": "2026-01-01T00:00:00Z"},
        {"type": "finished", "engine": "claude", "usage": usage, "session_where": "box:/q"},
        {"type": "stale_result", "engine": "claude",
         "usage": {"input_tokens": 5, "cost_usd": 0.25, "session": "s-1"}},
    ])
    assert state.session == ("claude", "s-2", usage, "box:/q")
    assert (state.usd_used, state.tokens_used) == (0.75, 15)


# --- events edited by hand ----------------------------------------------------------------------

# Any JSON value, as a hand edit or another program may leave in a field (1e400 reads as inf).
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6)
FIELDS = ("ts", "by", "attempt", "token", "host", "pid", "outcome", "why", "tail", "fingerprint",
          "not_before", "backoff", "duration", "verify_exit", "log", "artifacts", "engine",
          "out_of_scope", "branch", "head", "usage", "session_usage", "session_where")


def is_text(value: object) -> bool:
    return value is None or isinstance(value, str)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(("added", "claimed", "finished", "moved")),
                          st.dictionaries(st.sampled_from(FIELDS), ANY_JSON, max_size=6)),
                min_size=1, max_size=6))
def test_a_field_of_any_type_never_breaks_the_fold_nor_leaks_into_the_state(
        events: list[tuple[str, dict[str, object]]]) -> None:
    """One hand-edited line (`"attempt": null`, `"tail": 5`, `"tokens": 1e400`) once made every
    command that read the job fail with a Python error, workers included. A field of another
    type than aq writes is read as absent, and the state keeps the types readers rely on."""
    state = fold([{"type": kind, "action": "retry", **fields} for kind, fields in events])
    texts = (state.token, state.holder, state.holder_host, state.added_at, state.not_before,
             state.last_fingerprint, state.last_failure_tail, state.last_outcome,
             state.last_reason, state.branch_head, state.moved_at)
    assert all(is_text(value) for value in texts), texts
    assert isinstance(state.tokens_used, int) and isinstance(state.usd_used, float)
    assert state.usd_used < float("inf") and state.wall_used < float("inf")
    assert all(isinstance(path, str) for path in state.out_of_scope)
    assert state.holder_pid is None or type(state.holder_pid) is int
    for attempt in state.attempts:
        assert type(attempt.number) is int
        assert all(is_text(value) for value in (attempt.outcome, attempt.finished, attempt.log,
                                                attempt.reason, attempt.engine))
        assert attempt.verify_exit is None or type(attempt.verify_exit) is int
        assert all(isinstance(name, str) for name in attempt.artifacts)


def test_a_claim_with_no_attempt_number_counts_as_the_next_attempt() -> None:
    state = fold([added(), {**claimed(1, "t1"), "attempt": None}, finished("t1", "verify_failed", "retry"),
                  {**claimed(2, "t2", minutes=3), "attempt": "two"}])
    assert [attempt.number for attempt in state.attempts] == [1, 2]
