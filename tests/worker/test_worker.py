"""`aq run` end to end: real worker processes, shell-engine jobs, real git, the lifecycle of DESIGN §3 and §6."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from aq.core.events import parse_iso
from aq.store.queue import Queue
from tests.helpers.cli import Ran
from tests.helpers.git import git
from tests.helpers.processes import alive, pid_in, wait_dead
from tests.helpers.queue import configure, events, stage_of, write_job
from tests.helpers.waiting import wait_until
from tests.helpers.workers import Workers

TOKEN_VALUE = "tok-s3cr3t-value-9184"
GHP = "ghp_" + "Wx4" * 12  # a GitHub token by its shape, only ever built at run time by the job

Aq = Callable[..., Ran]


# --- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def out(tmp_path: Path) -> Iterator[Path]:
    """A folder outside the queue where jobs leave what the test checks (and pids, killed after a failed test)."""
    folder = tmp_path / "out"
    folder.mkdir()
    yield folder
    for path in [*folder.glob("*.pid"), *folder.glob("*.child")]:
        pid = pid_in(path)
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)


def long_job(out: Path, name: str = "job") -> str:
    """A body that records its pid and a background child's, says it started, then waits a long time."""
    return (f"sleep 300 &\necho $! > {out}/{name}.child\necho $$ > {out}/{name}.pid\n"
            f"echo {name} is under way\nwait\n")


def engine_dead(out: Path, name: str = "job") -> bool:
    """True once both the script and its background child (both recorded by the job) have gone."""
    pids = [pid_in(out / f"{name}.{kind}") for kind in ("pid", "child")]
    assert None not in pids, f"{name} never recorded its pids"
    return all(wait_dead(pid) for pid in pids if pid)


# --- lifecycle after an attempt ----------------------------------------------------------------

def test_each_outcome_moves_the_job_to_the_stage_the_lifecycle_says(queue_root: Path, aq: Aq) -> None:
    """No verify -> review; verify ok -> testing; auto + verify ok -> shipped; a failure not retried -> failed."""
    write_job(queue_root, "no-verify", "echo built")
    write_job(queue_root, "verify-ok", "echo built", verify="true")
    write_job(queue_root, "auto-ship", "echo built", verify="true", review_policy="auto")
    write_job(queue_root, "verify-bad", "echo built", verify="echo nope; exit 1")
    write_job(queue_root, "engine-bad", "echo broke; exit 7")
    write_job(queue_root, "not-retried", "echo built", verify="exit 1",
              retry={"max": 2, "backoff": "1s", "on": ["timeout"]})
    ran = aq("run", "--drain", "--worker", "w1")
    assert ran.returncode == 0, ran.stderr
    expected = {
        "no-verify": ("review", "submit", "ok"),
        "verify-ok": ("testing", "pass", "ok"),
        "auto-ship": ("shipped", "autoship", "ok"),
        "verify-bad": ("failed", "fail", "verify_failed"),
        "engine-bad": ("failed", "fail", "engine_failed"),
        "not-retried": ("failed", "fail", "verify_failed"),  # retry set, but not on this outcome
    }
    for job_id, (stage, action, outcome) in expected.items():
        assert stage_of(queue_root, job_id) == stage
        [done] = events(queue_root, job_id, "finished")
        assert (done["to"], done["action"], done["outcome"]) == (stage, action, outcome)
        assert done["by"] == "w1"
    listed = {job["id"]: job["stage"] for job in json.loads(aq("ls", "--json").stdout)}
    assert listed == {job_id: stage for job_id, (stage, _, _) in expected.items()}


def test_a_failure_with_retries_left_goes_back_to_the_inbox_with_a_not_before_time(
        queue_root: Path, aq: Aq) -> None:
    """A failed attempt with retry set returns to the inbox, not to be taken before now + backoff."""
    write_job(queue_root, "flaky", "echo try", verify="echo not yet; exit 1",
              retry={"max": 2, "backoff": "30s"})
    assert aq("run", "--once").returncode == 0
    assert stage_of(queue_root, "flaky") == "inbox"
    [done] = events(queue_root, "flaky", "finished")
    assert done["action"] == "retry"
    assert parse_iso(done["not_before"]) - parse_iso(done["ts"]) == timedelta(seconds=30)
    [job] = json.loads(aq("ls", "--json").stdout)
    assert job["not_before"] == done["not_before"]
    assert job["blocked"]["kind"] == "not_before"
    again = aq("run", "--once")  # the retry is not due: nothing to take
    assert "nothing to run" in again.stdout
    assert len(events(queue_root, "flaky", "claimed")) == 1


