"""`aq archive` and the archive (aq.usecases.archive, aq.store.snapshot): final jobs leave the
stage folders for queue/.archive/<yyyy>/<mm>/<nnn>/ with their events and logs, on a ref of
their own (the queue's branch keeps only the live jobs), every command still finds them by id,
and the everyday reads never look inside the archive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aq.core.events import iso
from aq.store.layout import PART_SIZE
from aq.store.queue import Queue
from aq.usecases.archive import archive
from tests.helpers.cli import Ran, aq_env, run_aq
from tests.helpers.fleet import fleet_in
from tests.helpers.git import files_at, git, head, jobs_at
from tests.helpers.queue import write_job

NOW = datetime.now(UTC)
FORGE_LIMIT = 3000  # GitHub's entries in one folder


def final_events(job_id: str, stage: str, final_at: datetime) -> str:
    """A job's event log as a worker would leave it: added, claimed, finished into `stage`."""
    token = f"1.w1.{job_id[-4:]}"
    events = [
        {"ts": iso(final_at - timedelta(minutes=9)), "type": "added", "by": "me@host", "to": "inbox"},
        {"ts": iso(final_at - timedelta(minutes=5)), "type": "claimed", "by": "w1", "from": "inbox",
         "to": "building", "attempt": 1, "token": token},
        {"ts": iso(final_at), "type": "finished", "by": "w1", "from": "building", "to": stage,
         "action": "autoship" if stage == "shipped" else "fail", "attempt": 1, "token": token,
         "outcome": "ok" if stage == "shipped" else "engine_failed",
         "log": f"queue/.logs/{job_id}/1.log"},
    ]
    return "".join(json.dumps(event) + "\n" for event in events)


def write_final(root: Path, job_id: str, stage: str, final_at: datetime, *, log: bool = False
                ) -> None:
    """A final job's file and event log (and attempt log) written straight into the queue."""
    (root / "queue" / stage / f"{job_id}.md").write_text(f"---\ntitle: job {job_id}\n---\necho {job_id}\n")
    (root / "queue" / ".events" / f"{job_id}.jsonl").write_text(final_events(job_id, stage, final_at))
    if log:
        (root / "queue" / ".logs" / job_id).mkdir(parents=True, exist_ok=True)
        (root / "queue" / ".logs" / job_id / "1.log").write_text(f"the log of {job_id}\n")


def commit_all(root: Path, message: str) -> None:
    git(root, "add", "-A")
    git(root, "commit", "-q", "--no-verify", "-m", message)


def archive_ref(root: Path) -> str:
    """The ref holding the archive of the branch checked out at `root`, in a queue with no remote."""
    return f"refs/aq/archive/{git(root, 'symbolic-ref', '--short', 'HEAD').strip()}"


def largest_folders(root: Path) -> list[tuple[int, str]]:
    """The three fullest folders under queue/ in the work tree, by their entries."""
    sizes = [(len(names) + len(dirs), os.path.relpath(top, root))
             for top, dirs, names in os.walk(root / "queue")]
    return sorted(sizes, reverse=True)[:3]


def listed(ran: Ran) -> dict[str, dict[str, object]]:
    assert ran.returncode == 0, ran.stderr
    return {job["id"]: job for job in json.loads(ran.stdout)}


@pytest.fixture
def busy_queue(queue_root: Path) -> Iterator[Path]:
    """5,000 shipped jobs final over 14 days ago (3,500 in one month, 1,500 in the next, a
    hundred with a log), and a few recent ones: written directly and committed once."""
    old = NOW - timedelta(days=80)
    month = datetime(old.year, old.month, 1, 12, tzinfo=UTC)
    following = (month + timedelta(days=32)).replace(day=1)
    for index in range(5000):
        final_at = (month if index < 3500 else following) + timedelta(minutes=index)
        write_final(queue_root, f"old-{index:04d}", "shipped", final_at, log=index % 50 == 0)
    write_final(queue_root, "old-failed", "failed", month, log=True)
    write_final(queue_root, "fresh-shipped", "shipped", NOW - timedelta(days=1))
    write_job(queue_root, "waiting", "echo hi", deps=["old-0007"])
    commit_all(queue_root, "5,000 shipped jobs")
    yield queue_root


