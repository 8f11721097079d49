"""A worker that stops answering: its lease expires, another clone takes the job, the stale holder is fenced."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aq.core.events import fold
from tests.helpers.fleet import (
    Fleet,
    can_fake_hosts,
    fleet_in,
    ledger_body,
    ledger_rows,
    machine_ref,
)
from tests.helpers.git import git
from tests.helpers.processes import alive
from tests.helpers.queue import STAGES
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with fleet_in(tmp_path / "fleet", 2) as made:
        yield made
        pid_file = made.base / "engine.pid"
        if pid_file.exists():  # the paused holder's engine, if the test failed before it was stopped
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def stage_moves(fleet: Fleet, worker: str) -> list[str]:
    """Commits of the remote's main by `worker` (named in their message) that add or delete a job
    file in a stage folder, its claims aside."""
    log = git(fleet.bare, "log", "--no-renames", "--format=@%s", "--name-status", "main", "--", "queue")
    moves = []
    for commit in log.split("@")[1:]:
        subject, *changes = commit.strip().splitlines()
        if not subject.endswith(f" by {worker}") or subject.startswith("aq: claim "):
            continue
        paths = [line.split("\t")[-1] for line in changes if line.strip()]
        moved = [path for path in paths if path.count("/") == 2 and path.split("/")[1] in STAGES]
        if moved:
            moves.append(f"{subject}: {moved}")
    return moves


def test_a_paused_holder_loses_its_job_to_another_clone_and_is_fenced_when_it_wakes(fleet: Fleet) -> None:
    """A worker stopped past its lease: another clone reclaims and finishes the job; the holder, resumed, only adds stale_result."""
    ledger, pid_file = fleet.base / "ledger", fleet.base / "engine.pid"
    hold = f'if [ "$AQ_WORKER_ID" = holder ]; then echo $$ > {pid_file}; while :; do sleep 0.1; done; fi\n'
    fleet.drop_jobs({"paused": (ledger_body(ledger, hold), {"verify": "true"})})
    clone_a, clone_b = fleet.clones

    holder = fleet.worker(clone_a, "holder", "--once")
    assert wait_until(lambda: pid_file.exists() and fleet.stage("paused") == "building", 30), \
        fleet.out(holder) + fleet.err(holder)
    engine = int(pid_file.read_text())
    os.kill(holder.pid, signal.SIGSTOP)

    rescuer = fleet.worker(clone_b, "rescuer")
    assert wait_until(lambda: fleet.stage("paused") == "testing", 40), fleet.out(rescuer)
    assert alive(holder.pid) and alive(engine)  # paused, and its engine, on "its machine", runs on
    os.kill(holder.pid, signal.SIGCONT)
    assert fleet.finish(holder, 60) == 0, fleet.err(holder)
    assert wait_until(lambda: not alive(engine), 10), "the resumed holder left its engine running"

    assert wait_until(lambda: fleet.events("paused", "stale_result") != [], 10)
    events = fleet.events("paused")
    claims = [e for e in events if e["type"] == "claimed"]
    assert [(c["by"], c["attempt"]) for c in claims] == [("holder", 1), ("rescuer", 2)]
    finished = [e for e in events if e["type"] == "finished"]
    assert [(e["by"], e["action"], e["outcome"], e["to"], e["token"]) for e in finished] == [
        ("rescuer", "reclaim", "lease_expired", "inbox", claims[0]["token"]),
        ("rescuer", "pass", "ok", "testing", claims[1]["token"])]
    assert "no heartbeat from holder" in finished[0]["why"]
    stale = [e for e in events if e["type"] == "stale_result"]
    assert [(e["by"], e["token"]) for e in stale] == [("holder", claims[0]["token"])]
    assert not [e for e in events if e["by"] == "holder" and e["type"] not in ("claimed", "stale_result")]
    assert stage_moves(fleet, "holder") == []
    assert fleet.stage("paused") == "testing"

    # a lease expiry is not the job's fault: no retry used (with retry max 0 a failure would be final)
    state = fold(events)
    assert (state.retries_used, state.reclaims) == (0, 1)
    assert [row[1:] for row in ledger_rows(ledger)] == [["1", "holder"], ["2", "rescuer"]]

    fleet.kill(rescuer, signal.SIGTERM)
    assert fleet.finish(rescuer, 30) == 0
    fleet.pull_seed()
    checked = fleet.aq(fleet.seed, "fsck", "--history")
    assert checked.returncode == 0, checked.stdout


def test_a_job_that_kills_its_worker_goes_to_dead_letter_after_max_reclaims(fleet: Fleet) -> None:
    """A job whose worker dies under it every time is taken back max_reclaims (3) times, then dead-lettered as lease_expired."""
    ledger = fleet.base / "ledger"
    fleet.drop_jobs({"killer": (ledger_body(ledger, "kill -9 $PPID\nsleep 5\n"),
                                {"retry": {"max": 5, "backoff": "1s"}})})
    codes = []
    for n in range(8):  # a worker per try, alternating clones, until the job is dead-lettered
        proc = fleet.worker(fleet.clones[n % 2], f"k{n}", "--once")
        codes.append(fleet.finish(proc, 60))
        if fleet.stage("killer") == "dead_letter":
            break
    assert codes == [-signal.SIGKILL] * 3 + [0], codes
    assert [row[1] for row in ledger_rows(ledger)] == ["1", "2", "3"]

    events = fleet.events("killer")
    finished = [e for e in events if e["type"] == "finished"]
    assert [(e["action"], e["outcome"], e["to"]) for e in finished] == \
        [("reclaim", "lease_expired", "inbox")] * 2 + [("dead", "lease_expired", "dead_letter")]
    assert finished[-1]["why"].startswith("lease_expired")
    assert [e["token"] for e in finished] == [e["token"] for e in events if e["type"] == "claimed"]
    state = fold(events)
    assert (state.retries_used, state.reclaims, state.token) == (0, 3, None)


@pytest.mark.skipif(not can_fake_hosts(), reason="needs user and UTS namespaces (unshare) for a second hostname")
def test_a_job_that_kills_its_machine_is_dead_lettered_through_lease_expiry(fleet: Fleet) -> None:
    """Workers on machines of their own (own hostnames) die under a job: each time the lease expires unrenewed and the third expiry dead-letters it."""
    ledger = fleet.base / "ledger"
    fleet.drop_jobs({"killer": (ledger_body(ledger, "kill -9 $PPID\nsleep 5\n"), {})})
    procs = []
    for n in range(6):  # a worker on a new machine each time the last one died, until the job is dead
        proc = fleet.worker(fleet.clones[n % 2], f"m{n}", host=f"machine-{n}")
        procs.append(proc)
        assert wait_until(lambda p=proc: p.poll() is not None or fleet.stage("killer") == "dead_letter", 60)
        if fleet.stage("killer") == "dead_letter":
            break
    assert [p.poll() for p in procs] == [-signal.SIGKILL] * 3 + [None]
    fleet.kill(procs[-1], signal.SIGTERM)
    assert fleet.finish(procs[-1], 30) == 0, fleet.err(procs[-1])

    events = fleet.events("killer")
    finished = [e for e in events if e["type"] == "finished"]
    assert [(e["by"], e["action"], e["outcome"], e["to"]) for e in finished] == [
        ("m1", "reclaim", "lease_expired", "inbox"), ("m2", "reclaim", "lease_expired", "inbox"),
        ("m3", "dead", "lease_expired", "dead_letter")]
    assert all("no heartbeat from" in e["why"] for e in finished)
    assert [c["host"] for c in events if c["type"] == "claimed"] == ["machine-0", "machine-1", "machine-2"]
    assert [row[2] for row in ledger_rows(ledger)] == ["m0", "m1", "m2"]


def heartbeat_payload(fleet: Fleet, clone: Path) -> dict[str, Any]:
    """The payload of the heartbeat of `clone`'s machine as the remote holds it now ({} before
    its first beat)."""
    done = git(fleet.bare, "cat-file", "commit", machine_ref(clone), check=False)
    if "\n\n" not in done:
        return {}
    return dict(json.loads(done.split("\n\n", 1)[1]))


def test_a_holder_whose_result_cannot_land_yet_keeps_renewing_its_lease(fleet: Fleet) -> None:
    """While the remote's branch refuses updates, a worker whose attempt has ended still lists the job's lease in every heartbeat."""
    ledger, go, ended = fleet.base / "ledger", fleet.base / "go", fleet.base / "ended"
    body = ledger_body(ledger, f"while [ ! -e {go} ]; do sleep 0.1; done\ntouch {ended}\n")
    fleet.drop_jobs({"slow-to-land": (body, {"verify": "true"})})
    holder = fleet.worker(fleet.clones[0], "holder", "--once")
    assert wait_until(lambda: ledger_rows(ledger) != [] and fleet.stage("slow-to-land") == "building", 30)
    token = fleet.events("slow-to-land", "claimed")[0]["token"]
    stuck = fleet.bare / "refs/heads/main.lock"  # as a receive-pack killed mid-update leaves it
    stuck.touch()
    try:
        go.touch()
        assert wait_until(ended.exists, 30)
        seq = int(heartbeat_payload(fleet, fleet.clones[0])["seq"])
        assert wait_until(lambda: int(heartbeat_payload(fleet, fleet.clones[0])["seq"]) >= seq + 3, 30)
        assert fleet.stage("slow-to-land") == "building"  # the result has not landed
        assert token in heartbeat_payload(fleet, fleet.clones[0])["tokens"]
        shown = fleet.aq(fleet.seed, "workers", "--json")
        assert [row["jobs"] for row in json.loads(shown.stdout) if row["worker"] == "holder"] == \
            [["slow-to-land"]]
    finally:
        stuck.unlink()
    assert fleet.finish(holder, 90) == 0
    assert fleet.stage("slow-to-land") == "testing"


def test_a_claim_whose_push_got_no_answer_runs_once_the_remote_shows_it_landed(fleet: Fleet) -> None:
    """The remote takes a claim's push and vanishes before answering: once it is back, the worker sees its claim landed and runs the job."""
    ledger = fleet.base / "ledger"
    fleet.drop_jobs({"unsure": (ledger_body(ledger), {})})
    away = fleet.bare.with_name("remote.away")
    hook = fleet.bare / "hooks/reference-transaction"  # the remote dies, and stays away, right after the claim lands
    hook.write_text(f'#!/bin/sh\nif [ "$1" = committed ] && grep " refs/heads/main$" >/dev/null && '
                    f'[ -e "$0.armed" ]; then rm -f "$0.armed"; mv {fleet.bare} {away}; kill -9 $PPID; fi\n')
    hook.chmod(0o755)
    hook.with_name("reference-transaction.armed").touch()

    worker = fleet.worker(fleet.clones[0], "unsure", "--once", lease="10m")
    assert wait_until(lambda: "stopped answering during the claim" in fleet.out(worker), 30), \
        fleet.out(worker) + fleet.err(worker)
    away.rename(fleet.bare)
    assert fleet.stage("unsure") == "building"  # the claim did land
    assert wait_until(lambda: fleet.stage("unsure") == "review", 15), fleet.out(worker)
    assert fleet.finish(worker) == 0
    assert ledger_rows(ledger) == [["unsure", "1", "unsure"]]