def test_drain_waits_for_a_due_retry_and_dead_letters_when_retries_run_out(
        queue_root: Path, aq: Aq) -> None:
    """`--drain` waits out a short backoff, runs the retry, and a job out of retries goes to dead_letter."""
    verify = 'case "$AQ_ATTEMPT" in 1) echo alpha broke;; *) echo beta broke;; esac; exit 1'
    write_job(queue_root, "doomed", "echo try", verify=verify, retry={"max": 1, "backoff": "1s"})
    ran = aq("run", "--drain")
    assert ran.returncode == 0, ran.stderr
    assert stage_of(queue_root, "doomed") == "dead_letter"
    first, second = events(queue_root, "doomed", "finished")
    assert (first["action"], first["to"]) == ("retry", "inbox")
    assert (second["action"], second["to"]) == ("dead", "dead_letter")
    assert "retries used" in second["why"]
    claims = events(queue_root, "doomed", "claimed")
    assert [c["attempt"] for c in claims] == [1, 2]
    assert parse_iso(claims[1]["ts"]) >= parse_iso(first["not_before"])


def test_the_same_failure_twice_in_a_row_is_stuck(queue_root: Path, aq: Aq) -> None:
    """Two failures that differ only in numbers end retries early: dead_letter with reason stuck."""
    verify = 'echo "error: widget broken at 0x7f$RANDOM after $RANDOM ms"; exit 1'
    write_job(queue_root, "stuck", "echo try", verify=verify, retry={"max": 5, "backoff": "200ms"})
    assert aq("run", "--drain").returncode == 0
    assert stage_of(queue_root, "stuck") == "dead_letter"
    finished = events(queue_root, "stuck", "finished")
    assert [f["action"] for f in finished] == ["retry", "dead"]
    assert "stuck" in finished[-1]["why"]
    assert finished[0]["fingerprint"] == finished[1]["fingerprint"]


def test_a_retry_prompt_ends_with_the_tail_of_the_previous_failure(
        queue_root: Path, aq: Aq, out: Path) -> None:
    """A prompt engine's second attempt gets the body, then the end of the first attempt's failure."""
    configure(queue_root, engines={"cat": {"cmd": ["cat", "{prompt_file}"], "input": "prompt"}})
    verify = (f'cp "$AQ_PROMPT_FILE" {out}/prompt-$AQ_ATTEMPT; '
              "echo 'FAIL: the frobnicator rejected the input'; exit 1")
    write_job(queue_root, "frob", "Make the frobnicator accept input.", engine="cat",
              verify=verify, retry={"max": 1, "backoff": "200ms"})
    assert aq("run", "--drain").returncode == 0
    first_tail = events(queue_root, "frob", "finished")[0]["tail"]
    assert "FAIL: the frobnicator rejected the input" in first_tail
    assert (out / "prompt-1").read_text().strip() == "Make the frobnicator accept input."
    retry_prompt = (out / "prompt-2").read_text()
    assert retry_prompt.startswith("Make the frobnicator accept input.")
    assert retry_prompt.index("accept input.") < retry_prompt.index(first_tail)
    assert retry_prompt.rstrip().endswith("Fix the cause of that failure.")
    assert first_tail in aq("logs", "frob", "--attempt", "2").stdout  # cat printed its prompt


def test_run_once_runs_exactly_one_job_the_first_in_order(queue_root: Path, aq: Aq) -> None:
    """`aq run --once` claims one job (the highest priority), runs it and exits."""
    write_job(queue_root, "low-one", "echo low", priority="low")
    write_job(queue_root, "high-one", "echo high", priority="high")
    write_job(queue_root, "medium-one", "echo medium")
    ran = aq("run", "--once")
    assert ran.returncode == 0, ran.stderr
    assert "1 claimed" in ran.stderr
    assert stage_of(queue_root, "high-one") == "review"
    assert stage_of(queue_root, "low-one") == stage_of(queue_root, "medium-one") == "inbox"


