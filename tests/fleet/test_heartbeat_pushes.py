"""Heartbeat pushes are counted per machine, not per worker (a forge counts every push): eight
workers on two machines, idle and then each holding a job, push at most one heartbeat a lease
TTL per machine while idle and two while holding leases."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.fleet import Fleet, fleet_in, machine_ref
from tests.helpers.git import git
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.slow
TTL = 3.0
WINDOW = 3  # lease TTLs each phase is watched for
LOG_REFS = """#!/bin/sh
while read old new ref; do echo "$ref" >> "{log}"; done
"""


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with fleet_in(tmp_path / "fleet", 2) as made:
        yield made


def beats(log: Path, ref: str) -> int:
    return log.read_text().split().count(ref) if log.exists() else 0


def watched(log: Path, refs: list[str]) -> list[int]:
    """Each machine's heartbeat pushes over WINDOW lease TTLs from now."""
    before = [beats(log, ref) for ref in refs]
    time.sleep(WINDOW * TTL)  # a window of time is what is measured here, not waited out
    return [beats(log, ref) - start for ref, start in zip(refs, before, strict=True)]


def test_eight_workers_on_two_machines_push_heartbeats_per_machine(fleet: Fleet) -> None:
    log, go = fleet.base / "pushes", fleet.base / "go"
    hook = fleet.bare / "hooks" / "pre-receive"
    hook.write_text(LOG_REFS.format(log=log))
    hook.chmod(0o755)
    refs = [machine_ref(clone) for clone in fleet.clones]
    workers = [fleet.start(clone, "run", "--worker", f"w{n}-{i}", "--poll", "0.2",
                           "--lease-ttl", f"{TTL:g}s", name=f"w{n}-{i}")
               for n, clone in enumerate(fleet.clones) for i in range(4)]
    wait_for(lambda: all(beats(log, ref) for ref in refs), 60, "both machines' first beats")
    time.sleep(TTL)  # the workers' starts are said (a beat each at most a tick apart): let them
    idle = watched(log, refs)
    assert all(count <= WINDOW + 1 for count in idle), (idle, refs)

    fleet.drop_jobs({f"hold-{n}": (f"while [ ! -e {go} ]; do sleep 0.1; done", {})
                     for n in range(8)})
    try:
        wait_for(lambda: sorted(fleet.stages_at().values()) == [["building"]] * 8, 120,
                 "every worker holding a job")
        holding = watched(log, refs)
        # half a TTL apart: two a TTL (and one more at a window's edge), against eight workers'
        # four a TTL each before machine beats
        assert all(1 <= count <= 2 * WINDOW + 1 for count in holding), (holding, refs)
        # and no lease went unrenewed meanwhile: no job was taken back
        assert all(stages == ["building"] for stages in fleet.stages_at().values())
        assert not [e for n in range(8) for e in fleet.events(f"hold-{n}", "finished")]
        # and `aq stats` can count every one of them: each beat carries its machine's count (which
        # `aq stats` adds up), itself included
        wait_for(lambda: [said_beats(fleet, ref) for ref in refs] == [beats(log, r) for r in refs],
                 30, "each machine's beat counting the heartbeats the remote took")
    finally:  # the jobs end, pass or fail: their engines run in sessions of their own
        go.touch()
        for worker in workers:
            fleet.kill(worker)


def said(fleet: Fleet, ref: str) -> dict[str, Any]:
    """What a machine's last beat says."""
    payload: dict[str, Any] = json.loads(git(fleet.bare, "log", "-1", "--format=%s", ref))
    return payload


def said_beats(fleet: Fleet, ref: str) -> int:
    """The heartbeats a machine's last beat says it pushed."""
    return int(said(fleet, ref)["pushes"]["heartbeats"])


