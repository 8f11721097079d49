"""The fleet over a real network transport (issue 3, test 5): `git daemon` on 127.0.0.1, the claim
race, chaos, and the daemon killed and restarted for an outage shorter than the lease TTL."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.chaos import (
    Fleet,
    Slot,
    audit,
    check_survivors_and_dead_letters,
    run_chaos,
    serve,
)
from tests.helpers.fleet import SOAK, machine_ref
from tests.helpers.git import git
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.slow

ROUNDS = 12 if SOAK else 8
RACERS = 4
OUTAGE = 3.0  # seconds the daemon is down: shorter than the TTL, longer than two heartbeats


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with Fleet(tmp_path, ttl="8s", heartbeat="1s", poll="0.2") as made:
        yield made


def test_over_git_daemon_every_job_has_exactly_one_winner(fleet: Fleet) -> None:
    """Over git://, 4 clones' idle workers race for each new job, 12 rounds: each job is claimed
    by exactly one worker and run exactly once."""
    serve(fleet)
    seed = fleet.seed()
    assert fleet.url.startswith("git://127.0.0.1:")
    clones = [fleet.clone(f"clone{n}") for n in range(RACERS)]
    workers = [fleet.start(f"racer{n}", clone, mode=None) for n, clone in enumerate(clones)]
    ids = []
    for round_ in range(ROUNDS):
        job_id = f"race-{round_:02d}"
        fleet.drop(seed, [job_id])
        ids.append(job_id)
        wait_for(lambda job_id=job_id: fleet.all_final([job_id]), 90, f"round {round_}: {job_id} done")
    for worker in workers:
        assert fleet.stop(worker) == 0, worker.output()

    result = audit(fleet, ids)
    assert result.problems == []
    for job_id in ids:
        claims = [e for e in result.events[job_id] if e["type"] == "claimed"]
        assert len(claims) == 1, (job_id, claims)
    assert (result.executions, result.extra, result.reclaims) == (ROUNDS, 0, 0), result.figures()
    assert set(result.stages.values()) == {"testing"}


def test_chaos_over_git_daemon_with_an_outage_shorter_than_the_lease(fleet: Fleet) -> None:
    """Over git://, workers killed with kill -9 and the daemon killed and restarted for 3 s
    (TTL 8 s): every job ends in one final stage, run once per lease, and no lease of a worker
    that stayed alive expired or was dropped because of the outage."""
    daemon = serve(fleet)
    ids = [f"job-{n:02d}" for n in range(60 if SOAK else 40)]
    fleet.seed(ids)
    clones = [fleet.clone(f"clone{n}") for n in range(2)]
    slots = [Slot(f"t{c}{k}", clone) for c, clone in enumerate(clones) for k in range(2)]
    outage: dict[str, float] = {}

    def break_the_daemon(elapsed: float) -> None:
        if "down" not in outage and elapsed >= 6.0:
            daemon.stop()
            outage["down"] = elapsed
        elif "down" in outage and "up" not in outage and elapsed >= outage["down"] + OUTAGE:
            daemon.start()
            outage["up"] = elapsed

    chaos = run_chaos(fleet, slots, ids, kill_every=(2.0, 4.0), remote_kill_every=(1.0, 3.0),
                      same_name=0.0, deadline=150, extra=break_the_daemon, rng=random.Random())
    assert "up" in outage, "the run ended before the outage was over: it tested nothing"

    result = audit(fleet, ids)
    print(f"transport chaos: {chaos.worker_kills} workers killed, {chaos.remote_kills} remote git "
          f"processes killed, daemon down {OUTAGE}s at {outage['down']:.0f}s; {result.figures()}")
    assert result.problems == []
    check_survivors_and_dead_letters(fleet, result, chaos)


def test_a_draining_worker_outlasts_a_short_outage(fleet: Fleet) -> None:
    """A draining worker that cannot reach the remote for a moment keeps going (claiming
    nothing) and runs the waiting jobs once the remote answers, rather than reporting that
    there is nothing to run."""
    daemon = serve(fleet)
    ids = [f"job-{n}" for n in range(3)]
    fleet.seed(ids)
    clone = fleet.clone("clone")
    daemon.stop()
    worker = fleet.start("drainer", clone)  # the clone saw the 3 jobs when it was made
    with contextlib.suppress(subprocess.TimeoutExpired):  # still running: what a drain should do
        worker.proc.wait(timeout=OUTAGE)
    daemon.start()
    wait_for(lambda: not worker.alive(), 90, "the draining worker exits")
    assert worker.proc.returncode == 0, worker.output()
    assert fleet.all_final(ids), f"it exited with jobs left: {fleet.stages()}\n{worker.output()}"


# The remote takes the push, then dies before answering and stays away for a while: a
# pre-receive hook (armed once, for the main branch) moves the repository aside and kills
# its receive-pack, so the claim never lands and the worker cannot ask whether it did.
VANISHING_REMOTE_HOOK = """#!/bin/sh
while read old new ref; do
    if [ "$ref" = refs/heads/main ] && rm "{arm}" 2>/dev/null; then
        mv "{remote}" "{remote}.away"
        kill -9 $PPID
        exit 1
    fi
