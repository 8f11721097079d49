"""Lease timing, in process: Workers built over real clones of a bare remote, with clocks the
test holds, so that a lease's silence is driven tick by tick instead of slept through."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from aq.store.queue import Queue
from aq.worker.context import Claim, Running
from aq.worker.runner import Worker
from tests.helpers.fleet import Fleet, fleet_in
from tests.helpers.queue import T0

TTL, BEAT, POLL = 10.0, 2.0, 1.0


class Clock:
    """A monotonic clock that moves only when the test says."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with fleet_in(tmp_path, 2) as fleet:
        fleet.drop_jobs({"job": ("sleep 30", {})})
        yield fleet


def worker(root: Path, name: str, clock: Clock, said: list[str] | None = None) -> Worker:
    return Worker(Queue(root), worker_id=name, poll=POLL, lease_ttl=TTL, heartbeat=BEAT,
                  now=lambda: T0, monotonic=clock,
                  say=said.append if said is not None else lambda _line: None)


def claimed(holder: Worker) -> Claim:
    claim = holder.claims.transact_claim()
    assert claim is not None and claim.job.id == "job"
    return claim


def test_a_silent_holders_lease_is_taken_back_only_after_a_ttl_of_watched_silence(
        fleet: Fleet) -> None:
    """A holder that never renews keeps its job while another machine has watched its lease for
    less than lease_ttl; at lease_ttl the watcher takes the job back (and claims it again)."""
    held = claimed(worker(fleet.clones[0], "holder", Clock()))
    clock, said = Clock(), []
    watcher = worker(fleet.clones[1], "watcher", clock, said)
    for _ in range(5):  # looks 2s apart: within one watch (gap = TTL / 2)
        assert watcher.claims.transact_claim() is None
        clock.now += 2.0
    assert fleet.stage("job") == "building"
    again = watcher.claims.transact_claim()
    assert again is not None and again.job.id == "job" and again.attempt == held.attempt + 1
    taken = [e for e in fleet.events("job", "finished") if e.get("outcome") == "lease_expired"]
    assert [e["token"] for e in taken] == [held.token]
    assert any(f"renewed lease {held.token} for 10s (lease_ttl 10s)" in line for line in said)


def test_a_holder_stops_its_attempt_once_its_renewal_is_overdue(fleet: Fleet) -> None:
    """With no heartbeat reaching the remote, the attempt runs until the renew deadline (two
    heartbeats before the TTL) and is stopped, with a reason, exactly then."""
    clock = Clock()
    holder = worker(fleet.clones[0], "holder", clock)
    running = Running(claim=claimed(holder), thread=threading.Thread(), stop=threading.Event())
    holder.ctx.roster.started(running)
    deadline = holder.options.renew_deadline
    assert deadline == TTL - 2 * BEAT
    clock.now += deadline - 0.1
    holder.heartbeat.check_renewal()
    assert not running.stop.is_set()
    clock.now += 0.1
    holder.heartbeat.check_renewal()
    assert running.stop.is_set()
    assert running.stop_reason == (f"lease lost: no heartbeat reached the remote for {deadline:.0f}s "
                                   f"(renew deadline {deadline:.0f}s)")


def test_a_heartbeat_that_lands_moves_the_renew_deadline_on(fleet: Fleet) -> None:
    """A renewal that reaches the remote counts from when it left: the attempt goes on until a
    full renew deadline after it."""
    clock = Clock()
    holder = worker(fleet.clones[0], "holder", clock)
    running = Running(claim=claimed(holder), thread=threading.Thread(), stop=threading.Event())
    holder.ctx.roster.started(running)
    deadline = holder.options.renew_deadline
    clock.now += deadline - 1.0
    holder.heartbeat.beat(1)
    clock.now += deadline - 0.1
    holder.heartbeat.check_renewal()
    assert not running.stop.is_set()
    clock.now += 0.1
    holder.heartbeat.check_renewal()
    assert running.stop.is_set()