@pytest.mark.heavy  # it keeps both cores busy: see tests/conftest.py
def test_a_machine_whose_commits_keep_landing_renews_its_leases_without_heartbeats(
        fleet: Fleet) -> None:
    """Machine A holds a long job while a sibling worker there lands a claim or result every
    moment: their commits name A and its leases, so A does not beat at all, and machine B's
    worker, watching, never takes the long job back, nor does B see A silent (`aq workers`, the
    offline alert). Once the holder is killed -9, the sibling's commits stop naming its lease:
    it expires, and the job is taken back."""
    ttl = 8.0  # heartbeats due every 4 s; the busy worker lands a commit well within that
    log, go = fleet.base / "pushes", fleet.base / "go"
    hook = fleet.bare / "hooks" / "pre-receive"
    hook.write_text(LOG_REFS.format(log=log))
    hook.chmod(0o755)
    a, b = fleet.clones
    ref_a = machine_ref(a)
    # a machine silent for two TTLs (16 s) is offline: A does not beat for longer than that
    fleet.pull_seed()
    config = fleet.seed / "aq.yaml"
    config.write_text(config.read_text().replace("lease_ttl: 10m", f"lease_ttl: {ttl:g}s")
                      + "alerts: {offline: 1s}\n")
    git(fleet.seed, "commit", "-q", "-m", "offline after two TTLs", "--", "aq.yaml")
    git(fleet.seed, "push", "-q", "origin", "HEAD:main")
    for clone in (a, b):
        git(clone, "pull", "-q", "--ff-only")
    # the long job: for the holder and the watcher alone, never the busy worker
    fleet.drop_jobs({"long": (f"while [ ! -e {go} ]; do sleep 0.1; done",
                              {"capabilities": ["lane:long"]})})
    run = ("run", "--poll", "0.2")  # the lease TTL of aq.yaml
    holder = fleet.start(a, *run, "--worker", "holder", "--cap", "lane:long", name="holder")
    try:
        wait_for(lambda: fleet.stage("long") == "building", 60, "the holder claiming the long job")
        fleet.drop_jobs({f"quick-{n:03d}": ("true", {"capabilities": ["lane:a"]})
                         for n in range(400)})
        fleet.start(a, *run, "--worker", "busy", "--cap", "lane:a", name="busy")
        fleet.start(b, *run, "--worker", "watcher", "--cap", "lane:long", name="watcher")
        wait_for(lambda: len(fleet.events("quick-005", "finished")) > 0, 60, "quick jobs landing")
        # the busy worker's start is said by a beat (an interval after the one before)
        wait_for(lambda: "busy" in said(fleet, ref_a)["workers"], 60, "A's beat naming busy")
        before = beats(log, ref_a)
        time.sleep(3 * ttl)  # a window of time is what is measured here, not waited out
        during = beats(log, ref_a) - before
        finished = sum(1 for n in range(400) if fleet.events(f"quick-{n:03d}", "finished"))
        # without commits showing A alive: three beats in three TTLs (one a TTL); without them
        # renewing its lease either, six; with both, none, or one should the machine be so
        # loaded that the busy worker once takes longer than half a TTL to land a commit
        assert during <= 1, (during, finished)
        assert fleet.stage("long") == "building"
        assert [e["by"] for e in fleet.events("long", "claimed")] == ["holder"]
        # B sees A's workers alive by their commits, with no beat of A for three TTLs
        shown = fleet.aq(b, "workers", "--json")
        assert shown.returncode == 0, shown.stderr
        ages = {row["worker"]: row["heartbeat_age"] for row in json.loads(shown.stdout)}
        assert ages["holder"] < ttl and ages["busy"] < ttl, ages
        alerts = fleet.aq(b, "alerts", "--json")
        assert alerts.returncode == 0 and "machine_offline" not in alerts.stdout, alerts.stdout

        token = fleet.events("long", "claimed")[0]["token"]
        assert token in git(fleet.bare, "log", "-3", "--format=%B", "main")  # named till now
        fleet.kill(holder)  # its lease is named no more: it expires, and is taken back
        wait_for(lambda: len(fleet.events("long", "claimed")) == 2, 120,
                 "another worker taking the dead holder's job back")
        assert fleet.events("long", "claimed")[-1]["by"] == "watcher"
        # the sibling's commits since name the dead holder's lease no more
        since = git(fleet.bare, "rev-parse", "main").strip()
        wait_for(lambda: int(git(fleet.bare, "rev-list", "--count", f"{since}..main")) >= 3, 60,
                 "the busy worker landing more commits")
        later = git(fleet.bare, "log", "--format=%B", f"{since}..main")
        assert "Aq-Leases:" in later and token not in later
    finally:
        go.touch()
        for proc in fleet.procs:
            fleet.kill(proc)
