"""Wall clocks an hour off (issue 3, test 4): leases are judged on each observer's own monotonic
clock, so a worker an hour fast or slow neither takes a live lease nor keeps a dead one.

The skew is Debian's libfaketime (package `faketime`, which pulls in `libfaketime`), preloaded
into the worker with FAKETIME=+1h / -1h and FAKETIME_DONT_FAKE_MONOTONIC=1; git and the
engine inherit it. See tests.helpers.chaos.SHIM for why a tiny preload goes in front of it.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from aq.core.events import parse_iso
from tests.helpers.chaos import (
    Fleet,
    Slot,
    Worker,
    audit,
    build_shim,
    libfaketime,
    other_host_prefix,
    run_chaos,
    skewed_clock_env,
)
from tests.helpers.fleet import machine_ref
from tests.helpers.git import git
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.slow

SKEWS = {"normal": None, "fast": "+1h", "slow": "-1h"}


@pytest.fixture(scope="module")
def clocks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """name -> the environment giving a worker that wall clock ({} for the true one)."""
    lib = libfaketime()
    if lib is None:
        pytest.skip("libfaketime is not installed: apt-get install -y faketime")
    shim = build_shim(tmp_path_factory.mktemp("faketime"))
    if shim is None:
        pytest.skip("no C compiler to build the monotonic-sleep shim libfaketime 0.9.10 needs")
    return {name: skewed_clock_env(offset, lib, shim) if offset else {}
            for name, offset in SKEWS.items()}


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with Fleet(tmp_path, ttl="5s", heartbeat="0.5s", poll="0.2") as made:
        yield made


def assert_skewed(events: dict[str, list[dict[str, Any]]]) -> None:
    """The claims' own timestamps show the workers really had their wall clocks: every claim by
    a fast worker is stamped over 50 minutes after every claim by a true one, and so on (for
    every two clocks that both claimed something)."""
    stamps: dict[str, list[float]] = {name: [] for name in SKEWS}
    for found in events.values():
        for event in found:
            clock = next((c for c in SKEWS if str(event.get("by", "")).startswith(c)), None)
            if event["type"] == "claimed" and clock:
                stamps[clock].append(parse_iso(str(event["ts"])).timestamp())
    assert sum(bool(found) for found in stamps.values()) >= 2, f"too few clocks claimed: {stamps}"
    gap = timedelta(minutes=50).total_seconds()
    for ahead, behind in (("fast", "normal"), ("normal", "slow"), ("fast", "slow")):
        if stamps[ahead] and stamps[behind]:
            assert min(stamps[ahead]) - max(stamps[behind]) > gap, stamps


def test_no_worker_takes_a_live_lease_whatever_its_wall_clock(
        tmp_path: Path, clocks: dict[str, dict[str, str]]) -> None:
    """Three clones with wall clocks true, an hour fast and an hour slow each hold a job for two
    and a half lease TTLs while a worker of every clock watches: no lease is taken, each job
    runs once."""
    # a 10 s TTL renewed every second: a holder stops its attempt only when no renewal has
    # landed for 8 s, which three holders' racing pushes on a loaded 2-core machine stay well
    # inside (a 5 s TTL gives 4 s, and the test failed once under load with it)
    with Fleet(tmp_path, ttl="10s", heartbeat="1s", poll="0.2") as fleet:
        holds(fleet, clocks)


def holds(fleet: Fleet, clocks: dict[str, dict[str, str]]) -> None:
    ids = ["long-a", "long-b", "long-c"]
    fleet.seed(ids, pause=25.0)  # 2.5 x the TTL
    clones = {name: fleet.clone(name) for name in SKEWS}
    holders: list[Worker] = []
    for name, clone in clones.items():
        holders.append(fleet.start(f"{name}-holder", clone, mode="--once", env=clocks[name]))
        held = len(holders)
        wait_for(lambda held=held: building(fleet) == held, 60, f"the {name} holder claims a job")
    watchers = [fleet.start(f"{name}-watcher", clone, mode=None, env=clocks[name])
                for name, clone in clones.items()]
    wait_for(lambda: fleet.all_final(ids), 120, "the three long jobs finish")
    for holder in holders:
        assert holder.proc.wait(timeout=60) == 0, holder.output()
    for watcher in watchers:
        assert fleet.stop(watcher) == 0, watcher.output()

    result = audit(fleet, ids)
    assert result.problems == []
    assert (result.executions, result.extra, result.reclaims, result.interrupted) == (3, 0, 0, 0), \
        result.figures()
    by = sorted(e["by"] for found in result.events.values() for e in found if e["type"] == "claimed")
    assert by == ["fast-holder", "normal-holder", "slow-holder"]
    assert_skewed(result.events)


@pytest.mark.heavy  # it keeps both cores busy: see tests/conftest.py
def test_chaos_with_clocks_an_hour_apart_ends_like_any_chaos(
        fleet: Fleet, clocks: dict[str, dict[str, str]]) -> None:
    """A small chaos run (40 jobs, kill -9 every 1-3 s, the remote's git killed) with workers
    whose clocks are true, an hour fast and an hour slow passes the same audit as any chaos run."""
    ids = [f"job-{n:02d}" for n in range(40)]
    # each job takes half a second: one quick worker cannot drain them all before the skewed
    # ones claim (with instant jobs the true-clock worker sometimes took all 40)
    fleet.seed(ids, pause=0.5)
    slots = [Slot(name, fleet.clone(name), env=clocks[name]) for name in SKEWS]
    chaos = run_chaos(fleet, slots, ids, kill_every=(1.0, 3.0), remote_kill_every=(1.0, 3.0),
                      deadline=150, rng=random.Random())

    result = audit(fleet, ids)
    print(f"clock chaos: {chaos.worker_kills} workers killed, {chaos.remote_kills} remote git "
          f"processes killed; {result.figures()}")
    assert result.problems == []
    assert sum(stage == "testing" for stage in result.stages.values()) >= len(ids) * 0.9
    assert_skewed(result.events)


@pytest.mark.parametrize("watcher_clock", ["fast", "slow"])
def test_a_dead_holders_job_is_reclaimed_by_a_skewed_worker_after_the_ttl(
        fleet: Fleet, clocks: dict[str, dict[str, str]], watcher_clock: str) -> None:
    """A job whose holder on another machine died is taken back by a worker whose clock is an
    hour fast or slow: not within half the TTL of the death, but soon after the TTL, and then
    run to the end by that worker."""
    fleet.seed(["orphan"], pause=120.0, first_only=True)  # the holder's attempt outlives it
    holder_clone, watcher_clone = fleet.clone("machine-b"), fleet.clone("machine-a")
    elsewhere = other_host_prefix("machine-b")
    holder = fleet.start("holder", holder_clone, mode="--once", prefix=elsewhere or ())
    wait_for(lambda: fleet.stages().get("orphan") == ["building"], 60, "the holder claims the job")
    wait_for(lambda: "orphan 1 holder" in fleet.ledger.read_text(), 60, "the holder runs the job")
    watcher = fleet.start("watcher", watcher_clone, mode=None, env=clocks[watcher_clock])
    wait_for(lambda: machine_ref(watcher_clone) in fleet_refs(fleet), 60, "the watcher is up")
    time.sleep(1.0)  # it has watched the holder's lease being renewed

    if elsewhere:  # another host: only the silence of its heartbeats can tell it died
        fleet.kill(holder)
    else:  # no UTS namespace here: a holder frozen in place is just as silent, and its pid lives
        os.kill(holder.proc.pid, signal.SIGSTOP)
    gone = time.monotonic()
    while time.monotonic() - gone < 2.5:  # half the 5 s TTL
        assert fleet.stages().get("orphan") == ["building"], "taken back before the TTL ran out"
        time.sleep(0.1)
    wait_for(lambda: fleet.all_final(["orphan"]), 90, "the watcher takes the job back and runs it")
    assert fleet.stop(watcher) == 0, watcher.output()
    with contextlib.suppress(ProcessLookupError):
        os.kill(holder.proc.pid, signal.SIGKILL)

    result = audit(fleet, ["orphan"])
    assert result.problems == []
    events = result.events["orphan"]
    taken = [e for e in events if e.get("outcome") == "lease_expired"]
    assert len(taken) == 1 and taken[0]["by"] == "watcher", events
    assert "no heartbeat" in taken[0]["why"], taken[0]["why"]
    assert [e["by"] for e in events if e["type"] == "claimed"] == ["holder", "watcher"]
    assert result.stages["orphan"] == "testing"
    assert fleet.ledger.read_text().split("\n")[:2] == ["orphan 1 holder", "orphan 2 watcher"]


def fleet_refs(fleet: Fleet) -> str:
    return git(fleet.root, "--git-dir", str(fleet.remote), "for-each-ref", "refs/aq")


def building(fleet: Fleet) -> int:
    return sum(stages == ["building"] for stages in fleet.stages().values())


RETRIED = """---
verify: "true"
retry: {{max: 1, backoff: {backoff}s, on: [engine_failed]}}
---
echo "$AQ_JOB_ID $AQ_ATTEMPT $AQ_WORKER_ID" >> {ledger}
[ "$AQ_ATTEMPT" -ge 2 ]
"""


@pytest.mark.parametrize("failer_clock", ["fast", "slow"])
def test_a_retry_waits_its_backoff_on_the_retrying_machine_clock(
        fleet: Fleet, clocks: dict[str, dict[str, str]], failer_clock: str) -> None:
    """A retry's backoff is measured by the machine that runs it, not by the wall clock of the
    worker that failed: a failure stamped an hour fast is retried after its backoff, not an hour
    later, and one stamped an hour slow is not retried before its backoff."""
    backoff = 4.0
    seed = fleet.seed()
    (seed / "queue" / "inbox" / "flaky.md").write_text(RETRIED.format(backoff=int(backoff),
                                                                      ledger=fleet.ledger))
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "a job that fails once")
    git(seed, "push", "-q", "origin", "HEAD:main")
    failer = fleet.start("failer", fleet.clone("failer"), mode="--once", env=clocks[failer_clock])
    assert failer.proc.wait(timeout=60) == 0, failer.output()
    failed_at = time.monotonic()
    assert fleet.ledger.read_text().split() == ["flaky", "1", "failer"]

    retrier = fleet.start("retrier", fleet.clone("retrier"), mode="--drain")
    wait_for(lambda: "flaky 2 retrier" in fleet.ledger.read_text(), 60,
             "the true-clock worker retries the job within a minute")
    retried_after = time.monotonic() - failed_at
    assert retrier.proc.wait(timeout=60) == 0, retrier.output()  # a drain exits by itself
    assert retried_after >= backoff, f"retried {retried_after:.1f}s after the failure"
    assert fleet.stages()["flaky"] == ["testing"]