@pytest.mark.slow  # 5,000 jobs written, archived and looked for: 18 s, not an edit-test loop's
def test_archive_moves_5000_shipped_jobs_into_dated_parts_and_every_command_still_finds_them(
        busy_queue: Path) -> None:
    """After `aq archive`, no folder of the queue nears GitHub's 3,000 entries, `aq ls` shows
    the recent jobs only, and `ls --all`, `show`, `logs` and `fsck --history` find every job."""
    root = busy_queue
    assert largest_folders(root)[0][0] > FORGE_LIMIT  # queue/shipped and queue/.events, before

    dry = run_aq("archive", "--dry-run", cwd=root)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[-1] == ("would archive 5001 job(s) final for over 14 day(s) "
                                          "in 11 commit(s)")
    assert git(root, "status", "--porcelain") == ""
    assert len(list((root / "queue" / "shipped").glob("*.md"))) == 5001

    before = head(root)
    moved = run_aq("archive", cwd=root, timeout=120)
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.splitlines()[-1] == ("archived 5001 job(s) final for over 14 day(s) "
                                             "in 11 commit(s)")
    assert git(root, "rev-list", "--count", f"{before}..HEAD").strip() == "11"
    assert git(root, "status", "--porcelain") == ""
    on_branch = files_at(root, "HEAD", "queue")
    assert [path for path in on_branch if "old-" in path or "archive" in path] == []
    assert len(jobs_at(root, archive_ref(root))) == 5001
    assert git(root, "rev-list", "--count", archive_ref(root)).strip() == "11"

    fullest, where = largest_folders(root)[0]
    assert fullest <= PART_SIZE + 1, where  # a part's stage folder: its jobs (and a .gitkeep)
    parts = sorted({str(path.parent.parent.relative_to(root))
                    for path in (root / "queue" / ".archive").glob("*/*/*/shipped/*.md")})
    assert len(parts) == 6  # 3,500 jobs in 4 parts of their month, 1,500 in 2 of the next
    assert (root / parts[0] / "shipped" / "old-0000.md").is_file()
    assert (root / parts[0] / ".events" / "old-0000.jsonl").is_file()
    assert (root / parts[0] / ".logs" / "old-0000" / "1.log").is_file()
    assert not (root / "queue" / ".logs" / "old-0000").exists()

    recent = listed(run_aq("ls", "--json", cwd=root))
    assert set(recent) == {"fresh-shipped", "waiting"}
    everything = listed(run_aq("ls", "--all", "--json", cwd=root))
    assert len(everything) == 5003
    assert everything["old-4999"]["archived"] is True and everything["old-4999"]["stage"] == "shipped"
    assert everything["fresh-shipped"]["archived"] is False

    shown = run_aq("show", "old-3600", "--json", cwd=root)
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert (detail["stage"], detail["archived"]) == ("shipped", True)
    assert [event["type"] for event in detail["events"]] == ["added", "claimed", "finished", "archived"]
    assert run_aq("show", "old-failed", cwd=root).stdout.splitlines()[1].startswith(
        "  stage:    failed (archived: queue/.archive/")
    assert run_aq("logs", "old-0050", cwd=root).stdout == "the log of old-0050\n"

    checked = run_aq("fsck", "--history", cwd=root, timeout=120)
    assert checked.returncode == 0, checked.stdout
    assert checked.stderr.startswith("5003 jobs, ")

    ready = run_aq("next", "--json", cwd=root)  # its dep is shipped, in the archive
    assert json.loads(ready.stdout)["next"]["id"] == "waiting", ready.stdout
    assert run_aq("lint", cwd=root).returncode == 0


def test_archive_rejects_a_bad_duration_in_one_line(queue_root: Path) -> None:
    """A bad --older-than is a usage error: one line naming it, exit 2, nothing moved."""
    for bad in ("soon", "-3d", ""):
        ran = run_aq("archive", "--older-than", bad, cwd=queue_root)
        assert ran.returncode == 2
        assert ran.stderr.startswith(f"aq: --older-than {bad!r}: ") and ran.stderr.count("\n") == 1


