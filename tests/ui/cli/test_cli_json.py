"""The `--json` shapes scripts and agents rely on: the exact set of keys, so a change is deliberate."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cli import Ran
from tests.helpers.queue import write_job

Aq = Callable[..., Ran]

JOB_KEYS = {
    "id", "stage", "archived", "title", "priority", "engine", "profile", "lock", "deps", "capabilities",
    "tracker_item", "added", "attempts", "holder", "lease_token", "not_before", "last_outcome",
    "out_of_scope", "spent", "branch", "error",
}
VERDICT_KEYS = {"ready", "blocked"}
DETAIL_KEYS = {"body", "keys", "resolved", "allowed_moves", "attempt_log", "events", "tracker",
               "parent", "children"}
RESOLVED_NAMES = {"engine", "cwd", "timeout", "verify", "priority", "review-policy", "retry",
                  "lock", "yolo", "profile", "engine-class", "capabilities", "allowed-scope"}
PASSED_OVER_KEYS = {"id", "ready", "kind", "reason"}
SCORE_KEYS = {"total", "fit", "warm", "starving", "fair", "load", "cost"}
MOVE_KEYS = {"id", "from", "to", "action", "tracker", "children_canceled"}
ATTEMPT_KEYS = {"number", "worker", "token", "started", "finished", "outcome", "verify_exit",
                "log", "artifacts", "reason", "engine", "usage"}


def as_json(aq: Aq, *args: str) -> Any:
    ran = aq(*args, "--json")
    assert ran.returncode in (0, 1), ran.stderr
    return json.loads(ran.stdout)


@pytest.fixture
def jobs(queue_root: Path) -> Path:
    """An inbox job that is ready, one that waits for a dep, and one in review."""
    write_job(queue_root, "reviewed", stage="review", title="Reviewed")
    write_job(queue_root, "ready-one", title="Ready one", priority="high")
    write_job(queue_root, "waiting", title="Waiting", deps=["reviewed"])
    return queue_root


def test_ls_json_shape(aq: Aq, jobs: Path) -> None:
    """`aq ls --json` is a list of jobs; inbox jobs add ready and blocked {kind, reason}."""
    listed = {job["id"]: job for job in as_json(aq, "ls")}
    assert set(listed["reviewed"]) == JOB_KEYS
    assert set(listed["ready-one"]) == JOB_KEYS | VERDICT_KEYS
    assert listed["ready-one"]["blocked"] is None
    assert listed["waiting"]["blocked"] == {"kind": "dep", "reason": "waits for dep reviewed (review)"}


def test_show_json_shape_of_an_inbox_job(aq: Aq, jobs: Path) -> None:
    """`aq show --json` of an inbox job is the ls shape plus body, keys, resolved, moves, attempts and events."""
    shown = as_json(aq, "show", "waiting")
    assert set(shown) == JOB_KEYS | VERDICT_KEYS | DETAIL_KEYS
    assert set(shown["resolved"]) == RESOLVED_NAMES
    assert all(set(item) == {"value", "source"} for item in shown["resolved"].values())


def test_show_json_shape_of_a_job_after_an_attempt(aq: Aq, queue_root: Path) -> None:
    """`aq show --json` of a job that ran has no verdict keys, and each attempt has the pinned keys."""
    write_job(queue_root, "ran", body="echo ran")
    assert aq("run", "--once", timeout=30).returncode == 0
    shown = as_json(aq, "show", "ran")
    assert set(shown) == JOB_KEYS | DETAIL_KEYS
    assert shown["stage"] == "review"
    assert [set(a) for a in shown["attempt_log"]] == [ATTEMPT_KEYS]
    assert {"ts", "type", "by"} <= set(shown["events"][-1])


def test_next_json_shape(aq: Aq, jobs: Path) -> None:
    """`aq next --json` is {next: job, halted: reason or null, passed_over: [{id, ready, kind,
    reason}], score: the next job's breakdown, candidates: [{id, priority, group, score}]}."""
    result = as_json(aq, "next")
    assert set(result) == {"next", "halted", "passed_over", "score", "candidates"}
    assert set(result["next"]) == JOB_KEYS
    assert result["next"]["id"] == "ready-one"
    assert [set(item) for item in result["passed_over"]] == [PASSED_OVER_KEYS]
    assert set(result["score"]) == SCORE_KEYS
    assert [c["id"] for c in result["candidates"]] == ["ready-one"]
    assert [set(c) for c in result["candidates"]] == [{"id", "priority", "group", "score"}]
    assert result["candidates"][0]["score"] == result["score"]


def test_next_json_when_nothing_is_ready(aq: Aq, queue_root: Path) -> None:
    """With nothing to take, `aq next --json` has next null."""
    assert as_json(aq, "next") == {"next": None, "halted": None, "passed_over": [], "score": None,
                                   "candidates": []}


def test_lint_json_shape(aq: Aq, queue_root: Path) -> None:
    """`aq lint --json` is {jobs, problems, ok}, with ok false and exit 1 when there are problems."""
    write_job(queue_root, "good")
    assert as_json(aq, "lint") == {"jobs": 1, "problems": [], "ok": True}
    write_job(queue_root, "bad", deps=["missing"])
    ran = aq("lint", "--json")
    assert ran.returncode == 1
    result = json.loads(ran.stdout)
    assert set(result) == {"jobs", "problems", "ok"}
    assert (result["jobs"], len(result["problems"]), result["ok"]) == (2, 1, False)


def test_add_json_shape(aq: Aq, queue_root: Path) -> None:
    """`aq add --json` is the job plus `created`, false when an idempotency key found it."""
    first = as_json(aq, "add", "--body", "echo a", "--key", "k")
    again = as_json(aq, "add", "--body", "echo a", "--key", "k")
    assert set(first) == JOB_KEYS | {"created"}
    assert (first["created"], again["created"]) == (True, False)
    assert again["id"] == first["id"]


@pytest.mark.parametrize(("stage", "command"), [
    ("review", ["promote"]), ("testing", ["ship"]), ("review", ["reject", "--reason", "no"]),
    ("failed", ["requeue"]), ("inbox", ["cancel"]),
])
def test_move_json_shape(aq: Aq, queue_root: Path, stage: str, command: list[str]) -> None:
    """Every move command's `--json` is {id, from, to, action, tracker} (tracker: the posts sent)."""
    write_job(queue_root, "mover", stage=stage)
    moved = as_json(aq, command[0], "mover", *command[1:])
    assert set(moved) == MOVE_KEYS
    assert (moved["id"], moved["from"], moved["action"]) == ("mover", stage, command[0])


def test_an_error_under_json_is_json_on_stdout_too(aq: Aq, queue_root: Path) -> None:
    """A command asked for --json that fails prints {"error", "exit"} on stdout for the script
    reading it, and its one line on stderr for a person, with the same exit code."""
    missing = aq("show", "no-such-job", "--json")
    assert missing.returncode == 1
    said = json.loads(missing.stdout)
    assert said == {"error": missing.stderr.strip().removeprefix("aq: "), "exit": 1}
    usage = aq("ls", "--stage", "nope", "--json")
    assert (usage.returncode, json.loads(usage.stdout)["exit"]) == (2, 2)
    plain = aq("show", "no-such-job")
    assert plain.stdout == "" and plain.returncode == 1
