"""Child jobs across a fleet: two clones' workers run a parent's children; the parent's verify
runs only once every child is settled on the remote; a worker killed -9 while its parent was
spawning leaves no child made twice."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aq.core.events import parse_iso
from tests.helpers.fleet import Fleet, fleet_in
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with fleet_in(tmp_path / "fleet", 2) as made:
        yield made


def spawn(part: int, out: Path) -> str:
    return (f"{sys.executable} -m aq spawn --title 'part {part}' "
            f"--body 'echo $AQ_WORKER_ID > {out}/part-{part}'")


def test_two_clones_run_the_children_and_the_parents_verify_comes_after_all(fleet: Fleet) -> None:
    out = fleet.base / "out"
    out.mkdir()
    body = "\n".join(spawn(n, out) for n in range(1, 6))
    verify = " && ".join(f"test -s {out}/part-{n}" for n in range(1, 6))
    fleet.drop_jobs({"parent": (body, {"verify": verify})})
    workers = [fleet.worker(clone, f"w{n}", "--drain", lease="30s")
               for n, clone in enumerate(fleet.clones)]
    for worker in workers:
        assert fleet.finish(worker, 180) == 0, fleet.err(worker)

    kids = fleet.children("parent")
    assert len(kids) == 5 and all(stages == ["review"] for stages in kids.values()), kids
    assert fleet.stage("parent") == "testing"
    finished = fleet.events("parent", "finished")
    assert [e["action"] for e in finished] == ["await", "pass"]
    resumed = parse_iso(fleet.events("parent", "claimed")[-1]["ts"])
    for kid in kids:
        assert parse_iso(fleet.events(kid, "finished")[-1]["ts"]) <= resumed


def test_a_worker_killed_while_its_parent_spawned_leaves_no_child_made_twice(
        fleet: Fleet) -> None:
    """The first attempt spawns two children, then its worker dies (kill -9). Its lease
    expires; the next worker runs the engine again, which spawns all five: five children."""
    out, gate = fleet.base / "out", fleet.base / "spawned-two"
    out.mkdir()
    first_only = (f'if [ "$AQ_ATTEMPT" = 1 ]; then touch {gate}; n=0; '
                  f"while [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done; fi")
    body = "\n".join([spawn(1, out), spawn(2, out), first_only,
                      *(spawn(n, out) for n in range(3, 6))])
    verify = " && ".join(f"test -s {out}/part-{n}" for n in range(1, 6))
    fleet.drop_jobs({"parent": (body, {"verify": verify})})
    doomed = fleet.worker(fleet.clones[0], "w-doomed", "--once", lease="3s")
    wait_for(gate.exists, 120, "the first attempt's two spawns")
    fleet.kill(doomed, signal.SIGKILL)
    doomed.wait(timeout=30)
    assert len(fleet.children("parent")) == 2

    survivor = fleet.worker(fleet.clones[1], "w-survivor", "--drain", lease="3s")
    assert fleet.finish(survivor, 240) == 0, fleet.err(survivor)
    kids = fleet.children("parent")
    assert len(kids) == 5, kids
    assert all(len(stages) == 1 for stages in kids.values())
    assert fleet.stage("parent") == "testing"
    actions = [e["action"] for e in fleet.events("parent", "finished")]
    assert actions[0] == "reclaim" and actions[-2:] == ["await", "pass"], actions