# --- engines -----------------------------------------------------------------------------------

def test_the_engine_gets_the_aq_environment_and_its_placeholders(
        queue_root: Path, aq: Aq, out: Path) -> None:
    """AQ_* reach the engine; {prompt}/{prompt_file} are filled in; yolo: true adds the yolo args."""
    script = ('printf %s "${1#--prompt=}" > "$0/$AQ_JOB_ID.prompt"; shift 2; '
              'printf "%s\\n" "$@" > "$0/$AQ_JOB_ID.rest"')
    configure(queue_root, engines={"argdump": {
        "cmd": ["bash", "-c", script, str(out), "--prompt={prompt}", "{prompt_file}"],
        "yolo": ["--approve-everything"]}})
    write_job(queue_root, "env-job", f'env | grep ^AQ_ > {out}/env\ncp "$AQ_PROMPT_FILE" {out}/prompt')
    write_job(queue_root, "bold", "Refactor boldly.", engine="argdump", yolo=True)
    write_job(queue_root, "careful", "Refactor carefully.", engine="argdump")
    assert aq("run", "--drain", "--worker", "w-env").returncode == 0
    env = dict(line.split("=", 1) for line in (out / "env").read_text().splitlines())
    assert env["AQ_JOB_ID"] == "env-job"
    assert env["AQ_ATTEMPT"] == "1"
    assert Path(env["AQ_QUEUE"]) == queue_root.resolve()
    assert env["AQ_WORKER_ID"] == "w-env"
    assert env["AQ_PROMPT_FILE"].endswith(".prompt")
    assert f"env | grep ^AQ_ > {out}/env" in (out / "prompt").read_text()  # the shell body itself
    assert (out / "bold.prompt").read_text().strip() == "Refactor boldly."
    assert (out / "bold.rest").read_text().split() == ["--approve-everything"]
    assert (out / "careful.rest").read_text().split() == []


def test_an_engine_that_is_not_installed_fails_that_job_and_the_worker_goes_on(
        queue_root: Path, aq: Aq) -> None:
    """engine_missing fails the job with a reason naming the program; the next job still runs."""
    configure(queue_root, engines={"phantom": {"cmd": ["aq-test-phantom-agent", "--", "{prompt}"]}})
    write_job(queue_root, "a-phantom", "do it", engine="phantom", priority="critical")
    write_job(queue_root, "b-ghost", "do it", engine="ghost", priority="high")
    write_job(queue_root, "c-fine", "echo fine", priority="low")
    ran = aq("run", "--drain")
    assert ran.returncode == 0, ran.stderr
    assert "Traceback" not in ran.stderr
    for job_id, words in (("a-phantom", "'aq-test-phantom-agent', which is not installed"),
                          ("b-ghost", "'ghost' is not defined")):
        assert stage_of(queue_root, job_id) == "failed"
        [done] = events(queue_root, job_id, "finished")
        assert done["outcome"] == "engine_missing"
        assert words in done["detail"]
        assert words in aq("logs", job_id).stdout
    assert stage_of(queue_root, "c-fine") == "review"


def test_a_prompt_too_long_for_the_command_line_fails_the_job_not_the_attempt_thread(
        queue_root: Path, aq: Aq) -> None:
    """A `{prompt}` engine given a prompt over the OS argument limit fails that job with a reason; nothing stays in building."""
    configure(queue_root, engines={"echoer": {"cmd": ["echo", "--", "{prompt}"]}})
    write_job(queue_root, "huge", "# A pasted log\n" + "x" * 200_000, engine="echoer")
    ran = aq("run", "--drain")
    assert "Traceback" not in ran.stderr
    assert list((queue_root / "queue/building").glob("*.md")) == []
    assert stage_of(queue_root, "huge") == "failed"