done
exit 0
"""


def test_a_claim_lost_in_transport_is_not_run(fleet: Fleet) -> None:
    """A worker whose claim push dies in transport, the remote then unreachable, does not run
    the job until the remote shows that claim landed: every execution has its claim on the
    remote."""
    fleet.seed(["only"])
    clone = fleet.clone("clone")
    arm = fleet.root / "arm"
    hook = fleet.remote / "hooks" / "pre-receive"
    hook.write_text(VANISHING_REMOTE_HOOK.format(arm=arm, remote=fleet.remote))
    hook.chmod(0o755)
    arm.touch()
    worker = fleet.start("lost", clone, mode="--once")
    away = fleet.remote.with_name(fleet.remote.name + ".away")
    wait_for(away.exists, 60, "the claim's push reaches the remote, which vanishes")
    end = time.monotonic() + 2 * OUTAGE  # the remote is away: a run now would be unconfirmed
    while time.monotonic() < end and not fleet.ledger.read_text():
        time.sleep(0.1)
    away.rename(fleet.remote)
    wait_for(lambda: not worker.alive(), 120, "the worker runs its one job and exits")

    result = audit(fleet, ["only"])
    print(worker.output())
    unconfirmed = [p for p in result.problems if "without a claim of its own" in p]
    assert unconfirmed == []
    assert result.problems == []


REFUSE_ONCE_HOOK = """#!/bin/sh
while read old new ref; do
    if [ "$ref" = refs/heads/main ] && rm "{arm}" 2>/dev/null; then
        echo "refused once by the test" >&2
        exit 1
    fi
done
exit 0
"""


def test_a_result_owed_to_the_remote_survives_a_lost_race(fleet: Fleet) -> None:
    """A result recorded while the remote was away is sent when it answers, even if the first
    push of it loses a race: the job's one attempt is recorded on the remote, and it runs once."""
    fleet.seed(["only"], pause=3.0, first_only=True)
    clone = fleet.clone("clone")
    arm = fleet.root / "arm"
    hook = fleet.remote / "hooks" / "pre-receive"
    hook.write_text(REFUSE_ONCE_HOOK.format(arm=arm))
    hook.chmod(0o755)
    worker = fleet.start("owing", clone)
    wait_for(lambda: "only 1 owing" in fleet.ledger.read_text(), 60, "the worker runs the job")
    away = fleet.remote.with_name(fleet.remote.name + ".away")
    fleet.remote.rename(away)  # the remote goes away while the job runs
    wait_for(lambda: "only: engine exited 0; verify passed -> testing" in worker.output(), 60,
             "the worker records the result in its clone, owing it to the remote")
    arm.touch()  # the first push to main once it is back loses, as to a faster machine
    away.rename(fleet.remote)
    wait_for(lambda: not worker.alive(), 90, "the draining worker sends what it owes and exits")
    assert worker.proc.returncode == 0, worker.output()
    assert fleet.stages()["only"] != ["building"], f"the result never reached the remote:\n{worker.output()}"

    result = audit(fleet, ["only"])
    assert result.problems == []
    assert not arm.exists(), "the test's refusal was never used"
    finished = [e for e in result.events["only"] if e["type"] == "finished"]
    assert [(e["attempt"], e["by"], e["outcome"]) for e in finished] == [(1, "owing", "ok")], finished
    assert result.executions == 1


