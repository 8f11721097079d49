"""The tracker bridge across two clones of one remote: an item imported from both at once makes one
job, and a post left owed by a worker that is gone is taken over and sent exactly once."""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aq.core.events import POSTED, POSTING, parse_iso
from aq.core.lifecycle import Action
from aq.store.queue import Queue
from aq.usecases.moves import record_move
from aq.usecases.tracker_delivery import new_run, posts_due, take_over, wall_age
from aq.usecases.tracker_import import import_refs, linked_job
from tests.helpers.fleet import Fleet, can_fake_hosts, fleet_in
from tests.helpers.git import git
from tests.helpers.queue import T0
from tests.helpers.trackers import FakeTracker, configure

pytestmark = pytest.mark.slow

ROUNDS = 4
GONE = "gone@oldhost"  # a person whose machine is gone: its moves' posts are left owed


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with fleet_in(tmp_path / "fleet", 0) as made:
        yield made


@pytest.fixture
def tracker(tmp_path: Path) -> FakeTracker:
    return FakeTracker(tmp_path / "tracker")


def two_clones(fleet: Fleet, tracker: FakeTracker) -> tuple[Path, Path]:
    """The tracker in the queue's aq.yaml (takeover 1s), pushed; then two clones of the remote."""
    configure(fleet.seed, tracker, takeover="1s")
    git(fleet.seed, "push", "-q", "origin", "HEAD:main")
    return fleet.clone(), fleet.clone()


def linked_on_remote(fleet: Fleet, ref: str) -> list[str]:
    """The jobs the remote's main holds that were made from the item."""
    fleet.pull_seed()
    return sorted(job.id for job in Queue(fleet.seed).snapshot().jobs
                  if job.manifest and job.manifest.tracker_item == ref)


def test_the_same_item_imported_from_two_clones_at_once_yields_one_job(
        fleet: Fleet, tracker: FakeTracker) -> None:
    """Idempotency under concurrency: the same item imported from two clones at once yields one job."""
    clones = two_clones(fleet, tracker)
    for n in range(ROUNDS):
        ref = tracker.add(str(n), f"Item {n}", f"echo {n}")
        gate = fleet.base / f"gate-{n}"
        procs = [fleet.start(clone, "from-tracker", "--json", ref, name=f"import-{n}-{c}", gate=gate)
                 for c, clone in enumerate(clones)]
        fleet.release(gate, len(procs))
        rows = []
        for proc in procs:
            assert fleet.finish(proc) == 0, fleet.err(proc)
            assert "Traceback" not in fleet.err(proc)
            [row] = json.loads(fleet.out(proc))
            rows.append(row)
        assert sorted(row["outcome"] for row in rows) == ["added", "unchanged"], rows
        [job_id] = {row["job"] for row in rows}
        assert linked_on_remote(fleet, ref) == [job_id]
        assert fleet.stage(job_id) == "inbox"
        assert [e["tracker_item"] for e in fleet.events(job_id, "added")] == [ref]
    # the race was real: in most rounds both clones committed a job for the item, one push lost
    made = [{line.split()[3] for line in git(clone, "reflog", "--format=%gs").splitlines()
             if line.startswith("commit: aq: import cmd:fake:") and "(added " in line}
            for clone in clones]
    contested = [n for n in range(ROUNDS) if all(f"cmd:fake:{n}" in refs for refs in made)]
    assert len(contested) >= ROUNDS // 2, made
    checked = fleet.aq(fleet.seed, "fsck", "--history")
    assert (checked.returncode, checked.stdout) == (0, ""), checked.stderr