def test_timeout_and_budget_wall_stop_the_script_and_its_children(
        queue_root: Path, aq: Aq, out: Path) -> None:
    """A job past `timeout` or `budget.wall` ends as timeout and its whole process group is dead."""
    for job_id, keys in (("slow-timeout", {"timeout": "2s"}),
                         ("slow-budget", {"budget": {"wall": "2s"}})):
        body = (f"sleep 300 &\necho $! > {out}/{job_id}.child\n"
                f"echo $$ > {out}/{job_id}.pid\nsleep 300\n")
        write_job(queue_root, job_id, body, **keys)
    ran = aq("run", "--drain", "--max", "2", timeout=90)
    assert ran.returncode == 0, ran.stderr
    for job_id in ("slow-timeout", "slow-budget"):
        assert stage_of(queue_root, job_id) == "failed"
        [done] = events(queue_root, job_id, "finished")
        assert done["outcome"] == "timeout"
        assert engine_dead(out, job_id)


# --- logs and artifacts ------------------------------------------------------------------------

def test_logs_prints_the_latest_attempt_or_the_one_asked_for(queue_root: Path, aq: Aq) -> None:
    """`aq logs JOB` prints the last attempt's log; `--attempt N` picks attempt N."""
    body = 'echo "output of attempt #$AQ_ATTEMPT"\necho second line\nexit 1'
    write_job(queue_root, "chatty", body, retry={"max": 1, "backoff": "200ms"})
    assert aq("run", "--drain").returncode == 0
    latest, first = aq("logs", "chatty"), aq("logs", "chat", "--attempt", "1")
    assert latest.returncode == first.returncode == 0
    assert "output of attempt #2" in latest.stdout and "output of attempt #1" not in latest.stdout
    assert "output of attempt #1" in first.stdout and "output of attempt #2" not in first.stdout
    assert "second line" in first.stdout
    assert first.stdout == (queue_root / "queue/.logs/chatty/1.log").read_text()
    missing = aq("logs", "chatty", "--attempt", "3")
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "attempts 1 to 2" in missing.stderr


def test_secrets_never_reach_logs_events_or_git(queue_root: Path, aq: Aq, out: Path) -> None:
    """A secret env var's value and a ghp_ token printed by a job appear nowhere in the queue or its history."""
    work = out / "work"
    work.mkdir()
    leak = f'echo "token=$MY_API_TOKEN"; p=ghp_; echo "gh=${{p}}{GHP[4:]}"'
    write_job(queue_root, "leaky", f"{leak}\n{leak} >&2\n({leak}) > leaked.txt\n",
              cwd=str(work), verify=f"{leak}; exit 1", artifacts=["leaked.txt"])
    ran = aq("run", "--drain", env={"MY_API_TOKEN": TOKEN_VALUE})
    assert ran.returncode == 0, ran.stderr
    assert stage_of(queue_root, "leaky") == "failed"
    assert "token=[REDACTED]" in aq("logs", "leaky").stdout
    kept = [p for p in (queue_root / "queue").rglob("*") if p.is_file()]
    assert any(p.name == "leaked.txt" for p in kept)
    history = git(queue_root, "log", "-p", "--all") + git(queue_root, "grep", "-I", "-e", "token=", "HEAD")
    assert "token=[REDACTED]" in history
    for text in [p.read_text(errors="replace") for p in kept] + [history]:
        assert TOKEN_VALUE not in text
        assert GHP not in text
    for secret in (TOKEN_VALUE, GHP):
        found = subprocess.run(["git", "grep", "-F", secret, *git(queue_root, "rev-list", "--all").split()],
                               cwd=queue_root, capture_output=True, text=True, timeout=60)
        assert found.returncode == 1, found.stdout  # 1: no match in any commit


def test_a_log_over_log_max_is_capped_with_a_cut_marker(queue_root: Path, aq: Aq) -> None:
    """The attempt log kept in the queue stays near log_max and says how much was cut from the middle."""
    configure(queue_root, log_max="4KiB")
    write_job(queue_root, "loud", 'for i in $(seq 5000); do echo "row $i of a long output"; done')
    assert aq("run", "--drain").returncode == 0
    kept = (queue_root / "queue/.logs/loud/1.log").read_text()
    assert len(kept.encode()) < 3 * 4096
    assert "bytes cut to keep this log under 4096 bytes" in kept
    assert "row 1 of a long output" in kept and "row 5000 of a long output" in kept
    assert aq("logs", "loud").stdout == kept


