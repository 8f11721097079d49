"""DESIGN §5: what aq reads or writes in the queue is a regular file inside it. Real symbolic
links in real queues: a link is refused with one line naming it, never followed, and what it
points to reaches no file, commit, log or output of aq."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from aq.errors import UnsafePath
from aq.infra.confine import _below, read_regular, refusal, refusals
from tests.helpers.cli import Ran, aq_env
from tests.helpers.queue import write_job

Aq = Callable[..., Ran]
SECRET = "S3CRET-only-outside-the-queue-7741"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder next to the queue, holding what no link may bring into it."""
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


def leaks(root: Path) -> list[str]:
    """Every place under the queue's clone where SECRET shows: a file (links not followed, the
    state caches in .git included) or any commit of any ref."""
    found = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if not path.is_symlink() and SECRET.encode() in path.read_bytes():
                found.append(str(path))
    history = subprocess.run(["git", "log", "-p", "--all"], cwd=root, capture_output=True,
                             text=True, env=aq_env(), check=True).stdout
    return found + (["git log -p --all"] if SECRET in history else [])


def one_line(stderr: str, *needles: str) -> str:
    """The only stderr line holding every needle (and no traceback anywhere)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if all(n in line for n in needles)]
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_job_file_linked_outside_is_skipped_shown_and_linted_never_run(
        queue_root: Path, aq: Aq, outside: Path) -> None:
    """A link in the inbox to a job elsewhere: the worker skips it in one line and runs the
    rest; its target is never read, so it reaches no log, commit or output; show, lint and
    fsck (once the link is committed) name it."""
    (outside / "x.md").write_text(f"echo {SECRET}\n")
    (queue_root / "queue/inbox/x.md").symlink_to(outside / "x.md")
    write_job(queue_root, "good", "echo fine")
    ran = aq("run", "--drain")
    assert ran.returncode == 0, ran.stderr
    one_line(ran.stderr, "skipping queue/inbox/x.md", "symbolic link")
    assert (queue_root / "queue/review/good.md").exists()
    assert (queue_root / "queue/inbox/x.md").is_symlink()
    assert not (queue_root / "queue/.logs/x").exists()
    shown = aq("show", "x")
    assert shown.returncode == 0 and "queue/inbox/x.md: a symbolic link" in shown.stdout
    assert SECRET not in shown.stdout + aq("show", "x", "--json").stdout
    linted = aq("lint")
    assert linted.returncode == 1
    assert [line for line in linted.stdout.splitlines() if "queue/inbox/x.md" in line] == [
        line for line in linted.stdout.splitlines() if "symbolic link" in line]
    assert aq("cancel", "x").returncode == 1  # moving a link is refused too
    assert leaks(queue_root) == []
    subprocess.run(["git", "add", "queue/inbox/x.md"], cwd=queue_root, check=True, env=aq_env())
    subprocess.run(["git", "commit", "-qm", "a link", "--allow-empty"], cwd=queue_root,
                   check=True, env=aq_env())
    checked = aq("fsck")
    assert checked.returncode == 1
    assert "HEAD: queue/inbox/x.md: committed as a symbolic link" in checked.stdout
    assert leaks(queue_root) == []


def test_with_a_remote_a_linked_job_is_neither_adopted_nor_pushed(
        queue_root: Path, aq: Aq, outside: Path) -> None:
    """The issue's case in a fleet: a link dropped into a clone's inbox is not adopted as a
    job dropped by hand, so nothing of its target is committed or pushed."""
    bare = queue_root.parent / "remote.git"
    git = ["git", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", "--bare", str(bare)], check=True, env=aq_env())
    subprocess.run(["git", "remote", "add", "origin", str(bare)], cwd=queue_root, check=True,
                   env=aq_env())
    subprocess.run(["git", "push", "-q", "-u", "origin", "HEAD"], cwd=queue_root, check=True,
                   env=aq_env())
    (outside / "x.md").write_text(f"echo {SECRET}\n")
    (queue_root / "queue/inbox/x.md").symlink_to(outside / "x.md")
    write_job(queue_root, "good", "echo fine")
    ran = aq("run", "--drain")
    assert ran.returncode == 0, ran.stderr
    one_line(ran.stderr, "skipping queue/inbox/x.md", "symbolic link")
    pushed = subprocess.run(["git", "--git-dir", str(bare), "log", "-p", "--all"],
                            capture_output=True, text=True, env=aq_env(), check=True).stdout
    assert "queue/review/good.md" in pushed and "x.md" not in pushed and SECRET not in pushed
    assert leaks(queue_root) == []


def test_a_linked_profile_is_skipped_and_named(queue_root: Path, aq: Aq, outside: Path) -> None:
    """profiles/<name>.md as a link: never read, so its persona reaches no prompt; the worker
    skips it in one line, lint names it, and a job naming it waits in the inbox."""
    (outside / "evil.md").write_text(f"---\nversion: 1\n---\nYou are {SECRET}.\n")
    (queue_root / "profiles/evil.md").symlink_to(outside / "evil.md")
    write_job(queue_root, "uses-it", 'echo "$AQ_PROMPT_FILE"', profile="evil")
    ran = aq("run", "--drain")
    assert ran.returncode == 0, ran.stderr
    one_line(ran.stderr, "skipping profiles/evil.md", "symbolic link")
    assert (queue_root / "queue/inbox/uses-it.md").exists()
    linted = aq("lint")
    assert linted.returncode == 1 and "profiles/evil.md: a symbolic link" in linted.stdout
    listed = aq("profiles")
    assert SECRET not in listed.stdout + listed.stderr
    assert leaks(queue_root) == []


def test_a_linked_aq_yaml_refuses_the_queue_in_one_line(
        queue_root: Path, aq: Aq, outside: Path) -> None:
    """aq.yaml as a link: `aq run` refuses to start, in one line; lint names it."""
    config = queue_root / "aq.yaml"
    (outside / "aq.yaml").write_text(f"default_engine: shell\n# {SECRET}\n")
    config.unlink()
    config.symlink_to(outside / "aq.yaml")
    write_job(queue_root, "job", "echo hi")
    ran = aq("run", "--once")
    assert ran.returncode == 1
    assert one_line(ran.stderr, "aq.yaml").startswith("aq: aq.yaml: a symbolic link")
    assert (queue_root / "queue/inbox/job.md").exists()
    linted = aq("lint")
    assert linted.returncode == 1
    assert [line for line in linted.stdout.splitlines() if "aq.yaml" in line] == [
        line for line in linted.stdout.splitlines() if line.startswith("aq.yaml: a symbolic link")]
    assert leaks(queue_root) == []


def test_a_linked_event_log_is_never_read_nor_appended_to(
        queue_root: Path, aq: Aq, outside: Path) -> None:
    """queue/.events/<id>.jsonl as a link: the job is listed as invalid (never claimed), show
    and lint say why, and the file it points to is neither read nor written."""
    target = outside / "events.jsonl"
    text = json.dumps({"ts": "2026-01-01T00:00:00Z", "type": "added", "by": SECRET}) + "\n"
    target.write_text(text)
    write_job(queue_root, "ev", "echo hi")
    (queue_root / "queue/.events/ev.jsonl").symlink_to(target)
    ran = aq("run", "--drain")
    assert ran.returncode == 0, ran.stderr
    one_line(ran.stderr, "skipping queue/.events/ev.jsonl", "symbolic link")
    assert (queue_root / "queue/inbox/ev.md").exists()
    shown = aq("show", "ev", "--json")
    assert "queue/.events/ev.jsonl: a symbolic link" in json.loads(shown.stdout)["error"]
    assert SECRET not in shown.stdout + aq("show", "ev").stdout + aq("ls").stdout
    assert "queue/.events/ev.jsonl: a symbolic link" in aq("lint").stdout
    assert aq("cancel", "ev").returncode == 1
    assert target.read_text() == text
    assert leaks(queue_root) == []


def test_a_linked_log_is_refused_by_logs_and_lint(queue_root: Path, aq: Aq, outside: Path) -> None:
    """A kept log replaced by a link: `aq logs` refuses it in one line, lint names it."""
    write_job(queue_root, "ran", "echo done")
    assert aq("run", "--once").returncode == 0
    log = queue_root / "queue/.logs/ran/1.log"
    (outside / "1.log").write_text(f"{SECRET}\n")
    log.unlink()
    log.symlink_to(outside / "1.log")
    shown = aq("logs", "ran")
    assert shown.returncode == 1 and SECRET not in shown.stdout
    assert one_line(shown.stderr, "queue/.logs/ran/1.log").startswith(
        "aq: queue/.logs/ran/1.log: a symbolic link")
    assert "queue/.logs/ran/1.log: a symbolic link" in aq("lint").stdout


def test_a_log_folder_linked_outside_costs_the_log_not_the_result(
        queue_root: Path, aq: Aq, outside: Path) -> None:
    """queue/.logs/<id> as a link to a folder elsewhere: nothing is written there; the job
    moves on, its finished event saying why the log was not kept."""
    write_job(queue_root, "lg", "echo hi")
    (queue_root / "queue/.logs/lg").symlink_to(outside, target_is_directory=True)
    ran = aq("run", "--once")
    assert ran.returncode == 0, ran.stderr
    one_line(ran.stderr, "lg: the log of attempt 1 was not kept", "symbolic link")
    assert list(outside.iterdir()) == []
    lines = (queue_root / "queue/.events/lg.jsonl").read_text().splitlines()
    finished = [e for e in map(json.loads, lines) if e["type"] == "finished"]
    assert finished[0]["to"] == "review" and finished[0]["log"] is None
    assert "queue/.logs/lg: a symbolic link" in finished[0]["log_not_kept"]


def test_artifacts_through_a_linked_folder_or_a_link_are_not_kept(
        queue_root: Path, aq: Aq, outside: Path, tmp_path: Path) -> None:
    """An artifact glob matching through a linked folder, or a link, keeps nothing of them (the
    attempt's log says which); regular files matched are kept."""
    work = tmp_path / "work"
    (work / "real").mkdir(parents=True)
    (work / "real/ok.txt").write_text("kept\n")
    (outside / "secret.txt").write_text(f"{SECRET}\n")
    (work / "out").symlink_to(outside, target_is_directory=True)
    (work / "real/link.txt").symlink_to(outside / "secret.txt")
    write_job(queue_root, "art", "true", cwd=str(work), artifacts=["out/*.txt", "real/*.txt"])
    ran = aq("run", "--once")
    assert ran.returncode == 0, ran.stderr
    shown = json.loads(aq("show", "art", "--json").stdout)
    assert shown["attempt_log"][0]["artifacts"] == ["queue/.logs/art/1/real/ok.txt"]
    log = (queue_root / "queue/.logs/art/1.log").read_text()
    assert "artifact not kept: out: a symbolic link" in log
    assert "artifact not kept: real/link.txt: a symbolic link" in log
    assert leaks(queue_root) == []


def test_a_stage_folder_that_is_a_link_refuses_the_queue(
        queue_root: Path, aq: Aq, outside: Path) -> None:
    """queue/review as a link to a folder elsewhere: every command refuses the queue in one
    line naming it, lint included, and nothing is written there."""
    review = queue_root / "queue/review"
    for name in os.listdir(review):
        (review / name).unlink()
    review.rmdir()
    review.symlink_to(outside, target_is_directory=True)
    write_job(queue_root, "job", "echo hi")
    for command in (("run", "--once"), ("ls",), ("lint",)):
        ran = aq(*command)
        assert ran.returncode == 1, command
        assert "queue/review: a symbolic link" in ran.stdout + ran.stderr, command
        assert "Traceback" not in ran.stderr
    assert list(outside.iterdir()) == []
    assert (queue_root / "queue/inbox/job.md").exists()


def test_refusal_looks_at_every_component_without_following(tmp_path: Path) -> None:
    """A link anywhere on the way, a path leaving the root, or a fifo is refused; a regular
    file, or one not there yet, is not."""
    root = tmp_path / "root"
    (root / "dir").mkdir(parents=True)
    (root / "dir/file").write_text("x")
    (root / "hop").symlink_to(root / "dir", target_is_directory=True)
    os.mkfifo(root / "dir/pipe")
    assert refusal(root, root / "dir/file") is None
    assert refusal(root, root / "dir/new/file") is None
    assert refusal(root, root / "dir", folder=True) is None
    assert str(refusal(root, root / "hop/file")).startswith("hop: a symbolic link")
    assert "outside" in str(refusal(root, root / "dir/../../elsewhere"))
    assert "outside" in str(refusal(root, tmp_path / "elsewhere"))
    assert str(refusal(root, root / "dir/pipe")).startswith("dir/pipe: a fifo")
    assert str(refusal(root, root / "dir/file", folder=True)).startswith("dir/file: a regular file")
    assert [line.split(":")[0] for line in refusals(root, ["dir", "hop"])] == ["dir/pipe", "hop"]
    for path in (root / "dir/pipe", root / "hop", root / "dir"):  # a fifo is not waited on
        with pytest.raises(UnsafePath):
            read_regular(path)
    assert read_regular(root / "dir/file") == b"x"


PART = st.sampled_from(["q", "queue", "inbox", ".", "..", "", "a.md", "x y"])


@given(st.booleans(), st.lists(PART, max_size=4), st.booleans(), st.lists(PART, max_size=6))
def test_what_is_below_the_root_is_read_as_pathlib_reads_it(
        root_abs: bool, root: list[str], path_abs: bool, path: list[str]) -> None:
    """The string check every write goes through reads a path below the root as
    Path.relative_to does: nothing resolved, '.' and doubled slashes dropped (but at the
    start: two slashes there are a root of their own to pathlib, which aq never has)."""
    root_s = ("/" if root_abs else "") + "/".join(root)
    path_s = ("/" if path_abs else "") + "/".join(path)
    assume(not root_s.startswith("//") and not path_s.startswith("//"))
    try:
        expected: list[str] | None = list(Path(path_s).relative_to(Path(root_s)).parts)
    except ValueError:
        expected = None
    assert _below(root_s or ".", path_s or ".") == expected
