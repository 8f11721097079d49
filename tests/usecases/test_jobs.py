"""The use-cases in `aq.usecases`, called in-process on a real queue in git, with `now` handed in."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from aq.core.events import CLAIMED, FINISHED
from aq.core.lifecycle import Action, Stage
from aq.errors import IdempotencyConflict, JobExists, LogNotFound, MoveRefused
from aq.infra.rundir import RunFiles
from aq.store.queue import Queue
from aq.usecases.checks import lint
from aq.usecases.fleet import halt, resume
from aq.usecases.jobs import add_job, show_job
from aq.usecases.listing import list_jobs, next_job
from aq.usecases.logs import LogRef, first_log, read_log
from aq.usecases.moves import move_job
from aq.usecases.setup import init_queue
from tests.helpers.cli import run_aq
from tests.helpers.git import git, head
from tests.helpers.queue import T0, write_job

WHO = "tester@bench"
ALLOWED = {
    "inbox": {"cancel"},
    "building": {"cancel"},
    "review": {"promote", "ship", "reject", "cancel"},
    "testing": {"ship", "reject", "cancel"},
    "shipped": set(),
    "failed": {"requeue"},
    "dead_letter": {"requeue"},
}


def add(queue: Queue, body: str = "echo hi", *, at: timedelta = timedelta(), entropy: int = 0,
        job_id: str | None = None, **fields: object) -> str:
    fields = {k.replace("_", "-"): v for k, v in fields.items()}
    return add_job(queue, body, fields, job_id=job_id, now=T0 + at, who=WHO, entropy=entropy).job.id


def record(queue: Queue, job_id: str, event: dict[str, object]) -> None:
    """Append an event the way a worker does: through a transaction."""
    queue.transact(lambda tx: tx.append_event(job_id, event), f"test: event for {job_id}")


# --- init ------------------------------------------------------------------------------------

def test_init_reports_what_it_made_and_then_nothing(tmp_path: Path) -> None:
    """The first init reports the folders and files it made and a new repo; the second reports nothing and does not commit."""
    first = init_queue(tmp_path / "q")
    assert first.git_initialized and first.committed
    assert {"queue/inbox/", "queue/dead_letter/", "aq.yaml", ".gitattributes"} <= set(first.created)
    second = init_queue(tmp_path / "q")
    assert (second.created, second.git_initialized, second.committed) == ((), False, False)


def test_init_completes_a_queue_missing_a_stage(tmp_path: Path) -> None:
    """init on a queue whose review folder was deleted makes only that folder again."""
    init_queue(tmp_path / "q")
    (tmp_path / "q" / "queue" / "review" / ".gitkeep").unlink()
    (tmp_path / "q" / "queue" / "review").rmdir()
    again = init_queue(tmp_path / "q")
    assert again.created == ("queue/review/",)
    assert (tmp_path / "q" / "queue" / "review").is_dir()


# --- add -------------------------------------------------------------------------------------

def test_add_records_the_time_and_person_it_was_given(queue: Queue) -> None:
    """add_job names the job slug+suffix from its entropy and stamps the `added` event with `now` and `who`."""
    result = add_job(queue, "echo hi", {"title": "Say Hello"}, job_id=None, now=T0, who=WHO,
                     entropy=0)
    assert (result.job.id, result.created) == ("say-hello-000000", True)
    assert result.job.added == T0
    assert queue.read_events("say-hello-000000") == [
        {"ts": "2026-01-01T12:00:00.000000Z", "type": "added", "by": WHO, "to": "inbox"}]


def test_add_never_overwrites_a_job_with_the_same_generated_id(queue: Queue) -> None:
    """Two adds that generate the same id: the second is refused and the first file is untouched."""
    first = add(queue, "echo first", title="Same")
    text = queue.job_path(Stage.INBOX, first).read_text()
    with pytest.raises(JobExists, match=first):
        add(queue, "echo second", title="Same")
    assert queue.job_path(Stage.INBOX, first).read_text() == text


def test_add_finds_the_job_of_its_idempotency_key_in_any_stage(queue: Queue) -> None:
    """The same key and content finds the earlier job even after it moved on, and adds nothing."""
    first = add(queue, "echo k", idempotency_key="deploy-42")
    move_job(queue, first, Action.CANCEL, who=WHO, env={}, now=T0)
    again = add_job(queue, "echo k", {"idempotency-key": "deploy-42"}, job_id=None, now=T0,
                    who=WHO, entropy=99)
    assert (again.job.id, again.created, again.job.stage) == (first, False, Stage.FAILED)
    assert len(queue.snapshot().jobs) == 1


def test_add_same_key_other_content_raises(queue: Queue) -> None:
    """The same idempotency key with another body is an IdempotencyConflict naming the first job."""
    first = add(queue, "echo k", idempotency_key="deploy-42")
    with pytest.raises(IdempotencyConflict, match=first):
        add(queue, "echo other", entropy=7, idempotency_key="deploy-42")
    assert [job.id for job in queue.snapshot().jobs] == [first]


# --- reading ---------------------------------------------------------------------------------

def test_ready_jobs_come_in_priority_then_age_then_id_order(queue: Queue) -> None:
    """list_jobs --ready orders by priority, then the added time, then id."""
    add(queue, job_id="new-medium", at=timedelta(minutes=5))
    add(queue, job_id="old-medium", at=timedelta(minutes=1))
    add(queue, job_id="b-same-age", at=timedelta(minutes=1))
    add(queue, job_id="newest-high", at=timedelta(minutes=9), priority="high")
    listing = list_jobs(queue, now=T0 + timedelta(hours=1), capabilities=None, ready=True)
    assert [job.id for job in listing.jobs] == ["newest-high", "b-same-age", "old-medium",
                                                "new-medium"]


def test_next_waits_for_a_not_before_time_it_is_handed(queue: Queue) -> None:
    """A job retried not before T0+10m is passed over at T0+9m and taken at T0+10m."""
    job_id = add(queue, job_id="retried")
    record(queue, job_id, {"ts": "2026-01-01T12:00:00.000000Z", "type": FINISHED, "by": "w",
                           "action": "retry", "outcome": "engine_failed",
                           "not_before": "2026-01-01T12:10:00.000000Z"})
    early = next_job(queue, now=T0 + timedelta(minutes=9), capabilities=None)
    assert early.chosen is None
    assert [(v.job.id, v.kind) for v in early.verdicts] == [("retried", "not_before")]
    assert "in 60s" in str(early.verdicts[0].reason)
    on_time = next_job(queue, now=T0 + timedelta(minutes=10), capabilities=None)
    assert on_time.chosen is not None and on_time.chosen.id == "retried"


def test_next_skips_a_job_whose_lock_a_building_job_holds(queue: Queue) -> None:
    """An inbox job is passed over while a building job holds its lock, and taken once that job left building."""
    write_job(queue.root, "holder", stage="building", lock="db")
    add(queue, job_id="waiter", lock="db")
    blocked = next_job(queue, now=T0, capabilities=None)
    assert blocked.chosen is None and blocked.verdicts[0].kind == "lock"
    move_job(queue, "holder", Action.CANCEL, who=WHO, env={}, now=T0)
    assert next_job(queue, now=T0, capabilities=None).chosen is not None


def test_show_resolves_each_setting_from_job_or_queue_config(queue: Queue) -> None:
    """show_job gives each setting's value and whether it came from the job or from aq.yaml."""
    config = queue.root / "aq.yaml"
    config.write_text(config.read_text().replace("timeout: 1h", "timeout: 20m"))
    add(queue, job_id="plain")
    add(queue, job_id="tuned", timeout="5m", retry={"max": 2}, review_policy="auto")
    plain = show_job(Queue(queue.root), "plain", now=T0, capabilities=None).resolved
    tuned = show_job(Queue(queue.root), "tuned", now=T0, capabilities=None).resolved
    assert (plain["timeout"].value, plain["timeout"].source) == (1200.0, "queue default")
    assert (plain["engine"].value, plain["engine"].source) == ("shell", "queue default")
    assert (tuned["timeout"].value, tuned["timeout"].source) == (300.0, "job")
    assert (tuned["retry"].value["max"], tuned["retry"].source) == (2, "job")
    assert (tuned["review-policy"].value, tuned["review-policy"].source) == ("auto", "job")


