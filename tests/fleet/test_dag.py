"""Dependencies and idempotency keys across clones: decided on the commit a claim or an add is pushed onto."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from aq.core.manifest import parse_manifest
from tests.helpers.fleet import Fleet, fleet_in, ledger_body, ledger_rows
from tests.helpers.git import git

pytestmark = pytest.mark.slow

JOBS = 50
DONE = ("testing", "shipped")
LEASE = "60s"  # deps are the subject here; a starved worker's result must not lose its lease meanwhile


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with fleet_in(tmp_path / "fleet", 3) as made:
        yield made


def random_dag(seed: int) -> dict[str, list[str]]:
    """JOBS job ids -> their deps, each dep an earlier job; ids shuffled so id order is not the topological order."""
    rng = random.Random(seed)
    ids = [f"dag-{n:02d}" for n in range(JOBS)]
    rng.shuffle(ids)
    return {job_id: sorted(rng.sample(ids[:n], min(n, rng.choice([0, 1, 1, 2, 3]))))
            for n, job_id in enumerate(ids)}


def keys_on_remote(fleet: Fleet) -> dict[str, list[str]]:
    """idempotency key -> the jobs (stage/id) on the remote's main that carry it."""
    found: dict[str, list[str]] = {}
    for job_id, stages in fleet.stages_at().items():
        for stage in stages:
            text = git(fleet.bare, "show", f"main:queue/{stage}/{job_id}.md")
            key = parse_manifest(job_id, text, f"{stage}/{job_id}.md").idempotency_key
            if key:
                found.setdefault(key, []).append(f"{stage}/{job_id}")
    return found


@pytest.mark.parametrize("seed", [2026])
def test_no_job_of_a_random_graph_is_claimed_before_its_deps_are_done_on_the_commit_it_claims_from(
        fleet: Fleet, seed: int) -> None:
    """50 jobs with random deps run by workers in 3 clones: every claim commit has each dep of its job in testing or shipped."""
    ledger = fleet.base / "ledger"
    deps = random_dag(seed)
    fleet.drop_jobs({job_id: (ledger_body(ledger), {"verify": "true", "deps": after} if after
                              else {"verify": "true"})
                     for job_id, after in deps.items()})
    procs = [fleet.worker(clone, f"w{n}", "--drain", lease=LEASE) for n, clone in enumerate(fleet.clones)]
    for proc in procs:
        assert fleet.finish(proc, 120) == 0, fleet.err(proc)
        assert "Traceback" not in fleet.err(proc)

    assert fleet.stages_at() == {job_id: ["testing"] for job_id in deps}
    claims = fleet.claim_commits()
    assert {job_id: len(commits) for job_id, commits in claims.items()} == dict.fromkeys(deps, 1)
    for job_id, (commit,) in claims.items():
        # what the claim was decided on: the parent, plus what the same commit recorded before
        # claiming (a worker records its finished job and claims the next one in one commit)
        before, decided = fleet.stages_at(f"{commit}^"), fleet.stages_at(commit)
        assert (before[job_id], decided[job_id]) == (["inbox"], ["building"])
        early = {dep: decided.get(dep) for dep in deps[job_id] if decided.get(dep, [None])[0] not in DONE}
        assert not early, f"{job_id} was claimed in {commit[:10]} while its deps were {early}"
        finished_here = [dep for dep in deps[job_id] if before[dep] != decided[dep]]
        assert all(before[dep] == ["building"] for dep in finished_here), (job_id, finished_here)

    order = [row[0] for row in ledger_rows(ledger)]
    assert sorted(order) == sorted(deps)  # each job ran exactly once
    for job_id, after in deps.items():
        assert all(order.index(dep) < order.index(job_id) for dep in after), job_id

    fleet.pull_seed()
    checked = fleet.aq(fleet.seed, "fsck", "--history")
    assert checked.returncode == 0, checked.stdout


def test_one_idempotency_key_added_from_three_clones_at_once_makes_one_job(fleet: Fleet) -> None:
    """`aq add --key K` run in three clones at the same instant: all three name one job, the only one on the remote."""
    for round_ in range(5):
        key = f"deploy-{round_}"
        gate = fleet.base / f"gate-{key}"
        procs = [fleet.start(clone, "add", "--key", key, "--title", f"Deploy {round_}", "--body",
                             f"echo deploy {round_}", name=f"add-{key}-{n}", gate=gate)
                 for n, clone in enumerate(fleet.clones)]
        fleet.release(gate, len(procs))
        for proc in procs:
            assert fleet.finish(proc) == 0, fleet.err(proc)
        named = {fleet.out(proc).strip() for proc in procs}
        assert len(named) == 1, named
        job_id = named.pop()
        assert keys_on_remote(fleet)[key] == [f"inbox/{job_id}"]
        assert [e["key"] for e in fleet.events(job_id, "added")] == [key]
        assert sum("already exists" in fleet.err(proc) for proc in procs) == 2
    assert sorted(keys_on_remote(fleet)) == [f"deploy-{n}" for n in range(5)]
    assert len(fleet.stages_at()) == 5
