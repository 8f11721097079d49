"""Events are JSON lines people read: each type's constructor writes its fields in one fixed
order, the extra fields after, in the order given."""

from __future__ import annotations

import json

from aq.core import events
from aq.core.lifecycle import Stage

TS = "2024-05-01T10:00:00.000000Z"


def _keys(event: events.Event) -> list[str]:
    return list(json.loads(json.dumps(event)))


def test_an_add_says_who_put_the_job_in_the_inbox_then_its_extras() -> None:
    """ts, type, by, to: inbox; then what the caller adds (a key, a tracker item)."""
    event = events.added(TS, "me@h", tracker_item="github:o/r#1")
    assert event == {"ts": TS, "type": "added", "by": "me@h", "to": "inbox",
                     "tracker_item": "github:o/r#1"}
    assert _keys(event) == ["ts", "type", "by", "to", "tracker_item"]


def test_a_claim_moves_inbox_to_building_under_its_token() -> None:
    """A claim names the move, the attempt and the lease token before host, pid and pins."""
    event = events.claimed(TS, "w1", 2, "2.w1.ab", host="h", pid=7, engine="claude")
    assert _keys(event) == ["ts", "type", "by", "from", "to", "attempt", "token", "host", "pid",
                            "engine"]
    assert (event["type"], event["from"], event["to"]) == ("claimed", "inbox", "building")


def test_a_finish_moves_out_of_building_and_keeps_the_extras_in_order() -> None:
    """A finished event: the move, action, attempt, token and outcome, then the rest as given."""
    event = events.finished(TS, "w1", Stage.INBOX, "reclaim", 1, "1.w1.aa", "lease_expired",
                            why="gone", reclaim=True, log=None)
    assert _keys(event) == ["ts", "type", "by", "from", "to", "action", "attempt", "token",
                            "outcome", "why", "reclaim", "log"]
    assert (event["type"], event["from"]) == ("finished", "building")


def test_a_stale_result_keeps_the_result_without_a_move() -> None:
    """No from/to: a fenced result moves nothing."""
    event = events.stale_result(TS, "w1", 1, "1.w1.aa", "ok", "queue/.logs/j/1.log", why="fenced")
    assert _keys(event) == ["ts", "type", "by", "attempt", "token", "outcome", "log", "why"]
    assert event["type"] == "stale_result"


def test_a_persons_move_names_both_stages_its_action_and_why() -> None:
    event = events.moved(TS, "me@h", Stage.REVIEW, Stage.SHIPPED, "ship", "ship by me@h",
                         branch="aq/j")
    assert _keys(event) == ["ts", "type", "by", "from", "to", "action", "why", "branch"]
    assert json.loads(json.dumps(event))["to"] == "shipped"


def test_notes_and_rescues_are_events_of_their_own_type() -> None:
    note = events.note(TS, "w1", "1.w1.aa", attempt=1, waiting="branch_push", why="waiting")
    assert _keys(note) == ["ts", "type", "by", "token", "attempt", "waiting", "why"]
    rescued = events.rescued(TS, "w1", "aq/j-rescued-1", "a worker was killed")
    assert rescued == {"ts": TS, "type": "rescued", "by": "w1", "branch": "aq/j-rescued-1",
                       "why": "a worker was killed"}
