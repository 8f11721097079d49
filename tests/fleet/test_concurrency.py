"""Several `aq run` processes on one queue: each job runs once, locks exclude, deps come first."""

from __future__ import annotations

import itertools
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers.git import git
from tests.helpers.queue import STAGES, stage_of, write_job
from tests.helpers.workers import Workers

pytestmark = pytest.mark.slow


def commit_inbox(root: Path) -> None:
    """Commit the hand-dropped jobs, as a person would after writing them."""
    git(root, "add", "queue/inbox")
    git(root, "commit", "-q", "-m", "add jobs by hand")


def drain_together(pool: Workers, count: int) -> None:
    """Start `count` draining workers at once (half running two jobs each) and wait for them to exit cleanly."""
    procs = [pool.start("--drain", "--worker", f"w{n}", "--max", str(1 + n % 2)) for n in range(count)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, pool.stderr(proc)
        assert "Traceback" not in pool.stderr(proc)


def jobs_by_stage(root: Path) -> dict[str, list[str]]:
    return {stage: sorted(p.stem for p in (root / "queue" / stage).glob("*.md")) for stage in STAGES}


def test_fifty_jobs_under_four_workers_each_run_exactly_once(
        queue_root: Path, workers: Workers, tmp_path: Path) -> None:
    """50 quick jobs, 4 workers at once: every job ran once, sits in one stage, and every claim is a commit."""
    ledger = tmp_path / "ledger"
    ids = [f"quick-{n:02d}" for n in range(50)]
    for n, job_id in enumerate(ids):
        keys = {"verify": "true"} if n % 2 else {}
        write_job(queue_root, job_id, f'echo "$AQ_JOB_ID $AQ_ATTEMPT $AQ_WORKER_ID" >> {ledger}', **keys)
    commit_inbox(queue_root)
    drain_together(workers, 4)

    rows = [line.split() for line in ledger.read_text().splitlines()]
    assert Counter(row[0] for row in rows) == Counter(ids)  # each job exactly once
    assert {row[1] for row in rows} == {"1"}
    assert {row[2] for row in rows} <= {"w0", "w1", "w2", "w3"}

    stages = jobs_by_stage(queue_root)
    assert stages["testing"] == [i for n, i in enumerate(ids) if n % 2]
    assert stages["review"] == [i for n, i in enumerate(ids) if not n % 2]
    placed = [job_id for found in stages.values() for job_id in found]
    assert sorted(placed) == ids  # no job in two stages, none lost

    fsck = subprocess.run(["git", "fsck", "--strict"], cwd=queue_root, capture_output=True,
                          text=True, timeout=60)
    assert fsck.returncode == 0, fsck.stderr
    assert git(queue_root, "status", "--porcelain", "queue") == ""  # nothing left uncommitted

    history = git(queue_root, "log", "--no-renames", "--name-status", "--format=@%s")
    claims: Counter[str] = Counter()
    for commit in history.split("@")[1:]:
        subject, *changes = commit.strip().splitlines()
        # a claim commits alone ("aq: claim X by W") or with the worker's previous result
        # ("aq: Y attempt 1 ok by W; claim X"): one push per job
        claimed = (subject.split()[2] if subject.startswith("aq: claim ")
                   else subject.rsplit("; claim ", 1)[1] if "; claim " in subject else None)
        if claimed is not None:
            job_id = claimed
            claims[job_id] += 1
            assert f"D\tqueue/inbox/{job_id}.md" in changes
            assert f"A\tqueue/building/{job_id}.md" in changes
    assert claims == Counter(ids)


def timed_body(ledger: Path, pause: str = "0.2") -> str:
    """A job that writes its own start and end times (from `date`) into the ledger."""
    return (f'echo "start $AQ_JOB_ID $(date +%s.%N)" >> {ledger}\n'
            f"sleep {pause}\n"
            f'echo "end $AQ_JOB_ID $(date +%s.%N)" >> {ledger}\n')


def test_jobs_sharing_a_lock_never_run_at_the_same_time(
        queue_root: Path, workers: Workers, tmp_path: Path) -> None:
    """With 3 workers, jobs with the same `lock` run one after another; other jobs run alongside."""
    ledger = tmp_path / "ledger"
    groups = {"db": [f"db-{n}" for n in range(4)], "net": [f"net-{n}" for n in range(3)],
              None: [f"free-{n}" for n in range(2)]}
    for lock, ids in groups.items():
        for job_id in ids:
            write_job(queue_root, job_id, timed_body(ledger), **({"lock": lock} if lock else {}))
    commit_inbox(queue_root)
    drain_together(workers, 3)

    lines = [line.split() for line in ledger.read_text().splitlines()]
    times = {(kind, job_id): float(stamp) for kind, job_id, stamp in lines}
    for lock, ids in groups.items():
        assert all(stage_of(queue_root, job_id) == "review" for job_id in ids)
        if lock is None:
            continue
        spans = sorted((times["start", j], times["end", j], j) for j in ids)
        for (_, end, before), (start, _, after) in itertools.pairwise(spans):
            assert start >= end, f"{after} started before {before} ended (lock {lock})"
        in_order = [(kind, job_id) for kind, job_id, _ in lines if job_id in ids]
        for (kind, job_id), (next_kind, next_id) in itertools.pairwise(in_order):
            if kind == "start":  # a start is always followed by its own end within the lock
                assert (next_kind, next_id) == ("end", job_id), in_order


def test_a_job_never_starts_before_its_deps_are_in_testing_or_shipped(
        queue_root: Path, workers: Workers, tmp_path: Path) -> None:
    """Dependents wait for their deps to pass verify; a dep that failed keeps its dependents in the inbox."""
    ledger = tmp_path / "ledger"
    graph = {
        "base": [],
        "middle": ["base"],
        "top": ["middle"],
        "joined": ["base", "top"],
        "side": ["base"],
        "broken": [],
        "after-broken": ["broken"],
    }
    for job_id, deps in graph.items():
        checks = "".join(
            f'if [ -f "$AQ_QUEUE/queue/testing/{dep}.md" ] || [ -f "$AQ_QUEUE/queue/shipped/{dep}.md" ];'
            f' then echo "ok $AQ_JOB_ID {dep}" >> {ledger}; else echo "EARLY $AQ_JOB_ID {dep}" >> {ledger}; fi\n'
            for dep in deps)
        write_job(queue_root, job_id, checks + f'echo "ran $AQ_JOB_ID" >> {ledger}\nsleep 0.1',
                  verify="false" if job_id == "broken" else "true",
                  priority="low" if not deps else "critical", **({"deps": deps} if deps else {}))
    commit_inbox(queue_root)
    drain_together(workers, 3)

    lines = ledger.read_text().splitlines()
    assert not [line for line in lines if line.startswith("EARLY")], lines
    ran = [line.split()[1] for line in lines if line.startswith("ran ")]
    assert sorted(ran) == sorted(set(graph) - {"after-broken"})
    for job_id, deps in graph.items():
        for dep in deps:
            if job_id in ran:
                assert ran.index(dep) < ran.index(job_id)
    assert stage_of(queue_root, "broken") == "failed"
    assert stage_of(queue_root, "after-broken") == "inbox"
    assert all(stage_of(queue_root, job_id) == "testing"
               for job_id in graph if job_id not in ("broken", "after-broken"))
