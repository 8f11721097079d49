"""The stage store: snapshots through the manifest cache, files that cannot be jobs, atomic writes."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from aq.core.events import CLAIMED
from aq.core.lifecycle import Action, Stage
from aq.errors import AmbiguousJob, GitError, InvalidJobId, JobNotFound, QueueNotFound
from aq.infra.files import write_atomic
from aq.store.eventlog import bad_event_lines
from aq.store.queue import Queue
from aq.store.snapshot import read_job
from aq.usecases.moves import record_move
from tests.helpers.git import git_in, head
from tests.helpers.queue import T0, write_job


def cache_file(queue: Queue) -> Path:
    return queue.state_dir / "cache.pickle"


def cold(queue: Queue) -> object:
    """A snapshot read with no cache at all."""
    cache_file(queue).unlink(missing_ok=True)
    return Queue(queue.root).snapshot()


@pytest.fixture
def varied(queue: Queue) -> Queue:
    """Valid jobs in several stages, one with events, one invalid manifest and one bad file name."""
    write_job(queue.root, "plain", title="Plain")
    write_job(queue.root, "locked", stage="building", lock="db", priority="high")
    write_job(queue.root, "broken", timeout="forever")
    write_job(queue.root, "Not An Id")
    queue.transact(lambda tx: tx.append_event("locked", {
        "ts": "2026-01-01T12:00:00.000000Z", "type": CLAIMED, "by": "w1", "attempt": 1,
        "token": "1.w1"}), "test: claim")
    return queue


# --- the cache -------------------------------------------------------------------------------

def test_a_warm_snapshot_equals_a_cold_read(varied: Queue) -> None:
    """A snapshot served from the cache is equal to one read with no cache."""
    first = varied.snapshot()
    assert cache_file(varied).exists()
    warm = Queue(varied.root).snapshot()
    assert warm == first == cold(varied)
    assert {job.id for job in warm.jobs} == {"plain", "locked", "broken"}


def test_the_cache_sees_a_changed_manifest(varied: Queue) -> None:
    """Editing a manifest after a snapshot shows the new values in the next snapshot."""
    varied.snapshot()
    path = varied.job_path(Stage.INBOX, "broken")
    path.write_text("---\ntimeout: 45m\npriority: critical\n---\necho fixed\n")
    job = Queue(varied.root).snapshot().by_id()["broken"]
    assert job.error is None and job.manifest is not None
    assert (job.manifest.timeout, job.manifest.priority) == (2700.0, "critical")


def test_the_cache_sees_a_new_event(varied: Queue) -> None:
    """An event appended after a snapshot changes the job's state in the next snapshot."""
    assert varied.snapshot().by_id()["plain"].state.holder is None
    varied.transact(lambda tx: tx.append_event("plain", {
        "ts": "2026-01-01T12:00:00.000000Z", "type": CLAIMED, "by": "w2", "attempt": 1,
        "token": "1.w2"}), "test: claim")
    assert Queue(varied.root).snapshot().by_id()["plain"].state.holder == "w2"


def test_the_cache_forgets_a_deleted_job(varied: Queue) -> None:
    """A job whose file is removed is gone from the next snapshot."""
    varied.snapshot()
    varied.job_path(Stage.INBOX, "plain").unlink()
    assert "plain" not in Queue(varied.root).snapshot().by_id()


def test_a_warm_snapshot_equals_a_cold_read_after_an_invalid_job_moved(varied: Queue) -> None:
    """After an invalid job is moved to another stage, the cached snapshot still equals a cold read."""
    varied.snapshot()
    record_move(varied, "broken", Action.CANCEL, who="tester@bench", now=T0)
    warm = Queue(varied.root).snapshot()
    assert str(warm.by_id()["broken"].error).startswith("queue/failed/broken.md: ")
    assert warm == cold(varied)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "directory"])
