"""aq fsck's checks of what HEAD holds (aq.usecases.checks)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from aq.store.queue import Queue
from tests.helpers.cli import aq_env, run_aq
from tests.helpers.git import git_in
from tests.helpers.queue import write, write_job


def test_an_event_log_whose_job_file_was_removed_by_hand_is_named(queue_root: Path) -> None:
    """A job file deleted and committed by hand left its event log: fsck said nothing of a job
    whose history is there and whose file is nowhere."""
    assert run_aq("add", "--id", "gone", "--body", "echo hi", cwd=queue_root).returncode == 0
    assert run_aq("add", "--id", "kept", "--body", "echo hi", cwd=queue_root).returncode == 0
    assert run_aq("fsck", cwd=queue_root).returncode == 0
    git_in(queue_root, "rm", "-q", "queue/inbox/gone.md")
    git_in(queue_root, "commit", "-qm", "a person removes a job by hand")
    ran = run_aq("fsck", cwd=queue_root)
    assert ran.returncode == 1
    assert ran.stdout.splitlines()[:1] == [
        "HEAD: queue/.events/gone.jsonl: the event log of job gone, whose file is in no stage "
        "nor the archive: put the file back from git history (git log -- 'queue/*/gone.md'), "
        "or remove the log"], ran.stdout


def test_lint_names_every_engine_a_job_could_be_routed_to_that_does_not_exist(queue_root: Path) -> None:
    """An engine class listing an engine aq.yaml does not define, a profile naming one, and a
    job's engine-class that names no engines at all: each failed only when a worker ran the
    job (or never picked it), and lint said nothing."""
    config = queue_root / "aq.yaml"
    config.write_text(config.read_text().replace(
        "\n  coding-agent: [", "\n  fast: [shell, nosuch]\n  coding-agent: [", 1).replace(
        "default_engine: shell", "default_engine: absent"))
    write(queue_root, "profiles/p.md", "---\nengine: gone\nprefers-engine: [zzz]\n---\n")
    write(queue_root, "profiles/q.md", "---\nengine-class: unlisted\n---\n")
    write_job(queue_root, "odd", engine_class="oracle")
    write_job(queue_root, "fine", engine_class="fast")
    ran = run_aq("lint", cwd=queue_root)
    assert ran.returncode == 1
    known = ("(known: aider, amp, claude, codex, copilot, cursor-agent, devin, gemini, goose, "
             "opencode, qwen, shell): add it under engines: in aq.yaml")
    classes = "list them in aq.yaml engine_classes or the profile's prefers-engine"
    assert ran.stdout.splitlines() == [
        f"aq.yaml: key 'default_engine': engine 'absent' is not defined {known}",
        f"aq.yaml: key 'engine_classes.fast': engine 'nosuch' is not defined {known}",
        f"profiles/p.md: key 'engine': engine 'gone' is not defined {known}",
        f"profiles/p.md: key 'prefers-engine': engine 'zzz' is not defined {known}",
        f"profiles/q.md: key 'engine-class': engine-class 'unlisted' names no engines: {classes}",
        f"queue/inbox/odd.md: key 'engine-class': engine-class 'oracle' names no engines: {classes}",
    ], ran.stdout
    assert ran.stderr.strip() == "2 jobs, 6 problem(s)"


def test_add_refuses_an_engine_class_that_names_no_engines_unless_forced(queue_root: Path) -> None:
    write(queue_root, "job.md", "---\ntitle: Odd\nengine-class: oracle\n---\nrun it\n")
    ran = run_aq("add", "job.md", cwd=queue_root)
    assert (ran.returncode, ran.stdout) == (1, "")
    assert ran.stderr.strip() == (
        "aq: job.md: key 'engine-class': engine-class 'oracle' names no engines: list them in "
        "aq.yaml engine_classes or the profile's prefers-engine, or add with --force")
    assert not list((queue_root / "queue" / "inbox").glob("*.md"))
    assert run_aq("add", "job.md", "--force", cwd=queue_root).returncode == 0
    write(queue_root, "profiles/p.md", "---\nprefers-engine: [shell]\n---\n")
    write(queue_root, "served.md", "---\ntitle: Served\nengine-class: oracle\nprofile: p\n---\nrun it\n")
    assert run_aq("add", "served.md", cwd=queue_root).returncode == 0


def test_a_folder_named_like_a_job_file_is_a_problem_not_silence(queue_root: Path) -> None:
    """A folder `queue/inbox/x.md` (unpacked there, or made by mistake) was skipped without a
    word: lint passed, ls showed nothing, and the job someone meant was never run."""
    (queue_root / "queue" / "inbox" / "meant.md").mkdir()
    line = ("queue/inbox/meant.md: a folder where a job file belongs; aq reads no folders in "
            "queue/inbox/: move it out of queue/")
    ran = run_aq("lint", cwd=queue_root)
    assert (ran.returncode, ran.stdout.splitlines()) == (1, [line])
    listed = run_aq("ls", cwd=queue_root)
    assert listed.returncode == 0 and f"aq: {line}" in listed.stderr


def test_a_folder_where_an_event_log_belongs_is_named_by_lint_and_fsck(queue_root: Path) -> None:
    """The worker could not claim the job (it said why), yet lint and fsck passed."""
    assert run_aq("add", "--id", "j1", "--body", "echo hi", cwd=queue_root).returncode == 0
    log = queue_root / "queue" / ".events" / "j1.jsonl"
    log.unlink()
    log.mkdir()
    line = ("queue/.events/j1.jsonl: a folder, not a regular file; aq reads and writes only "
            "regular files inside the queue: remove it or put a regular file there")
    for check in ("lint", "fsck"):
        ran = run_aq(check, cwd=queue_root)
        assert (ran.returncode, ran.stdout.splitlines()) == (1, [line]), (check, ran.stdout)


def test_lint_names_an_event_log_whose_job_file_is_gone_before_it_is_committed(
        queue_root: Path) -> None:
    """fsck named it at HEAD; lint, run on the working tree before a commit, said nothing."""
    assert run_aq("add", "--id", "gone", "--body", "echo hi", cwd=queue_root).returncode == 0
    (queue_root / "queue" / "inbox" / "gone.md").unlink()
    ran = run_aq("lint", cwd=queue_root)
    assert (ran.returncode, ran.stdout.splitlines()) == (1, [
        "queue/.events/gone.jsonl: the event log of job gone, whose file is in no stage nor the "
        "archive: put the file back from git history (git log -- 'queue/*/gone.md'), or remove "
        "the log"])


def test_lint_does_not_call_the_log_of_a_job_being_added_an_orphan(queue_root: Path) -> None:
    """A job being added has its event log written before its file, under the queue's lock:
    lint, which reads without the lock, said "remove the log" of a live job on a busy queue.
    It now looks again under the lock before it names a log whose job is nowhere."""
    queue = Queue(queue_root)
    with queue.lock():
        log = queue_root / "queue" / ".events" / "new.jsonl"
        log.write_text('{"ts": "2026-12-06T00:00:00Z", "type": "added", "by": "me"}\n')
        linting = subprocess.Popen([sys.executable, "-m", "aq", "lint"], cwd=queue_root,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=aq_env(None))
        time.sleep(1.0)  # lint lists the logs and waits for the lock (on a slow machine it may
        # not get so far, and then its listing sees the file: it must pass either way)
        write_job(queue_root, "new")
    out, err = linting.communicate(timeout=60)
    assert (linting.returncode, out) == (0, ""), err


def test_lint_names_a_retry_ladder_or_samples_engine_that_does_not_exist(queue_root: Path) -> None:
    """aq add refused them; a job dropped into the inbox with them passed lint, and failed (or
    ran a sample nowhere) only at run time."""
    write_job(queue_root, "esc", retry={"max": 1, "escalate": ["nosuch"]})
    write_job(queue_root, "sm", samples=2, engines=["gone", "shell"], repo=".", verify="true")
    ran = run_aq("lint", cwd=queue_root)
    known = ("(known: aider, amp, claude, codex, copilot, cursor-agent, devin, gemini, goose, "
             "opencode, qwen, shell): add it under engines: in aq.yaml")
    assert (ran.returncode, ran.stdout.splitlines()) == (1, [
        f"queue/inbox/esc.md: key 'retry': retry.escalate: engine 'nosuch' is not defined {known}",
        f"queue/inbox/sm.md: key 'engines': engines: engine 'gone' is not defined {known}"])


def test_lint_with_a_broken_aq_yaml_still_checks_the_rest(queue_root: Path) -> None:
    """A broken aq.yaml ended lint at its first job (the engine checks read it): the other
    problems went unsaid and --json gave an error instead of the list."""
    write_job(queue_root, "fine")
    (queue_root / "queue" / "inbox" / "meant.md").mkdir()
    config = queue_root / "aq.yaml"
    config.write_text(config.read_text() + "\ntimeout: banana\n")
    ran = run_aq("lint", cwd=queue_root)
    assert ran.returncode == 1
    assert [line.split(":")[0] for line in ran.stdout.splitlines()] == [
        str(queue_root / "aq.yaml"), "queue/inbox/meant.md"], ran.stdout


def test_lint_names_a_review_gate_of_a_profile_or_aq_yaml_naming_what_is_not_there(
        queue_root: Path) -> None:
    """A job took its review gate from its profile or aq.yaml, ran, passed its verify, and then
    waited for ever on a review job no worker could pick; lint named it only after the run."""
    write(queue_root, "profiles/checked.md", "---\nreview: {profile: nosuch, engine: gone}\n---\n")
    config = queue_root / "aq.yaml"
    config.write_text(config.read_text() + "\nreview: {profile: absent}\n")
    ran = run_aq("lint", cwd=queue_root)
    assert ran.returncode == 1
    assert [line for line in ran.stdout.splitlines() if "'review'" in line] == [
        "aq.yaml: key 'review': profile 'absent' does not exist (known: backend-engineer, checked, "
        "developer, docs-writer, frontend-engineer, qa, reviewer, ui-designer, ux-designer); add "
        "profiles/absent.md",
        "profiles/checked.md: key 'review': profile 'nosuch' does not exist (known: "
        "backend-engineer, checked, developer, docs-writer, frontend-engineer, qa, reviewer, "
        "ui-designer, ux-designer); add profiles/nosuch.md",
        "profiles/checked.md: key 'review': review.engine 'gone' is not defined (known: aider, amp, "
        "claude, codex, copilot, cursor-agent, devin, gemini, goose, opencode, qwen, shell): add "
        "it under engines: in aq.yaml"], ran.stdout