def test_a_requeued_archived_job_moves_back_and_a_refused_move_leaves_it_archived(
        queue_root: Path) -> None:
    """`aq requeue` of an archived failed job brings its file, events and logs back and puts it
    in the inbox in one commit; a move the job's stage does not allow changes nothing. The
    archive's old copy is outranked by the stage folder's, and replaced when it is archived
    again."""
    long_ago = NOW - timedelta(days=60)
    write_final(queue_root, "broke", "failed", long_ago, log=True)
    write_final(queue_root, "done", "shipped", long_ago)
    commit_all(queue_root, "two final jobs")
    assert run_aq("archive", cwd=queue_root).returncode == 0

    refused = run_aq("cancel", "done", cwd=queue_root)
    assert refused.returncode == 1 and "it is in shipped" in refused.stderr
    assert git(queue_root, "status", "--porcelain") == ""
    assert not (queue_root / "queue" / "shipped" / "done.md").exists()

    requeued = run_aq("requeue", "bro", cwd=queue_root)  # a prefix finds an archived job too
    assert requeued.returncode == 0, requeued.stderr
    assert requeued.stdout.startswith("broke: failed -> inbox")
    assert (queue_root / "queue" / "inbox" / "broke.md").is_file()
    assert (queue_root / "queue" / ".logs" / "broke" / "1.log").is_file()
    kinds = [json.loads(line)["type"] for line in
             (queue_root / "queue" / ".events" / "broke.jsonl").read_text().splitlines()]
    assert kinds[-3:] == ["archived", "unarchived", "moved"]
    assert git(queue_root, "status", "--porcelain") == ""
    checked = run_aq("fsck", "--history", cwd=queue_root)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # the archive's ref keeps its copy, which the stage folder's outranks everywhere
    [old_copy] = (queue_root / "queue" / ".archive").glob("*/*/*/failed/broke.md")
    everything = listed(run_aq("ls", "--all", "--json", cwd=queue_root))
    assert (everything["broke"]["stage"], everything["broke"]["archived"]) == ("inbox", False)
    assert json.loads(run_aq("show", "broke", "--json", cwd=queue_root).stdout)["stage"] == "inbox"

    # final again and archived again: it takes the place of its old copy, with all its events
    assert run_aq("cancel", "broke", cwd=queue_root).returncode == 0
    later = archive(Queue(queue_root), now=NOW + timedelta(days=30), older_than=86400)
    assert [(item.job_id, item.stage) for item in later.moved] == [("broke", "failed")]
    assert not (queue_root / "queue" / "failed" / "broke.md").exists()
    assert [path.name for path in (queue_root / "queue" / ".archive").rglob("broke*.md")] == ["broke.md"]
    kinds = [json.loads(line)["type"] for line in
             (old_copy.parent.parent / ".events" / "broke.jsonl").read_text().splitlines()]
    assert kinds[-4:] == ["unarchived", "moved", "moved", "archived"]
    assert run_aq("fsck", cwd=queue_root).returncode == 0


def test_the_use_case_moves_only_what_is_due_at_most_limit_a_batch_per_commit(queue: Queue) -> None:
    """`archive(queue, now=..., older_than=..., limit=...)`: jobs final for longer than
    older_than at `now`, oldest first, `batch` per commit; the rest is counted as left."""
    root = queue.root
    for index in range(7):
        write_final(root, f"job-{index}", "shipped", NOW - timedelta(days=20 - index))
    write_final(root, "young", "failed", NOW - timedelta(days=2))
    commit_all(root, "final jobs")

    planned = archive(queue, now=NOW, older_than=3 * 86400, dry_run=True)
    assert [item.job_id for item in planned.moved] == [f"job-{index}" for index in range(7)]
    assert planned.commits == 0 and git(root, "status", "--porcelain") == ""

    before = head(root)
    done = archive(queue, now=NOW, older_than=3 * 86400, limit=5, batch=2)
    assert [item.job_id for item in done.moved] == [f"job-{index}" for index in range(5)]
    assert (done.commits, done.left) == (3, 2)
    assert git(root, "rev-list", "--count", f"{before}..HEAD").strip() == "3"
    rest = archive(queue, now=NOW + timedelta(days=30), older_than=3 * 86400)
    assert sorted(item.job_id for item in rest.moved) == ["job-5", "job-6", "young"]


# Every file opened and every folder listed inside a part of the archive, by a process that
# has this as its sitecustomize (listing the year and month folders to find a part is allowed:
# it is how an inbox job's dep that no stage folder holds is looked for).
AUDIT = '''
import os, sys
def _hook(event, args):
    if event in ("open", "os.scandir", "os.listdir") and args and args[0] is not None:
        path = os.fsdecode(args[0]) if isinstance(args[0], (str, bytes, os.PathLike)) else ""
        inside = path.partition("/queue/.archive")[2].strip("/").split("/")
        if "/queue/.archive/" in path and (event == "open" or len(inside) > 3):
            with open(os.environ["AQ_TEST_AUDIT"], "a") as out:
                out.write(event + " " + path + "\\n")
sys.addaudithook(_hook)
'''