def test_show_gives_the_allowed_moves_and_the_block_reason(queue: Queue) -> None:
    """show_job lists the moves a person may make from the job's stage and, for inbox jobs, the verdict."""
    write_job(queue.root, "in-review", stage="review")
    add(queue, job_id="waits", deps=["in-review"])
    assert set(show_job(queue, "in-review", now=T0, capabilities=None).allowed) == ALLOWED["review"]
    waits = show_job(queue, "waits", now=T0, capabilities=None)
    assert waits.verdict is not None and waits.verdict.reason == "waits for dep in-review (review)"
    assert show_job(queue, "in-review", now=T0, capabilities=None).verdict is None


def test_lint_counts_jobs_and_lists_problems(queue: Queue) -> None:
    """lint returns the number of jobs and one problem per bad thing, none on a sound queue."""
    add(queue, job_id="good")
    assert lint(queue).problems == ()
    write_job(queue.root, "loop-a", deps=["loop-b"])
    write_job(queue.root, "loop-b", deps=["loop-a"])
    write_job(queue.root, "orphan", deps=["gone"])
    result = lint(queue)
    assert result.jobs == 4
    assert result.problems == (
        "queue/inbox/orphan.md: key 'deps': job 'gone' does not exist",
        "dependency cycle: loop-a -> loop-b -> loop-a",
    )