@pytest.mark.skipif(not can_fake_hosts(), reason="needs user and UTS namespaces (unshare)")
def test_a_post_left_by_a_gone_worker_is_taken_over_by_one_clone_and_sent_once(
        fleet: Fleet, tracker: FakeTracker) -> None:
    """Two clones (two machines) sending what a gone worker owes, at once: each comment goes out once."""
    a, b = two_clones(fleet, tracker)
    ref = tracker.add("7", "Say hello", "echo hello")
    assert fleet.aq(a, "from-tracker", ref).returncode == 0
    tracker.fail()
    ran = fleet.aq(a, "run", "--drain", "--worker", "dead-worker")  # ends: gone, posts owed
    assert ran.returncode == 0 and "tracker: cmd:fake" in ran.stdout, ran.stdout + ran.stderr
    tracker.fail(False)
    [job_id] = linked_on_remote(fleet, ref)
    assert fleet.stage(job_id) == "review" and fleet.events(job_id, POSTED) == []
    git(b, "pull", "-q", "--ff-only")
    moved = parse_iso(fleet.events(job_id)[-1]["ts"])
    time.sleep(max(0.0, (moved + timedelta(seconds=1.2) - datetime.now(UTC)).total_seconds()))

    gate = fleet.base / "gate-post"
    procs = [fleet.start(clone, "to-tracker", "--all", "--json", name=f"post-{c}", gate=gate,
                         host=f"machine{c}") for c, clone in enumerate((a, b))]
    fleet.release(gate, len(procs))
    reports = []
    for proc in procs:
        assert fleet.finish(proc) == 0, fleet.err(proc)
        reports.append(json.loads(fleet.out(proc)))
    assert sorted(len(r["sent"]) for r in reports) == [0, 2], reports
    assert all(s["ok"] for r in reports for s in r["sent"])

    assert [(verb, item) for verb, item, _ in tracker.said()] == [
        ("status", "7"), ("comment", "7"), ("comment", "7")]  # the late claim still sets "doing"
    claim, finish = tracker.comments()
    assert claim.endswith("building, attempt 1, by worker `dead-worker`.")
    assert "attempt 1 finished; no verify command; now in review" in finish
    claims, posted = fleet.events(job_id, POSTING), fleet.events(job_id, POSTED)
    # the gone worker claimed its own posts as they grew old (takeover is 1 s: how often depends
    # on the machine's load), and let go of each as it ended, before either clone took one
    gone = [e for e in claims if e["by"] == "dead-worker"]
    assert claims[:len(gone)] == gone
    last = {e["for"]: e for e in gone}
    assert last and all(e.get("released") for e in last.values()), gone
    taken = claims[len(gone):]
    assert not any(e.get("released") for e in taken), taken
    assert len(taken) == 2 and len({e["for"] for e in taken}) == 2
    [winner] = {e["by"] for e in taken}
    assert winner.endswith(("@machine0", "@machine1"))
    assert sorted(e["for"] for e in posted) == sorted(e["for"] for e in taken)
    assert {e["by"] for e in posted} == {winner}


def owed_by_the_gone(fleet: Fleet, tracker: FakeTracker) -> tuple[Path, Path, str]:
    """Two clones; in the first, an item imported and its job canceled long ago by GONE, whose
    post was never sent. The second clone is left as it was cloned."""
    a, b = two_clones(fleet, tracker)
    ref = tracker.add("9", "Never mind", "echo never")
    queue = Queue(a)
    [imported] = import_refs(queue, [ref], now=T0, who=GONE, entropy=itertools.count(1).__next__,
                             new=False, env=dict(os.environ))
    assert imported.outcome == "added", imported.message
    record_move(queue, imported.job_id, Action.CANCEL, who=GONE, now=T0 + timedelta(minutes=1))
    assert fleet.stage(imported.job_id) == "failed"
    return a, b, imported.job_id


@pytest.mark.parametrize("same_person", [False, True])
def test_of_two_clones_taking_one_post_over_only_the_first_wins(
        fleet: Fleet, tracker: FakeTracker, same_person: bool) -> None:
    """Take-over is compare-and-swap: the clone whose tracker_posting lands first wins; the other, later, wins nothing."""
    a, b, job_id = owed_by_the_gone(fleet, tracker)
    git(b, "pull", "-q", "--ff-only")
    now = datetime.now(UTC)
    takers = ("alice@laptop", "alice@laptop" if same_person else "bob@desktop")
    due = []
    for clone, me in zip((a, b), takers, strict=True):
        queue = Queue(clone)
        run = new_run(me)  # one per process: the same person in two clones is two runs
        _, stale, _ = posts_due(queue, [queue.resolve(job_id)], me=me, run=run,
                                age=wall_age(now), takeover=1.0, env=dict(os.environ))
        assert [owed.owner for owed in stale] == [GONE]
        due.append((queue, stale, me, run))
    won = [take_over(queue, stale, me=me, run=run, age=wall_age(now), takeover=1.0, now=now)
           for queue, stale, me, run in due]
    assert [len(w) for w in won] == [1, 0]
    assert [e["by"] for e in fleet.events(job_id, POSTING)] == [takers[0]]


def test_to_tracker_in_a_clone_behind_the_remote_sends_what_is_owed(
        fleet: Fleet, tracker: FakeTracker) -> None:
    """aq to-tracker sends what the queue owes, as the remote holds it, not only what this clone has seen."""
    _, b, job_id = owed_by_the_gone(fleet, tracker)
    assert linked_job(Queue(b).snapshot(), "cmd:fake:9") is None  # b has not fetched since
    ran = fleet.aq(b, "to-tracker", "--all")
    assert ran.returncode == 0, ran.stderr
    assert tracker.comments() == [f"aq job `{job_id}`: cancel by {GONE}: now in failed (canceled)."]
