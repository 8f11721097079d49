"""Chaos over one git remote (issue 3, test 2): workers killed with kill -9 and restarted, the
remote's git processes killed, and still every job ends in one final stage, run once per lease."""

from __future__ import annotations

import os
import random
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.chaos import Fleet, Slot, audit, run_chaos
from tests.helpers.fleet import SOAK
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.slow

JOBS = 200 if SOAK else 100
CLONES = 3
WORKERS_PER_CLONE = 2


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with Fleet(tmp_path, ttl="3s", heartbeat="1s", poll="0.5") as made:
        yield made


@pytest.mark.heavy  # it keeps both cores busy: see tests/conftest.py
def test_a_hundred_jobs_survive_killed_workers_and_a_killed_remote(fleet: Fleet) -> None:
    """100 jobs (200 with AQ_SOAK=1), 6 workers over 3 clones, kill -9 of a worker every 1-3 s
    and of the remote's git processes at random: every job ends in one final stage, none lost,
    none run twice under one lease, every extra run explained by a lease expiry or retry, both
    fscks clean."""
    ids = [f"job-{n:03d}" for n in range(JOBS)]
    fleet.seed(ids)
    clones = [fleet.clone(f"clone{c}") for c in range(CLONES)]
    slots = [Slot(f"w{c}{k}", clone) for c, clone in enumerate(clones) for k in range(WORKERS_PER_CLONE)]
    rng = random.Random()
    chaos = run_chaos(fleet, slots, ids, kill_every=(1.0, 3.0), remote_kill_every=(1.0, 3.0),
                      deadline=240, rng=rng)

    result = audit(fleet, ids)
    print(f"chaos: {chaos.worker_kills} workers killed, {chaos.remote_kills} remote git processes "
          f"killed, {chaos.stale_locks} stale remote locks removed, {len(chaos.early_exits)} drain "
          f"workers quit with jobs waiting; {result.figures()}")
    assert result.problems == []
    # a worker that exits on its own leaves no lease behind (its heartbeats may fail here, so a
    # survivor's lease can expire; none may be taken back because its holder is gone)
    left = [(job_id, e) for job_id, e in result.leases_lost_by(chaos.survivors())
            if "is gone" in str(e.get("why"))]
    assert left == []
    assert sum(stage == "testing" for stage in result.stages.values()) >= JOBS * 0.9
    assert chaos.worker_kills >= 3  # the run really was under fire


# git, except that once armed the next `git <step>` hangs instead of running: kill -9 can
# catch a worker there, after it moved a job's file and appended its event
FREEZE_AT = """#!/bin/sh
case " $* " in
    *" {step} "*) if rm "{arm}" 2>/dev/null; then touch "{frozen}"; exec sleep 600; fi ;;
esac
exec {git} "$@"
"""


@pytest.mark.parametrize("step", [
    "update-index",
    "commit",  # killed after staging: discard_uncommitted resets the index for queue/ too
])
def test_a_worker_killed_between_a_move_and_its_commit_loses_no_job(
        fleet: Fleet, step: str) -> None:
    """A worker killed after moving a finished job's file but before committing it (before
    staging it, or staged and not committed) leaves no trace the next worker on that clone
    commits: the job is taken back and run again, and every commit on the remote has every
    job in exactly one stage."""
    arm, frozen = fleet.root / "arm", fleet.root / "frozen"
    fleet.seed(["a", "b"], then=f'[ "$AQ_ATTEMPT" = 1 ] && touch {arm}')  # b: for the next worker
    clone = fleet.clone("clone")
    wrapper = fleet.root / "bin" / "git"
    wrapper.parent.mkdir()
    wrapper.write_text(FREEZE_AT.format(step=step, arm=arm, frozen=frozen, git=shutil.which("git")))
    wrapper.chmod(0o755)
    first = fleet.start("first", clone, mode="--once",
                        env={"PATH": f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}"})
    wait_for(frozen.exists, 60, "the first worker finishes the job and starts to commit it")
    os.killpg(first.proc.pid, signal.SIGKILL)  # the worker and the git it was running
    first.killed = True
    first.proc.wait(timeout=30)

    second = fleet.start("second", clone)
    wait_for(lambda: not second.alive(), 90, "the second worker drains the queue and exits")
    assert second.proc.returncode == 0, second.output()

    result = audit(fleet, ["a", "b"])
    assert result.problems == [], f"{fleet.stages()}\n{second.output()}"
    assert result.stages == {"a": "testing", "b": "testing"}
    assert [(e["by"], e["outcome"]) for e in result.events["a"] if e["type"] == "finished"] == [
        ("second", "lease_expired"), ("second", "ok")]