def test_artifacts_are_kept_with_the_attempt_and_listed_by_show(
        queue_root: Path, aq: Aq, out: Path) -> None:
    """Files matching `artifacts` are copied to queue/.logs/<id>/<n>/, committed, and listed in show --json."""
    work = out / "work"
    work.mkdir()
    body = "mkdir -p build\necho 'all green' > build/report.txt\necho '{}' > build/data.json"
    write_job(queue_root, "builder", body, cwd=str(work), artifacts=["build/*.txt"])
    assert aq("run", "--drain").returncode == 0
    copy = queue_root / "queue/.logs/builder/1/build/report.txt"
    assert copy.read_text() == "all green\n"
    assert not (queue_root / "queue/.logs/builder/1/build/data.json").exists()
    shown = json.loads(aq("show", "builder", "--json").stdout)
    assert shown["attempt_log"][0]["artifacts"] == ["queue/.logs/builder/1/build/report.txt"]
    assert "queue/.logs/builder/1/build/report.txt" in git(queue_root, "ls-files", "queue/.logs")


def test_the_failure_tail_kept_in_the_event_log_respects_log_max(queue_root: Path, aq: Aq) -> None:
    """A failure whose last lines are huge (one long line, progress bars) does not put them whole into events."""
    configure(queue_root, log_max="4KiB")
    write_job(queue_root, "minified", "echo built",
              verify="head -c 200000 /dev/zero | tr '\\0' y; echo; exit 1")
    assert aq("run", "--drain").returncode == 0
    assert len((queue_root / "queue/.logs/minified/1.log").read_bytes()) < 3 * 4096  # the log is capped
    [done] = events(queue_root, "minified", "finished")
    assert len(done["tail"]) <= 4096


def test_an_artifact_with_a_stray_non_utf8_byte_is_still_scrubbed(
        queue_root: Path, aq: Aq, out: Path) -> None:
    """A text artifact holding one Latin-1 byte and a secret is kept with the secret redacted."""
    work = out / "work"
    work.mkdir()
    body = "printf 'caf\\xe9 token=%s\\n' \"$MY_API_TOKEN\" > notes.log"
    write_job(queue_root, "latin", body, cwd=str(work), artifacts=["notes.log"])
    assert aq("run", "--drain", env={"MY_API_TOKEN": TOKEN_VALUE}).returncode == 0
    assert TOKEN_VALUE.encode() in (work / "notes.log").read_bytes()  # the job did write it
    kept = (queue_root / "queue/.logs/latin/1/notes.log").read_bytes()
    assert TOKEN_VALUE.encode() not in kept


# --- cancel and signals ------------------------------------------------------------------------

def test_cancel_stops_a_running_attempt_and_the_late_result_is_only_a_stale_event(
        queue_root: Path, aq: Aq, workers: Workers, out: Path) -> None:
    """`aq cancel` on a running job kills its engine; the job stays in failed (canceled), the worker's result is stale_result."""
    write_job(queue_root, "endless", long_job(out))
    worker = workers.start("--drain", "--worker", "w-cancel")
    assert wait_until(lambda: pid_in(out / "job.pid") is not None), workers.stderr(worker)
    assert wait_until(lambda: "job is under way" in aq("logs", "endless").stdout)  # streamed live
    canceled = aq("cancel", "endless")
    assert canceled.returncode == 0, canceled.stderr
    worker.wait(timeout=60)
    assert engine_dead(out)
    assert stage_of(queue_root, "endless") == "failed"
    log = events(queue_root, "endless")
    assert [e["type"] for e in log] == ["claimed", "moved", "stale_result"]
    assert (log[1]["action"], log[1]["why"], log[1]["to"]) == ("cancel", "canceled", "failed")
    assert log[2]["token"] == log[0]["token"]
    assert "1 stale" in workers.stderr(worker)
    assert "job is under way" in aq("logs", "endless").stdout  # the log of record is kept


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_signal_to_the_worker_puts_its_running_jobs_back_in_the_inbox(
        queue_root: Path, workers: Workers, out: Path, sig: signal.Signals) -> None:
    """TERM, or INT to its process group as Ctrl-C sends it: engines die, jobs go back to the inbox as interrupted (not a retry), the worker exits."""
    names = ("first", "second")
    for name in names:
        write_job(queue_root, name, long_job(out, name), retry={"max": 1, "backoff": "1s"})
    worker = workers.start("--poll", "200ms", "--max", "2", "--worker", "w-sig",
                           new_session=True)
    assert wait_until(lambda: all(pid_in(out / f"{n}.pid") for n in names)), workers.stderr(worker)
    if sig is signal.SIGINT:
        os.killpg(worker.pid, sig)  # the worker leads its own group: this reaches nothing else
    else:
        worker.send_signal(sig)
    assert worker.wait(timeout=60) == (130 if sig is signal.SIGINT else 0)
    assert list((queue_root / "queue/building").glob("*.md")) == []
    state = Queue(queue_root).snapshot().by_id()
    for name in names:
        assert engine_dead(out, name)
        assert stage_of(queue_root, name) == "inbox"
        [done] = events(queue_root, name, "finished")
        assert (done["outcome"], done["action"], done["to"]) == ("interrupted", "reclaim", "inbox")
        assert sig.name in done["why"] and "not counted as a retry" in done["why"]
        assert done["not_before"] is None
        assert done["graceful"] is True  # a person's stop: not counted toward max_reclaims
        assert (state[name].state.retries_used, state[name].state.reclaims) == (0, 0)
    assert "Traceback" not in workers.stderr(worker)
    assert git(queue_root, "status", "--porcelain", "queue") == ""