def stop_outside_the_lock(pid: int, clone: Path, within: float = 60.0) -> None:
    """SIGSTOP `pid` at a moment it does not hold the clone's queue lock. Stopped while holding
    it (a fetch, a heartbeat), it would keep every sibling out for the lock's 120 s: on a busy
    machine that moment is likelier, and the test waited on the sibling in vain."""
    from filelock import FileLock, Timeout

    from aq.store.queue import Queue

    lock = FileLock(str(Queue(clone).state_dir / "queue.lock"))
    end = time.monotonic() + within
    while time.monotonic() < end:
        os.kill(pid, signal.SIGSTOP)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            os.kill(pid, signal.SIGCONT)  # caught inside: let it finish, and try again
            time.sleep(0.05)
            continue
        lock.release()
        return
    raise AssertionError(f"{pid} held the queue lock for {within:.0f}s")


def test_a_result_owed_to_the_remote_survives_a_sibling_realigning_the_clone(
        tmp_path: Path) -> None:
    """A result one worker owes the remote is sent even when a sibling worker on the same clone
    realigns the clone to the remote's tip first: the job's one attempt is recorded, and it
    runs once."""
    with Fleet(tmp_path, ttl="20s", heartbeat="1s", poll="0.2") as fleet:
        fleet.seed(["only"], pause=3.0, first_only=True)
        clone = fleet.clone("clone")
        owing = fleet.start("owing", clone)
        wait_for(lambda: "only 1 owing" in fleet.ledger.read_text(), 60, "the worker runs the job")
        away = fleet.remote.with_name(fleet.remote.name + ".away")
        fleet.remote.rename(away)  # the remote goes away while the job runs
        wait_for(lambda: "only: engine exited 0; verify passed -> testing" in owing.output(), 60,
                 "the worker records the result in its clone, owing it to the remote")
        stop_outside_the_lock(owing.proc.pid, clone)  # its sibling gets to the remote first
        away.rename(fleet.remote)
        tip = git(fleet.root, "--git-dir", str(fleet.remote), "rev-parse", "main").strip()
        sibling = fleet.start("sibling", clone)
        # the sibling realigns the clone: to that tip, or to the tip its salvage of the stopped
        # worker's commit made (either way the owing worker's HEAD commit is gone)
        wait_for(lambda: git(clone, "rev-parse", "HEAD").strip() in (
            tip, git(fleet.root, "--git-dir", str(fleet.remote), "rev-parse", "main").strip()), 60,
            "the sibling realigns the clone to the remote's tip")
        os.kill(owing.proc.pid, signal.SIGCONT)
        for worker in (owing, sibling):
            wait_for(lambda w=worker: not w.alive(), 120, f"{worker.name} drains and exits")
            assert worker.proc.returncode == 0, worker.output()

        result = audit(fleet, ["only"])
        assert result.problems == []
        finished = [e for e in result.events["only"] if e["type"] == "finished"]
        assert [(e["attempt"], e["by"], e["outcome"]) for e in finished] == [(1, "owing", "ok")], \
            f"{finished}\n{owing.output()}"
        assert result.executions == 1


HANG_HEARTBEATS_OF = """#!/bin/sh
while read old new ref; do
    if [ "$ref" = {ref} ] && [ -e "{arm}" ]; then
        sleep 60  # the push neither lands nor fails: a connection that hangs
    fi
done
exit 0
"""