# --- moves -----------------------------------------------------------------------------------

def test_a_move_records_the_time_and_person_it_was_given(queue: Queue) -> None:
    """move_job appends an event with the `now` and `who` it was handed, and commits the move."""
    write_job(queue.root, "ready-to-ship", stage="testing")
    result = move_job(queue, "ready", Action.SHIP, who=WHO, env={}, now=T0 + timedelta(hours=2))
    assert (result.job_id, result.source, result.target) == ("ready-to-ship", Stage.TESTING,
                                                            Stage.SHIPPED)
    assert queue.read_events("ready-to-ship")[-1] == {
        "ts": "2026-01-01T14:00:00.000000Z", "type": "moved", "by": WHO, "from": "testing",
        "to": "shipped", "action": "ship", "why": f"ship by {WHO}"}
    assert git(queue.root, "log", "-1", "--format=%s").strip() == f"aq: ship ready-to-ship by {WHO}"


TARGET = {"promote": "testing", "ship": "shipped", "reject": "failed", "requeue": "inbox",
          "cancel": "failed"}


def test_every_allowed_move_lands_in_its_stage_with_an_event(queue: Queue) -> None:
    """For every stage and every person's move it allows, move_job moves the file and records from/to."""
    pairs = [(stage, action) for stage, actions in ALLOWED.items() for action in sorted(actions)]
    for stage, action in pairs:
        write_job(queue.root, f"{action}-from-{stage}", stage=stage)
    for stage, action in pairs:
        job_id = f"{action}-from-{stage}"
        result = move_job(queue, job_id, Action(action), who=WHO, env={}, now=T0,
                          reason="not good enough" if action == "reject" else None)
        assert (result.source, result.target) == (stage, TARGET[action])
        assert queue.stage_of(job_id) == TARGET[action]
        event = queue.read_events(job_id)[-1]
        assert (event["from"], event["to"], event["action"]) == (stage, TARGET[action], action)
    assert len(pairs) == 11


def test_every_forbidden_move_raises_and_changes_nothing(queue: Queue) -> None:
    """Every person's move a stage does not allow raises MoveRefused naming the stage and the allowed moves, and moves nothing."""
    for stage in ALLOWED:
        write_job(queue.root, f"in-{stage}", stage=stage)
    git(queue.root, "add", "queue")
    git(queue.root, "commit", "-qm", "jobs")
    before = head(queue.root)
    refused = 0
    for stage, allowed in ALLOWED.items():
        for action in {"promote", "ship", "reject", "requeue", "cancel"} - allowed:
            with pytest.raises(MoveRefused, match=f"it is in {stage}; from {stage} a person may: ") as err:
                move_job(queue, f"in-{stage}", Action(action), who=WHO, env={}, now=T0, reason="x")
            named = str(err.value).split("may: ", 1)[1]
            assert set(named.split(", ")) == allowed or (not allowed and "none" in named), named
            refused += 1
    assert refused == 24
    assert {job.id: str(job.stage) for job in queue.snapshot().jobs} == {
        f"in-{stage}": stage for stage in ALLOWED}
    assert head(queue.root) == before


def test_cancel_of_a_claimed_job_ends_its_lease(queue: Queue) -> None:
    """Canceling a building job that a worker holds clears the holder and the lease token."""
    write_job(queue.root, "busy", stage="building")
    record(queue, "busy", {"ts": "2026-01-01T12:00:00.000000Z", "type": CLAIMED, "by": "w1",
                           "from": "inbox", "to": "building", "attempt": 1, "token": "1.w1.abc"})
    assert queue.resolve("busy").state.holder == "w1"
    move_job(queue, "busy", Action.CANCEL, who=WHO, env={}, now=T0)
    job = queue.resolve("busy")
    assert (job.stage, job.state.holder, job.state.token) == (Stage.FAILED, None, None)
    assert job.state.attempt_count == 1


def test_requeue_starts_the_retry_count_afresh(queue: Queue) -> None:
    """A dead-lettered job requeued keeps its attempts but has used no retries."""
    write_job(queue.root, "tired", stage="dead_letter", retry={"max": 1})
    for n in (1, 2):
        record(queue, "tired", {"ts": f"2026-01-01T12:0{n}:00.000000Z", "type": CLAIMED,
                                "by": "w", "attempt": n, "token": f"{n}.w"})
        record(queue, "tired", {"ts": f"2026-01-01T12:0{n}:30.000000Z", "type": FINISHED,
                                "by": "w", "token": f"{n}.w", "outcome": "engine_failed",
                                "action": "retry" if n == 1 else "dead"})
    assert queue.resolve("tired").state.retries_used == 1
    move_job(queue, "tired", Action.REQUEUE, who=WHO, env={}, now=T0)
    job = queue.resolve("tired")
    assert (job.stage, job.state.retries_used, job.state.attempt_count) == (Stage.INBOX, 0, 2)


