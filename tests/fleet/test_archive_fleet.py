"""Archiving while a fleet works (aq.worker.upkeep, aq.store.archive_ref): four workers on two
clones, with aq.yaml `archive_after` set, move 300 long-finished jobs onto the archive's ref at
their first idle turns, racing each other, while jobs are still being claimed, run and added.
Every job ends in exactly one place, each ran once, and both clones check clean."""

from __future__ import annotations

import json
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.helpers.fleet import fleet_in, ledger_body
from tests.helpers.git import files_at, git, jobs_at
from tests.helpers.queue import configure
from tests.helpers.waiting import wait_for
from tests.usecases.test_archive import commit_all, write_final

pytestmark = pytest.mark.slow

LONG_AGO = datetime.now(UTC) - timedelta(days=40)
OLD = [f"old-{index:03d}" for index in range(300)]
FIRST = [f"first-{index:02d}" for index in range(16)]
LATER = [f"later-{index:02d}" for index in range(8)]


def places(bare: Path) -> Counter[str]:
    """How many copies of each job the remote holds: its branch's stage folders, then its
    archive's ref (a job in a stage folder and in the archive counts twice)."""
    found: Counter[str] = Counter()
    for ref in ("main", "refs/aq/archive/main"):
        found.update(path.rsplit("/", 1)[1][:-3] for path in files_at(bare, ref, check=False)
                     if path.endswith(".md") and path.split("/")[-2] in (
                         "inbox", "building", "review", "testing", "shipped", "failed",
                         "dead_letter"))
    return found


def archived(bare: Path) -> set[str]:
    return set(jobs_at(bare, "refs/aq/archive/main", check=False))


def test_workers_archive_at_their_idle_turns_while_others_claim_and_every_job_stays_whole(
        tmp_path: Path) -> None:
    with fleet_in(tmp_path, 0) as fleet:
        ledger = fleet.base / "ledger"
        ledger.write_text("")
        configure(fleet.seed, archive_after="1d")
        for job_id in OLD:
            write_final(fleet.seed, job_id, "shipped", LONG_AGO)
        commit_all(fleet.seed, "300 jobs shipped long ago, and archive_after")
        git(fleet.seed, "push", "-q", "origin", "HEAD:main")
        work = {"verify": "true", "review-policy": "auto"}
        fleet.drop_jobs({job_id: (ledger_body(ledger), work) for job_id in FIRST}, "first jobs")
        clones = [fleet.clone("machine-a"), fleet.clone("machine-b")]
        workers = [fleet.worker(clone, f"w{n}-{clone.name}", lease="8s")
                   for clone in clones for n in (1, 2)]

        # the first idle turn of each worker moves the 300 (two clones race to push them)
        wait_for(lambda: set(OLD) <= archived(fleet.bare), 120, "the old jobs are archived")
        fleet.drop_jobs({job_id: (ledger_body(ledger), work) for job_id in LATER}, "later jobs")
        wait_for(lambda: all(fleet.stage(job_id) == "shipped" for job_id in FIRST + LATER), 120,
                 "every job is claimed, run and shipped")
        for worker in workers:
            fleet.kill(worker, signal.SIGTERM)
        for worker in workers:
            fleet.finish(worker)

        ran = Counter(line.split()[0] for line in ledger.read_text().splitlines())
        assert ran == Counter(FIRST + LATER), ran  # each job ran once
        copies = places(fleet.bare)
        assert set(copies) == set(OLD + FIRST + LATER)
        assert [job_id for job_id, count in copies.items() if count != 1] == []
        assert not set(OLD) & set(fleet.stages_at())  # the branch keeps none of the old

        for clone in clones:
            assert fleet.aq(clone, "ls", "--fetch").returncode == 0
            checked = fleet.aq(clone, "fsck")
            assert checked.returncode == 0, checked.stdout + checked.stderr
            assert checked.stderr.startswith(f"{len(copies)} jobs"), checked.stderr
            shown = json.loads(fleet.aq(clone, "show", "old-123", "--json").stdout)
            assert (shown["stage"], shown["archived"]) == ("shipped", True)
        [log] = (clones[0] / "queue" / ".archive").glob("*/*/*/.events/old-000.jsonl")
        moves = [event["by"] for event in map(json.loads, log.read_text().splitlines())
                 if event["type"] == "archived"]
        assert len(moves) == 1 and moves[0].startswith("w"), moves  # moved once, by a worker