def test_a_holder_whose_heartbeat_push_hangs_stops_its_attempt_before_the_lease_expires(
        fleet: Fleet) -> None:
    """A worker whose heartbeat push hangs (no answer, no error) stops its attempt by its renew
    deadline, before its lease can expire, so no two engines ever run the job at once."""
    seed = fleet.seed()
    arm, marks = fleet.root / "arm", fleet.root / "marks"
    holder_clone = fleet.clone("holder-clone")
    hook = fleet.remote / "hooks" / "pre-receive"
    hook.write_text(HANG_HEARTBEATS_OF.format(ref=machine_ref(holder_clone), arm=arm))
    hook.chmod(0o755)
    body = (f'echo "$AQ_JOB_ID $AQ_ATTEMPT $AQ_WORKER_ID" >> {fleet.ledger}\n'
            f'echo "start $AQ_ATTEMPT" >> {marks}\n'
            f'if [ "$AQ_ATTEMPT" = 1 ]; then touch {arm}\n'
            f'    for i in $(seq 100); do echo "tick 1" >> {marks}; sleep 0.2; done\nfi\n'
            f'echo "end $AQ_ATTEMPT" >> {marks}\n')
    fleet.drop(seed, ["long"], body=body)
    holder = fleet.start("holder", holder_clone, mode="--once")
    wait_for(arm.exists, 60, "the holder runs the job and its heartbeats start to hang")
    watcher = fleet.start("watcher", fleet.clone("watcher-clone"), mode=None)
    wait_for(lambda: "end 2" in (marks.read_text() if marks.exists() else ""), 90,
             "the watcher takes the job back and runs it")
    arm.unlink()
    wait_for(lambda: not holder.alive(), 90, "the holder exits")
    assert fleet.stop(watcher) == 0, watcher.output()

    marked = [tuple(line.split()) for line in marks.read_text().splitlines()]
    after = marked[marked.index(("start", "2")):]
    assert ("tick", "1") not in after and ("end", "1") not in after, (
        f"attempt 1 still ran after attempt 2 started: {marked}\n{holder.output()}")


def test_a_result_owed_by_a_worker_killed_while_the_remote_was_away_is_salvaged(
        tmp_path: Path) -> None:
    """A worker records a result while the remote is away and is then killed with kill -9:
    the next worker on that clone sends the dead worker's result instead of dropping it, so
    the job's one attempt is recorded and it runs once."""
    with Fleet(tmp_path, ttl="20s", heartbeat="1s", poll="0.2") as fleet:
        fleet.seed(["only"], pause=2.0)
        clone = fleet.clone("clone")
        doomed = fleet.start("doomed", clone)
        wait_for(lambda: "only 1 doomed" in fleet.ledger.read_text(), 60, "the worker runs the job")
        away = fleet.remote.with_name(fleet.remote.name + ".away")
        fleet.remote.rename(away)  # the remote goes away while the job runs
        wait_for(lambda: "only: engine exited 0; verify passed -> testing" in doomed.output(), 60,
                 "the worker records the result in its clone, owing it to the remote")
        os.kill(doomed.proc.pid, signal.SIGKILL)
        doomed.proc.wait(timeout=30)
        doomed.killed = True
        away.rename(fleet.remote)
        heir = fleet.start("heir", clone)
        wait_for(lambda: not heir.alive(), 120, "the next worker drains and exits")
        assert heir.proc.returncode == 0, heir.output()

        result = audit(fleet, ["only"])
        assert result.problems == []
        finished = [e for e in result.events["only"] if e["type"] == "finished"]
        assert [(e["attempt"], e["by"], e["outcome"]) for e in finished] == [(1, "doomed", "ok")], \
            f"{finished}\n{heir.output()}"
        assert result.executions == 1
        assert fleet.stages()["only"] == ["testing"]