# --- halt ------------------------------------------------------------------------------------

def test_halt_and_resume_say_whether_they_changed_anything(queue: Queue) -> None:
    """halt and resume return True when they changed the queue and False (with no commit) when not."""
    assert halt(queue, reason="freeze", who=WHO, now=T0) is True
    assert queue.halted() == "freeze"
    assert f"by {WHO} at 2026-01-01T12:00:00" in (queue.qdir / "HALT").read_text()
    halted_at = head(queue.root)
    assert halt(queue, reason="again", who=WHO, now=T0) is False
    assert head(queue.root) == halted_at
    assert resume(queue, who=WHO) is True
    assert queue.halted() is None
    assert resume(queue, who=WHO) is False


def test_a_halted_queue_offers_nothing_and_says_why(queue: Queue) -> None:
    """next_job on a halted queue chooses nothing and gives every ready job the halt as its reason."""
    add(queue, job_id="free")
    halt(queue, reason="freeze", who=WHO, now=T0)
    result = next_job(queue, now=T0, capabilities=None)
    assert result.chosen is None
    assert [(v.job.id, v.kind, v.reason) for v in result.verdicts] == [
        ("free", "halted", "queue halted: freeze")]


def test_events_are_json_lines_one_per_move(queue: Queue) -> None:
    """Each add and move adds exactly one JSON line to the job's event log."""
    job_id = add(queue, job_id="lined")
    move_job(queue, job_id, Action.CANCEL, who=WHO, env={}, now=T0)
    move_job(queue, job_id, Action.REQUEUE, who=WHO, env={}, now=T0)
    lines = queue.events_path(job_id).read_text().splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["added", "moved", "moved"]


# --- logs ------------------------------------------------------------------------------------

def test_following_a_job_not_run_yet_waits_for_its_first_attempt(queue: Queue) -> None:
    """`logs -f` on an inbox job: says once that it waits, looks again on the sleep it is
    handed, and gives the first attempt's log once a worker ran it; a job canceled before it
    ever ran ends the wait."""
    write_job(queue.root, "later", "echo first words", verify="true")
    said: list[str] = []
    looks: list[float] = []

    def sleep(seconds: float) -> None:
        looks.append(seconds)
        if len(looks) == 2:  # meanwhile a worker here takes it and runs it
            assert run_aq("run", "--once", cwd=queue.root).returncode == 0

    ref = first_log(queue, "later", say=said.append, sleep=sleep, poll=0.5)
    assert (ref.job_id, ref.attempt) == ("later", 1)
    assert b"first words" in b"".join(read_log(queue, ref, follow=True))
    assert said == ["later has not started yet: waiting for its first attempt (Ctrl-C to stop)"]
    assert looks == [0.5, 0.5]

    write_job(queue.root, "dropped", "echo never")
    with pytest.raises(LogNotFound, match="dropped was never run"):
        first_log(queue, "dropped", say=said.append, poll=0.0, sleep=lambda _s: move_job(
            queue, "dropped", Action.CANCEL, who=WHO, env={}, now=T0))


def test_read_log_follows_a_running_attempt_until_its_log_is_kept(queue: Queue) -> None:
    """read_log gives the live log, then what is appended at each look (on the sleep it is
    handed), and the last words once the attempt's log is kept; unfollowed, what is there."""
    write_job(queue.root, "busy", stage="building")
    live = RunFiles(queue.running_dir() / "busy", 1).log
    live.parent.mkdir(parents=True)
    live.write_bytes(b"one\n")
    looks: list[float] = []

    def sleep(seconds: float) -> None:
        looks.append(seconds)
        with live.open("ab") as out:
            out.write(b"two\n" if len(looks) == 1 else b"three\n")
        if len(looks) == 2:  # the attempt ends: its log is kept
            kept = queue.logs_dir("busy") / "1.log"
            kept.parent.mkdir(parents=True, exist_ok=True)
            kept.write_bytes(b"")

    ref = LogRef("busy", 1, live, running=True)
    assert b"".join(read_log(queue, ref, follow=True, sleep=sleep, poll=0.5)) == b"one\ntwo\nthree\n"
    assert looks == [0.5, 0.5]
    assert b"".join(read_log(queue, ref, follow=False, sleep=sleep)) == b"one\ntwo\nthree\n"
    assert b"".join(read_log(queue, ref, follow=True, stop=lambda: True, sleep=sleep)) == \
        b"one\ntwo\nthree\n" and len(looks) == 2
