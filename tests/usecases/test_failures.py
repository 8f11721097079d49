"""The line a failed job's card shows: read from the tail its attempt's `finished` event keeps, as
aq's worker writes it (the output's last lines, then `[outcome: detail]`), folded as aq folds it."""

from __future__ import annotations

import pytest

from aq.core.events import fold
from aq.usecases.failures import failure_line, tail_line

CLAIM = {"ts": "2026-01-01T11:00:00.000000Z", "type": "claimed", "by": "w1", "from": "inbox",
         "to": "building", "attempt": 1, "token": "1.w1.aaa"}


def failed(tail: str | None, why: str = "engine_failed and no retry is set",
           outcome: str = "engine_failed") -> dict[str, object]:
    return {"ts": "2026-01-01T11:05:00.000000Z", "type": "finished", "by": "w1",
            "from": "building", "to": "failed", "action": "fail", "attempt": 1,
            "token": "1.w1.aaa", "outcome": outcome, "why": why, "tail": tail}


@pytest.mark.parametrize(("tail", "line"), [
    # bash running a shell job's prompt file, as `aq run` records it
    ("starting\n/q/.git/aq/running/nf/1.prompt: line 1: frobnicate: command not found\n"
     "[engine_failed: engine exited with 127]", "command not found: frobnicate"),
    ("sh: 1: frob: not found\n[engine_failed: engine exited with 127]", "command not found: frob"),
    ("zsh: command not found: frob\n[verify_failed: verify exited with 127]",
     "command not found: frob"),
    ("bash: line 1: pytestx: command not found\nmore output\n"
     "[verify_failed: verify exited with 127]", "command not found: pytestx"),
    ("nothing said\n[engine_failed: engine exited with 127]",
     "command not found (engine exited with 127)"),
])
def test_exit_127_says_which_command_was_not_found(tail: str, line: str) -> None:
    """Whatever shell said it, a command it could not find reads `command not found: NAME`."""
    assert tail_line(tail) == line


def test_not_found_of_a_file_is_not_a_missing_command() -> None:
    """`x: not found` with an exit other than 127 is some tool's own words, kept as they are."""
    tail = "config.yaml: not found\n[verify_failed: verify exited with 2]"
    assert tail_line(tail) == "config.yaml: not found · verify exited with 2"


def test_the_last_output_line_of_a_failed_verify_leads() -> None:
    """A failed verify shows the last line it printed, then how it exited."""
    tail = "Traceback (most recent call last):\n  File 'x.py'\nAssertionError: totals differ\n" \
           "[verify_failed: verify exited with 1]"
    assert tail_line(tail) == "AssertionError: totals differ · verify exited with 1"


def test_a_timeout_says_the_limit_not_what_the_run_last_printed() -> None:
    """Where the output is not the cause (a timeout, a budget), the attempt's own detail is the line."""
    assert tail_line("step 41 of 90\n[timeout: engine ran past the 900s limit]") == \
        "engine ran past the 900s limit"


def test_json_stream_lines_are_passed_over() -> None:
    """An agent CLI's JSON event lines are no sentence: the line before them, else the detail."""
    tail = 'Error: rate limited\n{"type": "result", "is_error": true}\n' \
           "[engine_failed: engine exited with 1]"
    assert tail_line(tail) == "Error: rate limited · engine exited with 1"
    assert tail_line('{"type": "result"}\n[engine_failed: engine exited with 1]') == \
        "engine exited with 1"


def test_a_job_failed_by_its_attempt_shows_that_attempts_line() -> None:
    state = fold([CLAIM, failed("oops\n[engine_failed: engine exited with 3]")])
    assert failure_line(state) == "oops · engine exited with 3"


def test_a_job_a_person_rejected_after_a_failure_shows_their_reason() -> None:
    """The tail of an earlier failure is not why a person rejected the job later: their why is."""
    ok = {**failed(None, outcome="ok"), "to": "review", "action": "submit"}
    earlier = fold([CLAIM, failed("oops\n[engine_failed: engine exited with 3]")]).last_failure_tail
    assert earlier
    state = fold([CLAIM, failed("oops\n[engine_failed: engine exited with 3]"),
                  {"ts": "2026-01-01T11:10:00.000000Z", "type": "moved", "by": "me", "from": "failed",
                   "to": "inbox", "action": "requeue", "why": "try again"},
                  {**CLAIM, "ts": "2026-01-01T11:11:00.000000Z", "attempt": 2, "token": "2.w1.b"},
                  {**ok, "ts": "2026-01-01T11:12:00.000000Z", "attempt": 2, "token": "2.w1.b"},
                  {"ts": "2026-01-01T11:20:00.000000Z", "type": "moved", "by": "me",
                   "from": "review", "to": "failed", "action": "reject",
                   "why": "wrong approach:\n  use the queue"}])
    assert failure_line(state) == "wrong approach: use the queue"


def test_a_job_taken_back_too_often_shows_why_it_was_dead_lettered() -> None:
    """A lease taken back keeps no tail: the move's own why says what happened."""
    why = "lease_expired: no heartbeat for 120s; taken back 3 times (max_reclaims 3)"
    state = fold([CLAIM, {**failed(None, why=why, outcome="lease_expired"), "to": "dead_letter",
                          "action": "dead"}])
    assert failure_line(state) == why