def test_workers_stopped_with_term_just_after_claiming_never_dead_letter_the_job(
        queue_root: Path, workers: Workers, out: Path) -> None:
    """A graceful stop is not the job's fault: three workers, each stopped with TERM as soon as
    it has claimed the job (max_reclaims 3), leave it in the inbox with no reclaim counted."""
    configure(queue_root, max_reclaims=3)
    write_job(queue_root, "patient", long_job(out))
    for n in range(3):
        worker = workers.start("--poll", "200ms", "--worker", f"w-stop{n}")
        assert wait_until(lambda: stage_of(queue_root, "patient") == "building"), workers.stderr(worker)
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        assert stage_of(queue_root, "patient") == "inbox", workers.stderr(worker)
    done = events(queue_root, "patient", "finished")
    assert [(e["outcome"], e["action"], e["to"], e.get("graceful")) for e in done] == [
        ("interrupted", "reclaim", "inbox", True)] * 3
    assert Queue(queue_root).snapshot().by_id()["patient"].state.reclaims == 0


def test_an_idle_worker_exits_on_term(queue_root: Path, workers: Workers) -> None:
    """A worker waiting for work stops at once on TERM, without touching the queue."""
    (queue_root / "queue/inbox/broken.md").write_text("---\nprioritty: high\n---\necho x\n")
    worker = workers.start("--poll", "30s")
    assert wait_until(lambda: "skipping" in workers.stderr(worker))  # it has looked once
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    assert "0 claimed" in workers.stderr(worker)


def claim_hook(root: Path, marker: Path) -> None:
    """A post-commit hook that holds each claim's commit open for a second, so a signal lands in it."""
    hook = root / ".git/hooks/post-commit"
    hook.write_text(f'#!/bin/sh\ncase "$(git log -1 --format=%s)" in\n'
                    f'  "aq: claim "*) touch {marker}; sleep 1;;\nesac\n')
    hook.chmod(0o755)


def test_a_signal_during_a_claim_still_stops_the_job_it_claimed(
        queue_root: Path, workers: Workers, out: Path) -> None:
    """TERM that arrives while the worker is committing its claim still sends that job back to the inbox."""
    claim_hook(queue_root, out / "claiming")
    write_job(queue_root, "unlucky", long_job(out), timeout="3s")
    worker = workers.start("--poll", "200ms", "--worker", "w-race")
    assert wait_until((out / "claiming").exists), workers.stderr(worker)
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)
    started = [pid_in(out / f"job.{kind}") for kind in ("pid", "child")]
    assert all(wait_dead(pid) for pid in started if pid)  # if the engine started at all, it is gone
    assert stage_of(queue_root, "unlucky") == "inbox"
    assert [e["outcome"] for e in events(queue_root, "unlucky", "finished")] == ["interrupted"]


