"""`aq add` refuses bad input in one line with the documented exit code (1: the content is
invalid; 2: the command line is wrong), never an internal error, and writes nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from aq.errors import ExitStatus
from tests.helpers.cli import run_aq
from tests.helpers.fleet import fleet_in
from tests.helpers.git import git

FILES: dict[str, bytes] = {
    "typo.md": b"---\nprioritty: high\n---\nFix it.\n",
    "binary.md": b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00",
    "latin1.md": b"---\ntitle: Caf\xe9\n---\nbad byte\n",
    "ghost-engine.md": b"---\nengine: no-such-engine\n---\nRun it.\n",
    # YAML reads these names as numbers: they were let through unchecked and added
    "number-engine.md": b"---\nengine: 123\n---\nRun it.\n",
    "number-profile.md": b"---\nprofile: 42\n---\nRun it.\n",
    "number-class.md": b"---\nengine-class: 7\n---\nRun it.\n",
    "number-samples.md": b"---\nengines: [7, shell]\n---\nRun it.\n",
}


@pytest.mark.parametrize(("args", "exit_code", "message"), [
    (["typo.md"], 1, "aq: typo.md: key 'prioritty': unknown key (did you mean 'priority'?); known keys: "),
    (["binary.md"], 1, "aq: binary.md: looks binary (it holds NUL bytes): a job is a Markdown text file"),
    (["latin1.md"], 1, "aq: latin1.md: is not UTF-8 text (byte 0xe9 at offset 14): save it as UTF-8"),
    (["ghost-engine.md"], 1, "aq: ghost-engine.md: key 'engine': engine 'no-such-engine' is not defined"),
    (["number-engine.md"], 1, "aq: number-engine.md: key 'engine': engine '123' is not defined"),
    (["number-profile.md"], 1, "aq: number-profile.md: key 'profile': profile '42' does not exist"),
    (["number-class.md"], 1, "aq: number-class.md: key 'engine-class': engine-class '7' names no engines"),
    (["number-samples.md"], 1, "aq: number-samples.md: key 'engines': engines: engine '7' is not defined"),
    (["--body", "x", "--engine", "no-such-engine"], 2, "aq: --engine: engine 'no-such-engine' is not defined"),
    (["--body", "x", "--profile", "nope"], 2, "aq: --profile: profile 'nope' does not exist"),
    (["--body", "x", "--id", ""], 2, "aq: --id is empty: give a job id"),
    (["--body", "x", "--deps", ",,"], 2, "aq: --deps ',,' names no job"),
    # the job waited for ever ("dep nosuch does not exist"); lint named it, add took it
    (["--body", "x", "--deps", "nosuch"], 2, "aq: --deps: job 'nosuch' does not exist (nor in the "
     "archive): the job would wait for it for ever; add it first, or add with --force"),
    (["--body", "x", "--timeout", "45x"], 2, "aq: --timeout: '45x' is not a duration"),
    (["--body", "x", "--retry-backoff", "soon"], 2, "aq: --retry-max/--retry-backoff: 'soon' is not a duration"),
    (["no-such-file.md"], 2, "aq: cannot read no-such-file.md: No such file or directory"),
])
def test_bad_input_to_add_is_one_clear_line_with_its_exit_code(
        queue_root: Path, args: list[str], exit_code: int, message: str) -> None:
    """Each bad input gets its own one-line refusal and exit code, and the queue is untouched."""
    for name, data in FILES.items():
        (queue_root / name).write_bytes(data)
    before = subprocess.run(["git", "status", "--porcelain"], cwd=queue_root, capture_output=True,
                            text=True, check=True).stdout
    ran = run_aq("add", *args, cwd=queue_root)
    assert (ran.returncode, ran.stdout) == (exit_code, ""), ran
    assert ran.stderr.startswith(message) and ran.stderr.count("\n") == 1, ran.stderr
    assert "internal error" not in ran.stderr and "Traceback" not in ran.stderr
    assert list((queue_root / "queue" / "inbox").glob("*.md")) == []
    after = subprocess.run(["git", "status", "--porcelain"], cwd=queue_root, capture_output=True,
                           text=True, check=True).stdout
    assert after == before


def test_force_adds_a_job_whose_engine_is_not_defined_yet(queue_root: Path) -> None:
    """--force adds it anyway; lint then names the missing engine."""
    ran = run_aq("add", "--body", "x", "--engine", "later-agent", "--id", "early", "--force",
                 cwd=queue_root)
    assert ran.returncode == 0, ran.stderr
    linted = run_aq("lint", cwd=queue_root)
    assert linted.returncode == 1
    assert "queue/inbox/early.md: key 'engine': engine 'later-agent' is not defined" in linted.stdout + linted.stderr


def test_add_goes_through_a_stale_index_lock_a_killed_git_left(queue_root: Path) -> None:
    """A two-minute-old .git/index.lock (a git killed mid-commit) is cleared and the first add
    succeeds; the lock does not come back."""
    lock = queue_root / ".git" / "index.lock"
    lock.write_text("")
    old = lock.stat().st_mtime - 120
    os.utime(lock, (old, old))
    ran = run_aq("add", "--body", "echo after the crash", "--id", "after-crash", cwd=queue_root)
    assert (ran.returncode, ran.stdout) == (0, "after-crash\n"), ran.stderr
    assert not lock.exists()
    assert (queue_root / "queue" / "inbox" / "after-crash.md").exists()


def test_a_job_copied_by_hand_into_a_second_stage_is_not_run_again(queue_root: Path) -> None:
    """A job file in two stages (a copy made by hand) is named by lint and skipped by workers
    with one line, rather than run a second time."""
    ran = run_aq("add", "--body", "echo ran >> ran.txt", "--id", "twice", cwd=queue_root)
    assert ran.returncode == 0, ran.stderr
    assert run_aq("run", "--once", cwd=queue_root).returncode == 0
    done = queue_root / "queue" / "review" / "twice.md"
    (queue_root / "queue" / "inbox" / "twice.md").write_bytes(done.read_bytes())
    worker = run_aq("run", "--drain", cwd=queue_root)
    assert worker.returncode == 0, worker.stderr
    assert (queue_root / "ran.txt").read_text() == "ran\n"
    assert "queue/review/twice.md: job twice is also in inbox" in worker.stderr
    linted = run_aq("lint", cwd=queue_root)
    assert linted.returncode == 1 and "job twice is also in inbox" in linted.stdout + linted.stderr


def test_an_id_ending_in_md_is_refused_so_no_command_mistakes_one_job_for_another(
        queue_root: Path) -> None:
    """`aq add --id notes.md` once added a job that `aq cancel notes.md` could never reach: it
    canceled job `notes` instead (a command given `x.md` means job x)."""
    assert run_aq("add", "--id", "notes", "--body", "real job", cwd=queue_root).returncode == 0
    ran = run_aq("add", "--id", "notes.md", "--body", "scratch", cwd=queue_root)
    assert ran.returncode == ExitStatus.USAGE and "ends in '.md'" in ran.stderr, ran
    assert sorted(path.name for path in (queue_root / "queue" / "inbox").glob("*.md")) == ["notes.md"]


@pytest.mark.parametrize("parent", ["nosuch", "p"])
def test_a_parent_in_the_frontmatter_is_refused_for_add_parent_checks_it(
        queue_root: Path, parent: str) -> None:
    """`parent:` in an added file's frontmatter once made a child of a job that is not there,
    or of one in review that never waits for it, where --parent refuses both."""
    assert run_aq("add", "--id", "p", "--body", "the parent", cwd=queue_root).returncode == 0
    ran = run_aq("add", "-", cwd=queue_root, input=f"---\nparent: {parent}\n---\necho hi\n")
    assert ran.returncode != 0 and "key 'parent'" in ran.stderr, ran
    assert "aq add --parent JOB" in ran.stderr and ran.stderr.count("\n") == 1, ran
    assert sorted(path.stem for path in (queue_root / "queue" / "inbox").glob("*.md")) == ["p"]


@pytest.mark.parametrize(("review", "said"), [
    ("{profile: nosuch}", "review.profile 'nosuch' does not exist"),
    ("{engine: nosuch}", "review.engine 'nosuch' is not defined"),
])
def test_a_review_gate_naming_what_is_not_there_is_refused_and_lint_names_it(
        queue_root: Path, review: str, said: str) -> None:
    """A review gate of a profile that is not there was added; once the job's verify passed, its
    review job waited in the inbox forever, and the job with it."""
    text = f"---\nreview: {review}\n---\necho hi\n"
    ran = run_aq("add", "-", cwd=queue_root, input=text)
    assert ran.returncode != 0 and said in ran.stderr and ran.stderr.count("\n") == 1, ran
    (queue_root / "queue" / "inbox" / "dropped.md").write_text(text)
    linted = run_aq("lint", cwd=queue_root)
    assert linted.returncode == 1 and "key 'review'" in linted.stdout + linted.stderr, linted


def test_a_job_over_a_mebibyte_is_refused_unread_wherever_it_comes_from(queue_root: Path) -> None:
    """A log pasted as a job: from a file or stdin, add refuses it in one line; dropped into the
    inbox, it is a job no worker runs, named by lint, and ls, lint, show and workers never read
    it whole. (With no cap a 3 GB file ran every reader out of memory.)"""
    big = "---\ntitle: Pasted\n---\n" + "a line of a pasted log\n" * 50_000  # 1.1 MiB
    (queue_root / "big.md").write_text(big)
    tail = "the 1 MiB (1,048,576 bytes) a job file may be: put the material in a file of the " \
           "repository and name it in the body"
    ran = run_aq("add", "big.md", cwd=queue_root)
    assert (ran.returncode, ran.stderr) == (1, f"aq: big.md: 1,150,022 bytes, over {tail}\n")
    ran = run_aq("add", "-", input=big, cwd=queue_root)
    assert (ran.returncode, ran.stderr) == (1, f"aq: stdin: more than {tail}\n")
    assert list((queue_root / "queue" / "inbox").glob("*.md")) == []
    (queue_root / "queue" / "inbox" / "big.md").write_text(big)
    linted = run_aq("lint", cwd=queue_root)
    assert (linted.returncode, linted.stdout) == (
        1, f"queue/inbox/big.md: 1,150,022 bytes, over {tail}\n")
    shown = run_aq("show", "big", cwd=queue_root)
    assert shown.returncode == 0 and f"1,150,022 bytes, over {tail}" in shown.stdout + shown.stderr
    assert run_aq("next", cwd=queue_root).stdout == "nothing to take\n"


def test_a_dep_another_machine_added_is_found_on_the_remote(tmp_path: Path) -> None:
    """A dep pushed from another clone, not yet here: add judges the deps on the remote's tip
    it commits on, so a fleet does not see a job that exists called missing, even from a clone
    with a commit of its own the remote has not (which a fetch alone does not move on)."""
    with fleet_in(tmp_path, 2) as fleet:
        first, second = fleet.clones
        git(second, "commit", "-q", "--allow-empty", "-m", "a commit of this clone's own")
        assert fleet.aq(first, "add", "--id", "base", "--body", "true").returncode == 0
        assert not (second / "queue" / "inbox" / "base.md").exists()
        added = fleet.aq(second, "add", "--id", "after", "--body", "true", "--deps", "base")
        assert added.returncode == 0, added.stderr
        refused = fleet.aq(second, "add", "--id", "lost", "--body", "true", "--deps", "nosuch")
        assert refused.returncode == 2 and "job 'nosuch' does not exist" in refused.stderr