def test_everyday_reads_and_a_claim_never_look_inside_the_archive(queue_root: Path,
                                                                  tmp_path: Path) -> None:
    """`aq ls --stage inbox`, `aq next` and `aq run --once` open and list nothing under
    queue/.archive (Python's audit events say what a process opens and lists)."""
    for index in range(30):
        write_final(queue_root, f"old-{index}", "shipped", NOW - timedelta(days=30), log=True)
    commit_all(queue_root, "old jobs")
    assert run_aq("archive", cwd=queue_root).returncode == 0
    write_job(queue_root, "work", "true", deps=["old-3"])
    commit_all(queue_root, "a job")

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(AUDIT)
    seen = tmp_path / "seen.txt"
    seen.write_text("")
    env = aq_env({"PYTHONPATH": f"{hook}{os.pathsep}{aq_env()['PYTHONPATH']}",
                  "AQ_TEST_AUDIT": str(seen)})
    for args in (("ls", "--stage", "inbox", "--json"), ("next", "--json"), ("run", "--once")):
        done = subprocess.run([sys.executable, "-m", "aq", *args], cwd=queue_root, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert (queue_root / "queue" / "review" / "work.md").is_file()  # it was claimed and run
    assert seen.read_text() == ""
    everything = subprocess.run([sys.executable, "-m", "aq", "ls", "--all", "--json"],
                                cwd=queue_root, env=env, capture_output=True, timeout=120)
    assert everything.returncode == 0
    assert "/shipped/old-7.md" in seen.read_text()  # the hook does see what --all reads


def test_a_worker_runs_in_shallow_and_partial_clones_and_fsck_history_asks_for_the_whole(
        tmp_path: Path) -> None:
    """Clones made with `--depth 5` and with `--filter=blob:none` of a queue with a long
    history claim and run a job, archive and push; `fsck --history` refuses a shallow clone
    in one line and checks a partial clone's whole history."""
    with fleet_in(tmp_path, 0) as fleet:
        seed = fleet.seed
        long_ago = NOW - timedelta(days=40)
        for index in range(40):  # a history of 40 commits, each with a job made final
            write_final(seed, f"old-{index}", "shipped", long_ago + timedelta(hours=index))
            commit_all(seed, f"job {index}")
        git(seed, "push", "-q", "origin", "HEAD:main")
        git(fleet.bare, "config", "uploadpack.allowFilter", "true")
        url = f"file://{fleet.bare}"
        shallow, partial = tmp_path / "shallow", tmp_path / "partial"
        git(tmp_path, "clone", "-q", "--depth", "5", url, str(shallow))
        git(tmp_path, "clone", "-q", "--filter=blob:none", url, str(partial))
        assert git(shallow, "rev-parse", "--is-shallow-repository").strip() == "true"

        for clone in (shallow, partial):
            added = run_aq("add", "--id", f"job-in-{clone.name}", "--body", "true", cwd=clone)
            assert added.returncode == 0, added.stderr
            ran = run_aq("run", "--once", cwd=clone, timeout=120)
            assert ran.returncode == 0, ran.stderr
            assert (clone / "queue" / "review" / f"job-in-{clone.name}.md").is_file()

        archived = run_aq("archive", "--json", cwd=shallow, timeout=120)
        assert archived.returncode == 0, archived.stderr
        assert len(json.loads(archived.stdout)["moved"]) == 40
        tree = files_at(fleet.bare, "refs/aq/archive/main")
        assert len([path for path in tree if "/shipped/" in path]) == 40
        assert not [path for path in files_at(fleet.bare, "main") if "old-" in path]

        refused = run_aq("fsck", "--history", cwd=shallow)
        assert refused.returncode == 1
        assert "clone is shallow" in refused.stderr and refused.stderr.count("\n") == 1
        assert run_aq("fsck", cwd=shallow).returncode == 0

        pulled = run_aq("ls", "--fetch", "--json", cwd=partial)
        assert pulled.returncode == 0, pulled.stderr
        assert (partial / "queue" / ".archive").is_dir()
        assert run_aq("show", "old-7", cwd=partial).returncode == 0
        checked = run_aq("fsck", "--history", cwd=partial, timeout=120)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_an_add_with_the_key_of_an_archived_job_finds_it(queue_root: Path) -> None:
    """A second add with an idempotency key an archived job was made with adds nothing (other
    content: refused), as it would with the job still in its stage folder: each part keeps its
    jobs' keys, so the add reads one small file a part."""
    long_ago = NOW - timedelta(days=60)
    (queue_root / "queue" / "shipped" / "nightly.md").write_text(
        "---\ntitle: nightly\nidempotency-key: nightly-2026-10-01\n---\necho nightly\n")
    (queue_root / "queue" / ".events" / "nightly.jsonl").write_text(
        final_events("nightly", "shipped", long_ago))
    write_final(queue_root, "other", "shipped", long_ago)
    commit_all(queue_root, "a job made with a key, shipped long ago")
    assert run_aq("archive", cwd=queue_root).returncode == 0
    [keys] = (queue_root / "queue" / ".archive").rglob("keys.json")
    assert json.loads(keys.read_text()) == {"nightly-2026-10-01": "nightly"}
    listed_all = run_aq("ls", "--all", cwd=queue_root)  # keys.json is the part's, no stray file
    assert listed_all.returncode == 0 and listed_all.stderr == "", listed_all.stderr

    again = run_aq("add", "--title", "nightly", "--key", "nightly-2026-10-01", "--body",
                   "echo nightly", cwd=queue_root)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "nightly\n" and "already exists with this idempotency key" in again.stderr
    assert list((queue_root / "queue" / "inbox").glob("*.md")) == []
    other = run_aq("add", "--key", "nightly-2026-10-01", "--body", "echo something else",
                   cwd=queue_root)
    assert other.returncode == 1 and "already made job nightly" in other.stderr