def test_ctrl_c_during_a_claim_commit_leaves_no_job_in_building(
        queue_root: Path, workers: Workers, out: Path) -> None:
    """Ctrl-C (INT to the worker's whole process group) while a claim commits leaves the job in the inbox."""
    claim_hook(queue_root, out / "claiming")
    write_job(queue_root, "unlucky", long_job(out), timeout="3s")
    worker = workers.start("--poll", "200ms", "--worker", "w-race", new_session=True)
    assert wait_until((out / "claiming").exists), workers.stderr(worker)
    os.killpg(worker.pid, signal.SIGINT)  # what a terminal does: git, run by the worker, gets it too
    worker.wait(timeout=60)
    assert list((queue_root / "queue/building").glob("*.md")) == [], workers.stderr(worker)
    assert stage_of(queue_root, "unlucky") == "inbox"


# --- bad input ---------------------------------------------------------------------------------

BAD_FILES = {
    "bad-yaml.md": ("---\npriority: [high\n---\necho x\n", "not valid YAML"),
    "unknown-key.md": ("---\nprioritty: high\n---\necho x\n", "did you mean 'priority'"),
    "bad-duration.md": ("---\ntimeout: soonish\n---\necho x\n", "'soonish'"),
    "bad-priority.md": ("---\npriority: urgent\n---\necho x\n", "'urgent' is not a priority"),
    "self-dep.md": ("---\ndeps: [self-dep]\n---\necho x\n", "depends on itself"),
    "Bad Name.md": ("echo x\n", "not a job id"),
}


def test_malformed_inbox_files_get_one_warning_each_and_the_good_jobs_run(
        queue_root: Path, aq: Aq) -> None:
    """Bad YAML, unknown keys, bad values, a self-dep or a bad file name never stop a worker."""
    for name, (text, _) in BAD_FILES.items():
        (queue_root / "queue/inbox" / name).write_text(text)
    write_job(queue_root, "good-one", "echo one")
    write_job(queue_root, "good-two", "echo two")
    ran = aq("run", "--drain")
    assert ran.returncode == 0, ran.stderr
    assert "Traceback" not in ran.stderr
    assert stage_of(queue_root, "good-one") == stage_of(queue_root, "good-two") == "review"
    lines = ran.stderr.splitlines()
    for name, (_, problem) in BAD_FILES.items():
        assert (queue_root / "queue/inbox" / name).exists()
        naming = [line for line in lines if f"queue/inbox/{name}" in line]
        assert len(naming) == 1, (name, ran.stderr)
        assert problem in naming[0], naming[0]
    key_named = {"unknown-key.md": "prioritty", "bad-duration.md": "timeout",
                 "bad-priority.md": "priority", "self-dep.md": "deps"}
    for name, key in key_named.items():
        assert any(f"queue/inbox/{name}" in line and key in line for line in lines), name


def test_a_log_that_cannot_be_written_costs_the_log_not_the_result(
        queue_root: Path, aq: Aq) -> None:
    """queue/.logs/<id> a file where a folder must be (a real write error, even as root): the
    job still moves, its finished event says the log was not kept and why, stderr says so in
    one line, and the worker goes on to the next job."""
    write_job(queue_root, "nolog", "echo one")
    (queue_root / "queue/.logs/nolog").write_text("a file, not a folder\n")
    write_job(queue_root, "next", "echo two")
    ran = aq("run", "--drain")
    assert ran.returncode == 0, ran.stderr
    assert "Traceback" not in ran.stderr
    said = [line for line in ran.stderr.splitlines() if "nolog" in line]
    assert len(said) == 1 and "log of attempt 1 was not kept" in said[0], ran.stderr
    assert "queue/.logs/nolog/1.log: Not a directory" in said[0]
    assert stage_of(queue_root, "nolog") == stage_of(queue_root, "next") == "review"
    finished = events(queue_root, "nolog", "finished")
    assert len(finished) == 1 and finished[0]["log"] is None
    assert finished[0]["log_not_kept"] == "queue/.logs/nolog/1.log: Not a directory"
    assert events(queue_root, "next", "finished")[0]["log"] == "queue/.logs/next/1.log"
    assert "log not kept: queue/.logs/nolog/1.log: Not a directory" in aq("show", "nolog").stdout
    assert git(queue_root, "status", "--porcelain", "queue/.events") == ""  # recorded and committed
