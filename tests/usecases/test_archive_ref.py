"""The archive on a ref of its own (aq.store.archive_ref, aq.usecases.archive_moves): the
queue's branch keeps only the live jobs, every clone's sync checks the archive out into
queue/.archive, a batch moved half-way (copied, not yet taken off the branch) is finished by
the next run, machines archiving at once each move a job once, a job changed between the two
steps stays, and the archive an earlier aq kept on the branch (queue/archive) moves over."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aq.core.events import iso
from aq.store.queue import Queue
from aq.usecases.archive import archive
from aq.usecases.archive_moves import Copied, copy_plan
from tests.helpers.cli import aq_env, run_aq
from tests.helpers.fleet import fleet_in
from tests.helpers.git import files_at, git, jobs_at
from tests.usecases.test_archive import archive_ref, commit_all, final_events, listed, write_final

NOW = datetime.now(UTC)
LONG_AGO = NOW - timedelta(days=40)


def test_a_clone_sees_what_another_archived_and_the_branch_carries_none_of_it(tmp_path: Path) -> None:
    """One clone archives and pushes; the remote's branch no longer holds the jobs, its archive
    ref does, and another clone's next sync checks them out: `show`, `logs`, `ls --all` and a
    dep on an archived job work there."""
    with fleet_in(tmp_path, 2) as fleet:
        first, second = fleet.clones
        for index in range(12):
            write_final(first, f"old-{index}", "shipped", LONG_AGO, log=index == 3)
        commit_all(first, "final jobs")
        git(first, "push", "-q", "origin", "HEAD:main")
        assert fleet.aq(second, "ls", "--fetch").returncode == 0  # the second has them live

        moved = fleet.aq(first, "archive", "--json")
        assert moved.returncode == 0, moved.stderr
        assert len(json.loads(moved.stdout)["moved"]) == 12
        assert [path for path in files_at(fleet.bare, "main", "queue") if "old-" in path] == []
        in_ref = files_at(fleet.bare, "refs/aq/archive/main")
        assert len([path for path in in_ref if path.endswith(".md")]) == 12
        assert all(path.startswith("queue/.archive/") for path in in_ref)

        added = fleet.aq(second, "add", "--id", "after", "--body", "true", "--deps", "old-5")
        assert added.returncode == 0, added.stderr  # a sync: it moves to the tip and the archive
        assert not list((second / "queue" / "shipped").glob("old-*.md"))
        shown = json.loads(fleet.aq(second, "show", "old-7", "--json").stdout)
        assert (shown["stage"], shown["archived"]) == ("shipped", True)
        assert [event["type"] for event in shown["events"]][-1] == "archived"
        assert fleet.aq(second, "logs", "old-3").stdout == "the log of old-3\n"
        assert len(listed(fleet.aq(second, "ls", "--all", "--json"))) == 13
        assert json.loads(fleet.aq(second, "next", "--json").stdout)["next"]["id"] == "after"
        assert git(second, "status", "--porcelain") == ""  # git ignores the checkout
        checked = fleet.aq(second, "fsck")
        assert checked.returncode == 0 and checked.stderr.startswith("13 jobs"), checked.stderr


def test_a_batch_copied_but_not_taken_off_the_branch_is_one_job_and_the_next_run_ends_it(
        queue_root: Path) -> None:
    """A crash between the two steps leaves the jobs both in their stage folder and in the
    archive: every command shows each once, from its stage folder, and the next `aq archive`
    takes them off the branch without a second copy."""
    for index in range(3):
        write_final(queue_root, f"old-{index}", "failed", LONG_AGO)
    commit_all(queue_root, "final jobs")
    queue = Queue(queue_root)
    shelf = queue.archive_ref
    assert shelf is not None
    copied: dict[str, Copied] = {}
    shelf.put(lambda: copy_plan(queue.layout, ["old-0", "old-1"], NOW, 86400, "me", copied),
              "aq: archive 2 job(s) by me", queue.identity or [], queue.lock)  # ...and it dies here
    assert sorted(copied) == ["old-0", "old-1"]
    assert len(list((queue_root / "queue" / ".archive").rglob("old-*.md"))) == 2

    everything = run_aq("ls", "--all", "--json", cwd=queue_root)
    assert everything.stderr == ""
    assert {job_id: job["archived"] for job_id, job in listed(everything).items()} == {
        "old-0": False, "old-1": False, "old-2": False}
    assert run_aq("fsck", cwd=queue_root).returncode == 0
    assert json.loads(run_aq("show", "old-0", "--json", cwd=queue_root).stdout)["archived"] is False

    done = archive(queue, now=NOW, older_than=86400)
    assert sorted(item.job_id for item in done.moved) == ["old-0", "old-1", "old-2"]
    assert [path for path in files_at(queue_root, "HEAD", "queue") if "old-" in path] == []
    copies = sorted(path.name for path in (queue_root / "queue" / ".archive").rglob("old-*.md"))
    assert copies == ["old-0.md", "old-1.md", "old-2.md"]
    assert run_aq("fsck", cwd=queue_root).returncode == 0


def test_a_job_written_to_between_copy_and_take_off_stays_and_is_copied_again(
        queue_root: Path) -> None:
    """The branch's side takes a job off only if its files are still what was copied: a job
    written to meanwhile stays live, and the next run's copy holds what was written."""
    write_final(queue_root, "busy", "shipped", LONG_AGO)
    commit_all(queue_root, "a final job")
    queue = Queue(queue_root)
    shelf = queue.archive_ref
    assert shelf is not None
    copied: dict[str, Copied] = {}
    shelf.put(lambda: copy_plan(queue.layout, ["busy"], NOW, 86400, "me", copied), "aq: archive",
              queue.identity or [], queue.lock)
    events = queue_root / "queue" / ".events" / "busy.jsonl"
    events.write_text(events.read_text() + json.dumps({"ts": "2026-01-01T00:00:00Z",
                                                       "type": "note", "text": "late"}) + "\n")
    commit_all(queue_root, "a late note")
    from aq.usecases.archive_moves import take_off

    assert queue.transact(take_off(copied), "aq: take off") == []
    assert (queue_root / "queue" / "shipped" / "busy.md").is_file()

    again = archive(queue, now=NOW, older_than=86400)
    assert [item.job_id for item in again.moved] == ["busy"]
    [copy] = (queue_root / "queue" / ".archive").rglob("busy.jsonl")
    assert [json.loads(line)["type"] for line in copy.read_text().splitlines()][-2:] == [
        "note", "archived"]