def test_a_damaged_cache_is_ignored(varied: Queue, damage: str) -> None:
    """A cache file that is garbage, cut short, or not a file gives the same snapshot as a cold read."""
    expected = cold(varied)
    varied.snapshot()
    path = cache_file(varied)
    if damage == "garbage":
        path.write_bytes(b"not a pickle at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.unlink()
        path.mkdir()
    assert Queue(varied.root).snapshot() == expected
    assert Queue(varied.root).snapshot() == expected


# --- files that are not one job --------------------------------------------------------------

def test_a_job_in_two_stages_is_reported_once(queue: Queue) -> None:
    """A job file in two stage folders appears once as a job and once as a problem naming both stages."""
    write_job(queue.root, "twin")
    write_job(queue.root, "twin", stage="shipped")
    snapshot = queue.snapshot()
    assert [job.id for job in snapshot.jobs] == ["twin"]
    assert len(snapshot.problems) == 1
    assert "twin" in snapshot.problems[0]
    assert "inbox" in snapshot.problems[0] and "shipped" in snapshot.problems[0]


def test_a_file_name_that_is_not_an_id_is_a_problem_not_a_job(queue: Queue) -> None:
    """`Fix Login.md` in a stage folder is a problem suggesting a name; dotfiles and non-.md files are ignored."""
    inbox = queue.qdir / "inbox"
    (inbox / "Fix Login.md").write_text("echo\n")
    (inbox / "notes.txt").write_text("not a job\n")
    (inbox / ".draft.md").write_text("echo\n")
    snapshot = queue.snapshot()
    assert snapshot.jobs == ()
    assert len(snapshot.problems) == 1 and "fix-login.md" in snapshot.problems[0]


# --- finding the queue and a job -------------------------------------------------------------

def test_locate_walks_up_to_the_queue(queue: Queue) -> None:
    """Queue.locate from a folder deep inside the queue finds its root."""
    deep = queue.root / "src" / "pkg"
    deep.mkdir(parents=True)
    assert Queue.locate(cwd=deep).root == queue.root


def test_locate_refuses_a_folder_that_is_not_a_queue(tmp_path: Path) -> None:
    """An explicit folder with no queue/inbox is QueueNotFound, as is a walk that finds none."""
    with pytest.raises(QueueNotFound, match="is not an aq queue"):
        Queue.locate(str(tmp_path))
    with pytest.raises(QueueNotFound, match="no aq queue here or above"):
        Queue.locate(cwd=tmp_path)


def test_resolve_takes_an_id_a_prefix_or_a_file_name(queue: Queue) -> None:
    """resolve accepts the exact id, a unique prefix or `id.md`, preferring an exact id over longer ones."""
    write_job(queue.root, "fix")
    write_job(queue.root, "fix-login")
    write_job(queue.root, "docs-pass")
    assert queue.resolve("fix").id == "fix"
    assert queue.resolve("fix-").id == "fix-login"
    assert queue.resolve("docs").id == "docs-pass"
    assert queue.resolve("docs-pass.md").id == "docs-pass"


def test_resolve_refuses_ambiguous_missing_and_path_refs(queue: Queue) -> None:
    """resolve refuses a prefix of two jobs naming both, an unknown id, and any path."""
    write_job(queue.root, "fix-login")
    write_job(queue.root, "fix-logout")
    with pytest.raises(AmbiguousJob, match="fix-login, fix-logout"):
        queue.resolve("fix-log")
    with pytest.raises(JobNotFound):
        queue.resolve("nothing")
    for ref in ("../fix-login", "queue/inbox/fix-login", "fix-login/.."):
        with pytest.raises(InvalidJobId):
            queue.resolve(ref)


# --- event logs ------------------------------------------------------------------------------

def test_an_event_after_a_torn_line_starts_its_own_line(queue: Queue) -> None:
    """Appending to a log whose last line was torn by a crash keeps the new event whole and readable."""
    write_job(queue.root, "crashy")
    queue.events_path("crashy").write_text(
        '{"ts":"2026-01-01T12:00:00.000000Z","type":"added","by":"x","to":"inbox"}\n{"ts":"2026-')
    queue.transact(lambda tx: tx.append_event("crashy", {"ts": "2026-01-01T12:05:00.000000Z",
                                                          "type": "note", "by": "x"}), "test")
    assert [e["type"] for e in queue.read_events("crashy")] == ["added", "note"]
    assert bad_event_lines(queue.events_path("crashy")) == [2]


def test_a_transaction_that_touches_nothing_makes_no_commit(queue: Queue) -> None:
    """transact returns the change's result and commits only when the change wrote something."""
    before = head(queue.root)
    assert queue.transact(lambda tx: 42, "test: nothing") == 42
    assert head(queue.root) == before
    queue.transact(lambda tx: tx.write(queue.qdir / "note.txt", "hi\n"), "test: note")
    assert head(queue.root) != before


def test_a_commit_that_fails_leaves_neither_the_files_nor_the_index_changed(queue: Queue) -> None:
    """A transaction whose commit git refuses puts its files back, and the index too: it once
    left the move staged (`RD failed/j.md -> inbox/j.md`) for a person's next commit to take.
    git refuses here because a folder stands where a committed event log was."""
    write_job(queue.root, "other", stage="failed")
    write_job(queue.root, "j", stage="failed")
    (queue.qdir / ".events" / "other.jsonl").write_text("{}\n")
    git_in(queue.root, "add", "-A")
    git_in(queue.root, "commit", "-qm", "two failed jobs")
    (queue.qdir / ".events" / "other.jsonl").unlink()
    (queue.qdir / ".events" / "other.jsonl").mkdir()
    with pytest.raises(GitError):
        record_move(queue, "j", Action.REQUEUE, who="ann", now=T0)
    assert (queue.qdir / "failed" / "j.md").is_file()
    assert not (queue.qdir / "inbox" / "j.md").exists()
    assert git_in(queue.root, "status", "--porcelain", "--", "queue").splitlines() == [
        " D queue/.events/other.jsonl"]


# --- write_atomic ----------------------------------------------------------------------------

OLD, NEW = b"o" * (1 << 18), b"n" * (1 << 18)


def read_while(path: Path, writers: list[threading.Thread]) -> list[int]:
    """Read `path` until the writers end; the sizes of reads that were neither OLD nor NEW."""
    torn: list[int] = []
    for writer in writers:
        writer.start()
    while any(writer.is_alive() for writer in writers):
        data = path.read_bytes()
        if data not in (OLD, NEW):
            torn.append(len(data))
    for writer in writers:
        writer.join()
    return torn


def test_write_atomic_readers_see_old_or_new_never_half(tmp_path: Path) -> None:
    """A reader racing a writer of large contents only ever sees a whole old or whole new file."""
    path = tmp_path / "state.bin"
    write_atomic(path, OLD)

    def flip() -> None:
        for n in range(150):
            write_atomic(path, NEW if n % 2 else OLD)

    assert read_while(path, [threading.Thread(target=flip)]) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"]


def test_write_atomic_writes_text_and_makes_folders(tmp_path: Path) -> None:
    """write_atomic creates missing parent folders and writes str as UTF-8."""
    path = tmp_path / "a" / "b" / "note.md"
    write_atomic(path, "ünïcode\n")
    assert path.read_bytes() == "ünïcode\n".encode()
    assert sorted(p.name for p in path.parent.iterdir()) == ["note.md"]


def test_write_atomic_from_two_threads_never_tears_the_file(tmp_path: Path) -> None:
    """Two threads of one process writing one path leave only whole files and raise nothing."""
    path = tmp_path / "cache.bin"
    write_atomic(path, OLD)
    errors: list[BaseException] = []

    def keep_writing(data: bytes) -> None:
        for _ in range(100):
            try:
                write_atomic(path, data)
            except OSError as err:
                errors.append(err)

    threads = [threading.Thread(target=keep_writing, args=(data,)) for data in (OLD, NEW)]
    torn = read_while(path, threads)
    assert (errors, torn) == ([], [])
    assert path.read_bytes() in (OLD, NEW)
    assert os.listdir(tmp_path) == ["cache.bin"]


# --- one job read alone, and when the cache is rewritten ----------------------------------------

def test_a_job_named_by_its_whole_id_is_read_alone_and_equals_the_snapshots(varied: Queue) -> None:
    snapshot = varied.snapshot()
    for job in snapshot.jobs:
        alone = read_job(varied.layout, job.id)
        assert alone == job
        assert Queue(varied.root).resolve(job.id) == job


def test_what_only_the_whole_snapshot_can_say_is_left_to_it(varied: Queue) -> None:
    """A job in two stages, a link in a stage, a prefix or no such job: read_job declines, and
    resolve says what the snapshot says."""
    write_job(varied.root, "twice", title="first")
    write_job(varied.root, "twice", stage="review", title="second")
    (varied.root / "queue" / "inbox" / "linked.md").symlink_to(varied.root / "aq.yaml")
    for job_id in ("twice", "linked", "plai", "nothing", "Not An Id"):
        assert read_job(varied.layout, job_id) is None
    assert Queue(varied.root).resolve("twice").error is not None  # the snapshot's problem
    assert Queue(varied.root).resolve("plai").id == "plain"
    with pytest.raises(JobNotFound):
        Queue(varied.root).resolve("nothing")


def test_a_few_changed_entries_do_not_rewrite_a_big_cache_yet_every_read_sees_them(
        queue: Queue) -> None:
    for n in range(300):  # the cache is rewritten once 3 entries (1 in 100) changed
        write_job(queue.root, f"job-{n:03}", title=f"job {n}")
    queue.snapshot()
    written = cache_file(queue).stat().st_mtime_ns, cache_file(queue).stat().st_ino
    write_job(queue.root, "job-007", title="renamed once")
    assert Queue(queue.root).snapshot().by_id()["job-007"].manifest.title == "renamed once"
    assert (cache_file(queue).stat().st_mtime_ns, cache_file(queue).stat().st_ino) == written
    for n in (8, 9):
        write_job(queue.root, f"job-{n:03}", title="renamed too")
    warm = Queue(queue.root).snapshot()
    assert (cache_file(queue).stat().st_mtime_ns, cache_file(queue).stat().st_ino) != written
    assert warm == cold(queue)
