"""An outage of the remote longer than the lease TTL, which every holder survives: no lease is
taken back for it (DESIGN §5: a lease expires only for silence while the observer could see the
remote). Real processes, a real `git daemon`, stopped and started again."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.chaos import Fleet, audit, serve
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.slow

TTL = 8.0
# the daemon stays down this much longer than the TTL: every lease is silent for more than the
# TTL on the remote, although no holder died
PAST_TTL = 4.0


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with Fleet(tmp_path, ttl=f"{TTL:.0f}s", heartbeat="1s", poll="0.2") as made:
        yield made


def observed_tokens(clone: Path) -> set[str]:
    """The lease tokens the lease observer of `clone`'s machine has noted so far."""
    found: set[str] = set()
    for path in clone.glob(".git/aq/**/leases.json"):
        try:
            data = json.loads(path.read_text())
        except ValueError:  # caught between two writes: looked at again
            continue
        found |= set(data.get("first", {})) | set(data.get("renewed", {}))
    return found


def test_an_outage_longer_than_the_lease_that_the_holders_survive_takes_back_no_job(
        fleet: Fleet) -> None:
    """Two workers hold a job each and a third watches their leases; the remote's daemon is
    down for longer than the lease TTL while the jobs finish. Once it is back, the holders'
    results land: no lease_expired take-back, no stale_result, each job run once."""
    daemon = serve(fleet)
    ids = ["held-a", "held-b"]
    go = fleet.root / "go"  # each job runs until the test lets it finish, during the outage
    fleet.seed(ids, then=f"while [ ! -e {go} ]; do sleep 0.1; done")
    # the holders look at the remote only every 2 s once it is back, so that a watcher that
    # counted the outage as their silence would take their jobs before their results land
    holders = [fleet.start(f"holder{n}", fleet.clone(f"holder{n}"), "--poll", "2", mode=None)
               for n in range(2)]
    wait_for(lambda: len(fleet.ledger.read_text().splitlines()) == 2, 60,
             "each holder runs one of the jobs")
    assert {line.split()[2] for line in fleet.ledger.read_text().splitlines()} == {
        "holder0", "holder1"}
    watched = fleet.clone("watcher")
    watcher = fleet.start("watcher", watched, mode=None)
    wait_for(lambda: len(observed_tokens(watched)) == 2, 60, "the watcher notes both leases")

    daemon.stop()
    down = time.monotonic()
    go.touch()
    for holder in holders:
        wait_for(lambda h=holder: "verify passed -> testing" in h.output(), 60,
                 f"{holder.name} records its result while the remote is away")
    time.sleep(max(0.0, down + TTL + PAST_TTL - time.monotonic()))
    daemon.start()

    wait_for(lambda: fleet.all_final(ids), 90, f"the results land: {fleet.stages()}")
    for worker in [*holders, watcher]:
        assert fleet.stop(worker) == 0, worker.output()
    result = audit(fleet, ids)
    assert result.problems == [], result.problems
    moves = [(job_id, e.get("outcome"), e.get("by")) for job_id in ids
             for e in result.events[job_id] if e.get("type") in ("finished", "stale_result")]
    assert (result.reclaims, result.stale, result.executions) == (0, 0, 2), (
        f"{moves}\n{fleet.tail(25)}")
    assert set(result.stages.values()) == {"testing"}
