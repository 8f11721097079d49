"""Six clones of one remote racing for the same job: a claim is won only by its push (DESIGN §5)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.fleet import SOAK, Fleet, fleet_in, ledger_body, ledger_rows
from tests.helpers.git import git

pytestmark = pytest.mark.slow

CLONES = 6
ROUNDS = 20 if SOAK else 6
# Claims are the subject here, not leases: a lease long enough that none expires while a starved
# worker retries its push (a result waiting to land is not renewed: see fleet/test_pause).
LEASE = "60s"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with fleet_in(tmp_path / "fleet", CLONES) as made:
        yield made


def claim_commits_made(clone: Path) -> Counter[str]:
    """job id -> how many claim commits this clone made for it (won or refused), from its reflog."""
    made: Counter[str] = Counter()
    for subject in git(clone, "reflog", "--format=%gs").splitlines():
        if subject.startswith("commit: aq: claim "):
            made[subject.split()[3]] += 1
    return made


def race(fleet: Fleet, name: str, workers: int) -> list[str]:
    """Start `workers` `aq run --once` processes, one per clone, released together; their stdouts."""
    gate = fleet.base / f"gate-{name}"
    procs = [fleet.worker(clone, f"w{n}", "--once", gate=gate, lease=LEASE)
             for n, clone in enumerate(fleet.clones[:workers])]
    fleet.release(gate, workers)
    for proc in procs:
        assert fleet.finish(proc) == 0, fleet.err(proc)
        assert "Traceback" not in fleet.err(proc)
    return [fleet.out(proc) for proc in procs]


@pytest.mark.heavy  # it keeps both cores busy: see tests/conftest.py
def test_one_job_raced_by_six_clones_has_exactly_one_winner_every_round(fleet: Fleet) -> None:
    """Rounds of six clones claiming one job at the same instant (6, or 20 with AQ_SOAK=1):
    each round exactly one runs it, once."""
    ledger = fleet.base / "ledger"
    ids = [f"race-{n:02d}" for n in range(ROUNDS)]
    for job_id in ids:
        fleet.drop_jobs({job_id: (ledger_body(ledger), {})}, f"add {job_id}")
        outs = race(fleet, job_id, CLONES)
        ran = [row for row in ledger_rows(ledger) if row[0] == job_id]
        assert len(ran) == 1, f"{job_id} ran {len(ran)} times: {ran}"
        winners = [n for n, out in enumerate(outs) if f"claimed {job_id}" in out]
        assert winners == [int(ran[0][2][1:])], outs
        assert all("nothing to run" in out for n, out in enumerate(outs) if n not in winners)
        assert fleet.stage(job_id) == "review"

    rows = ledger_rows(ledger)
    assert Counter(row[0] for row in rows) == Counter(ids)
    assert {row[1] for row in rows} == {"1"}
    assert {job_id: len(commits) for job_id, commits in fleet.claim_commits().items()} == \
        dict.fromkeys(ids, 1)
    for job_id, _attempt, worker in rows:
        claims = fleet.events(job_id, "claimed")
        assert [(c["by"], c["attempt"]) for c in claims] == [(worker, 1)]
        finished = fleet.events(job_id, "finished")
        assert [(f["by"], f["token"], f["to"]) for f in finished] == \
            [(worker, claims[0]["token"], "review")]
        assert fleet.events(job_id, "stale_result") == []

    # the race was real: in most rounds several clones committed a claim, and all but one were refused
    made: Counter[str] = Counter()
    for clone in fleet.clones:
        made.update(claim_commits_made(clone))
    contested = [job_id for job_id in ids if made[job_id] >= 2]
    assert len(contested) >= ROUNDS // 2, made

    fleet.pull_seed()
    checked = fleet.aq(fleet.seed, "fsck", "--history")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout == ""


def test_losers_of_a_race_go_on_to_the_other_jobs(fleet: Fleet) -> None:
    """Six jobs and six one-job workers released together: every job runs exactly once and every worker runs one."""
    ledger = fleet.base / "ledger"
    ids = [f"pile-{n}" for n in range(CLONES)]
    fleet.drop_jobs({job_id: (ledger_body(ledger), {}) for job_id in ids}, "add a pile of jobs")
    outs = race(fleet, "pile", CLONES)

    rows = ledger_rows(ledger)
    assert sorted(row[0] for row in rows) == ids  # each job exactly once
    assert sorted(row[2] for row in rows) == [f"w{n}" for n in range(CLONES)]  # each worker one job
    assert all(out.count("claimed ") == 1 for out in outs), outs
    assert {job_id: fleet.stage(job_id) for job_id in ids} == dict.fromkeys(ids, "review")
    for job_id in ids:
        assert len(fleet.events(job_id, "claimed")) == 1
    assert {job_id: len(c) for job_id, c in fleet.claim_commits().items()} == dict.fromkeys(ids, 1)

    # some worker lost a claim it had committed and then won another job
    went_on = []
    for n, clone in enumerate(fleet.clones):
        ran = {row[0] for row in rows if row[2] == f"w{n}"}
        went_on += [job_id for job_id in claim_commits_made(clone) if job_id not in ran]
    assert went_on, "no worker lost a claim: the workers did not race"

    fleet.pull_seed()
    checked = fleet.aq(fleet.seed, "fsck", "--history")
    assert checked.returncode == 0, checked.stdout + checked.stderr