def test_two_machines_archiving_at_once_move_each_job_once(tmp_path: Path) -> None:
    """Two clones run `aq archive` on the same 300 due jobs at the same moment: the archive's
    ref and the branch are each a compare-and-swap, so every job ends in the archive once and
    on the branch not at all."""
    with fleet_in(tmp_path, 2) as fleet:
        first, second = fleet.clones
        for index in range(300):
            write_final(first, f"old-{index:03d}", "shipped", LONG_AGO + timedelta(minutes=index))
        commit_all(first, "final jobs")
        git(first, "push", "-q", "origin", "HEAD:main")
        assert fleet.aq(second, "ls", "--fetch").returncode == 0
        procs = [subprocess.Popen([sys.executable, "-m", "aq", "archive", "--json"], cwd=clone,
                                  env=aq_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for clone in (first, second)]
        said = [proc.communicate(timeout=240) for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0], said
        moved = [item["id"] for out, _err in said for item in json.loads(out)["moved"]]
        assert sorted(moved) == [f"old-{index:03d}" for index in range(300)]  # each by one of them
        assert [path for path in files_at(fleet.bare, "main", "queue") if "old-" in path] == []
        assert jobs_at(fleet.bare, "refs/aq/archive/main") == [f"old-{index:03d}" for index in range(300)]
        for clone in (first, second):
            assert fleet.aq(clone, "ls", "--fetch").returncode == 0
            assert fleet.aq(clone, "fsck").returncode == 0


def test_a_refused_archive_push_moves_nothing_and_says_so_in_one_line(tmp_path: Path) -> None:
    """A remote whose hook refuses the archive's ref: `aq archive` exits 1 with one line naming
    the refusal, and every job is still on the branch."""
    with fleet_in(tmp_path, 1) as fleet:
        [clone] = fleet.clones
        write_final(clone, "old", "shipped", LONG_AGO)
        commit_all(clone, "a final job")
        git(clone, "push", "-q", "origin", "HEAD:main")
        hook = fleet.bare / "hooks" / "pre-receive"
        hook.write_text("#!/bin/sh\nwhile read old new ref; do case $ref in refs/aq/archive/*) "
                        "echo 'archives are not allowed here' >&2; exit 1;; esac; done\n")
        hook.chmod(0o755)
        refused = fleet.aq(clone, "archive")
        assert refused.returncode == 1
        assert refused.stderr.count("\n") == 1 and "refused the archive's push" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert "queue/shipped/old.md" in files_at(fleet.bare, "main", "queue")
        assert (clone / "queue" / "shipped" / "old.md").is_file()


def test_the_archive_an_earlier_aq_kept_on_the_branch_is_read_then_moved_over(
        queue_root: Path) -> None:
    """Jobs in the branch's queue/archive/<yyyy>/<mm>/<nnn>/ (where aq kept the archive before
    it had a ref) are found by every command; `aq archive` moves them to the ref into parts of
    the same names (a new job final that month gets a part after them), keys and all."""
    part = queue_root / "queue" / "archive" / f"{LONG_AGO:%Y}" / f"{LONG_AGO:%m}" / "001"
    for index in range(4):
        (part / "shipped").mkdir(parents=True, exist_ok=True)
        (part / ".events").mkdir(exist_ok=True)
        key = "idempotency-key: nightly-1\n" if index == 2 else ""
        (part / "shipped" / f"kept-{index}.md").write_text(f"---\ntitle: kept {index}\n{key}---\ntrue\n")
        (part / ".events" / f"kept-{index}.jsonl").write_text(final_events(f"kept-{index}",
                                                                           "shipped", LONG_AGO))
    (part / "keys.json").write_text(json.dumps({"nightly-1": "kept-2"}))
    write_final(queue_root, "new-one", "failed", LONG_AGO)
    commit_all(queue_root, "an archive on the branch, and a job due")
    shown = json.loads(run_aq("show", "kept-1", "--json", cwd=queue_root).stdout)
    assert (shown["stage"], shown["archived"]) == ("shipped", True)

    done = run_aq("archive", "--json", cwd=queue_root)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [item["id"] for item in result["moved"]] == ["new-one"]
    assert result["moved"][0]["part"].endswith("/002")  # after the branch's 001
    assert result["moved_over"] == 4
    assert [path for path in files_at(queue_root, "HEAD", "queue") if "archive" in path or "kept" in path] == []
    assert not (queue_root / "queue" / "archive").exists()  # emptied folders go too
    moved_part = queue_root / "queue" / ".archive" / f"{LONG_AGO:%Y}" / f"{LONG_AGO:%m}" / "001"
    assert sorted(path.name for path in (moved_part / "shipped").iterdir()) == [
        f"kept-{index}.md" for index in range(4)]
    assert json.loads((moved_part / "keys.json").read_text()) == {"nightly-1": "kept-2"}
    assert len(jobs_at(queue_root, archive_ref(queue_root))) == 5
    assert json.loads(run_aq("show", "kept-1", "--json", cwd=queue_root).stdout)["archived"] is True
    assert run_aq("fsck", "--history", cwd=queue_root).returncode == 0
    again = run_aq("add", "--key", "nightly-1", "--body", "echo other", cwd=queue_root)
    assert again.returncode == 1 and "already made job kept-2" in again.stderr, again.stderr


def test_outside_git_the_archive_is_a_folder_the_jobs_move_into_and_back(tmp_path: Path) -> None:
    """A queue in no git repository has no ref to keep its archive on: `aq archive` moves the
    files into queue/.archive, and a requeue moves them back."""
    root = tmp_path / "plain"
    for folder in ("inbox", "shipped", "failed", ".events"):
        (root / "queue" / folder).mkdir(parents=True)
    write_final(root, "old", "failed", LONG_AGO, log=True)
    queue = Queue(root)
    assert queue.archive_ref is None
    done = archive(queue, now=NOW, older_than=86400)
    assert [item.job_id for item in done.moved] == ["old"]
    [copy] = (root / "queue" / ".archive").rglob("old.md")
    assert copy.parent.name == "failed" and not (root / "queue" / "failed" / "old.md").exists()
    assert (copy.parent.parent / ".logs" / "old" / "1.log").is_file()

    back = run_aq("requeue", "old", cwd=root)
    assert back.returncode == 0, back.stderr
    assert (root / "queue" / "inbox" / "old.md").is_file()
    assert not list((root / "queue" / ".archive").rglob("old*.*"))


def test_a_queue_given_a_remote_after_it_archived_keeps_its_archive_and_pushes_it(
        queue_root: Path, tmp_path: Path) -> None:
    """A queue with no remote keeps its archive on a ref of its own; given a remote later, every
    command still finds the archived jobs, and its next archiving pushes them all there."""
    write_final(queue_root, "early", "shipped", LONG_AGO)
    commit_all(queue_root, "a final job")
    assert archive(Queue(queue_root), now=NOW, older_than=86400).moved
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(queue_root, "remote", "add", "origin", str(bare))
    git(queue_root, "push", "-q", "-u", "origin", "HEAD")

    assert "early" in listed(run_aq("ls", "--fetch", "--all", "--json", cwd=queue_root))
    assert json.loads(run_aq("show", "early", "--json", cwd=queue_root).stdout)["archived"] is True
    write_final(queue_root, "later", "failed", LONG_AGO)
    commit_all(queue_root, "another")
    git(queue_root, "push", "-q", "origin", "HEAD")
    assert [item.job_id for item in archive(Queue(queue_root), now=NOW, older_than=86400).moved] \
        == ["later"]
    branch = git(queue_root, "symbolic-ref", "--short", "HEAD").strip()
    assert jobs_at(bare, f"refs/aq/archive/{branch}") == ["early", "later"]


def test_a_checkout_removed_or_changed_by_hand_is_put_back(tmp_path: Path) -> None:
    """queue/.archive removed (`git clean -x`) comes back at the next sync; a file of it removed
    or changed, and a lock file a killed git left on its index, are put right before the next
    archiving plans on them: no part loses its keys."""
    with fleet_in(tmp_path, 1) as fleet:
        [clone] = fleet.clones
        for index in range(3):
            write_final(clone, f"old-{index}", "shipped", LONG_AGO)
        (clone / "queue" / "shipped" / "old-0.md").write_text(
            "---\ntitle: keyed\nidempotency-key: nightly-0\n---\ntrue\n")
        commit_all(clone, "final jobs")
        git(clone, "push", "-q", "origin", "HEAD:main")
        assert fleet.aq(clone, "archive").returncode == 0

        git(clone, "clean", "-q", "-fdx", "--", "queue")
        assert not (clone / "queue" / ".archive").exists()
        assert fleet.aq(clone, "ls", "--fetch").returncode == 0
        assert json.loads(fleet.aq(clone, "show", "old-1", "--json").stdout)["archived"] is True

        [keys] = (clone / "queue" / ".archive").rglob("keys.json")
        keys.unlink()
        (keys.parent / "shipped" / "old-2.md").write_text("scribbled over\n")
        (clone.joinpath(".git", "aq", "archive", "index.lock")).write_text("")
        write_final(clone, "old-3", "shipped", LONG_AGO)
        commit_all(clone, "one more")
        git(clone, "push", "-q", "origin", "HEAD:main")
        assert fleet.aq(clone, "archive").returncode == 0
        [keys] = (clone / "queue" / ".archive").rglob("keys.json")
        assert json.loads(keys.read_text()) == {"nightly-0": "old-0"}
        assert (keys.parent / "shipped" / "old-2.md").read_text() != "scribbled over\n"
        ref = git(fleet.bare, "show", f"refs/aq/archive/main:{keys.relative_to(clone)}")
        assert json.loads(ref) == {"nightly-0": "old-0"}


def test_a_move_from_the_branchs_archive_half_made_shows_each_job_once(queue_root: Path) -> None:
    """Copied onto the ref but not yet taken off the branch's queue/archive (a crash): `ls --all`
    lists each job once, from the ref, and names no problem."""
    part = queue_root / "queue" / "archive" / f"{LONG_AGO:%Y}" / f"{LONG_AGO:%m}" / "001"
    (part / "shipped").mkdir(parents=True)
    (part / ".events").mkdir()
    (part / "shipped" / "m-1.md").write_text("---\ntitle: m 1\n---\ntrue\n")
    (part / ".events" / "m-1.jsonl").write_text(final_events("m-1", "shipped", LONG_AGO))
    commit_all(queue_root, "an archive on the branch")
    queue = Queue(queue_root)
    shelf = queue.archive_ref
    assert shelf is not None
    from aq.usecases.archive_moves import branch_copy_plan

    copied: dict[str, Copied] = {}
    shelf.put(lambda: branch_copy_plan(queue.layout, 10, copied), "aq: move over",
              queue.identity or [], queue.lock)
    assert list(copied) == ["m-1"] and (part / "shipped" / "m-1.md").is_file()
    everything = listed(run_aq("ls", "--all", "--json", cwd=queue_root))
    assert list(everything) == ["m-1"] and everything["m-1"]["error"] is None
    shown = run_aq("ls", "--all", cwd=queue_root)
    assert shown.returncode == 0 and shown.stderr == "", shown.stderr
    assert "(archived: queue/.archive/" in run_aq("show", "m-1", cwd=queue_root).stdout


def test_a_remote_that_lost_the_archive_ref_gets_the_whole_archive_back(tmp_path: Path) -> None:
    """The archive's ref deleted on the remote (a queue moved to a new remote with only its
    branch, say): the clone's checkout is kept, and its next `aq archive` pushes the whole
    archive again with the new job, not the new job alone."""
    with fleet_in(tmp_path, 1) as fleet:
        [clone] = fleet.clones
        for index in range(3):
            write_final(clone, f"old-{index}", "shipped", LONG_AGO)
        commit_all(clone, "final jobs")
        git(clone, "push", "-q", "origin", "HEAD:main")
        assert fleet.aq(clone, "archive").returncode == 0
        git(fleet.bare, "update-ref", "-d", "refs/aq/archive/main")
        write_final(clone, "old-3", "failed", LONG_AGO)
        commit_all(clone, "one more")
        git(clone, "push", "-q", "origin", "HEAD:main")

        assert sorted(listed(fleet.aq(clone, "ls", "--fetch", "--all", "--json"))) == [
            f"old-{index}" for index in range(4)]
        assert fleet.aq(clone, "archive").returncode == 0
        assert jobs_at(fleet.bare, "refs/aq/archive/main") == [f"old-{index}" for index in range(4)]
        assert json.loads(fleet.aq(clone, "show", "old-0", "--json").stdout)["archived"] is True


def test_a_clone_behind_never_replaces_a_copy_that_holds_more_of_the_job(tmp_path: Path) -> None:
    """Machine B copies a job whose event log has a line machine A has not fetched yet; A,
    archiving from its older view, leaves B's copy as it is and takes nothing off the branch."""
    with fleet_in(tmp_path, 2) as fleet:
        behind, ahead = fleet.clones
        write_final(ahead, "late", "shipped", LONG_AGO)
        commit_all(ahead, "a final job")
        git(ahead, "push", "-q", "origin", "HEAD:main")
        assert fleet.aq(behind, "ls", "--fetch").returncode == 0  # A sees it as it was
        events = ahead / "queue" / ".events" / "late.jsonl"
        events.write_text(events.read_text() + json.dumps(
            {"ts": iso(NOW), "type": "note", "by": "b", "text": "seen late"}) + "\n")
        commit_all(ahead, "a late line")
        git(ahead, "push", "-q", "origin", "HEAD:main")
        queue = Queue(ahead)
        shelf = queue.archive_ref
        assert shelf is not None
        copied: dict[str, Copied] = {}
        shelf.put(lambda: copy_plan(queue.layout, ["late"], NOW, 86400, "b", copied),
                  "aq: archive", queue.identity or [], queue.lock)  # B's take-off not yet made

        done = archive(Queue(behind), now=NOW, older_than=86400, who="a")
        assert done.moved == ()
        copy = git(fleet.bare, "show", "refs/aq/archive/main:" + next(
            path for path in files_at(fleet.bare, "refs/aq/archive/main")
            if path.endswith("late.jsonl")))
        assert [json.loads(line)["type"] for line in copy.splitlines()][-2:] == ["note", "archived"]
        assert "queue/shipped/late.md" in files_at(fleet.bare, "main", "queue")


def test_archiving_waits_while_a_machine_runs_an_older_aq(tmp_path: Path) -> None:
    """A machine whose heartbeat does not say it reads the archive's ref (an older aq) would
    lose sight of what is archived: `aq archive` moves nothing and says which machine, in one
    line; a machine that said goodbye, or whose ref is gone, holds nothing up."""
    with fleet_in(tmp_path, 1) as fleet:
        [clone] = fleet.clones
        write_final(clone, "old", "shipped", LONG_AGO)
        commit_all(clone, "a final job")
        git(clone, "push", "-q", "origin", "HEAD:main")
        remote = Queue(clone).remote
        assert remote is not None
        assert remote.heartbeat("old-box", {"seq": 1, "tokens": [], "reads": ["aq-leases"],
                                            "workers": {"w": {"pid": 1, "tokens": []}}})
        assert remote.heartbeat("gone-box", {"seq": 9, "tokens": [], "reads": [],
                                             "workers": {"w": {"retiring": True}}})

        waiting = fleet.aq(clone, "archive")
        assert waiting.returncode == 1 and waiting.stderr.count("\n") == 1, waiting.stderr
        assert "old-box run(s) an older aq" in waiting.stderr and "gone-box" not in waiting.stderr
        assert "git push origin :refs/aq/workers/old-box" in waiting.stderr
        assert (clone / "queue" / "shipped" / "old.md").is_file()

        git(clone, "push", "-q", "origin", ":refs/aq/workers/old-box")
        moved = fleet.aq(clone, "archive")
        assert moved.returncode == 0, moved.stderr
        assert not (clone / "queue" / "shipped" / "old.md").exists()
