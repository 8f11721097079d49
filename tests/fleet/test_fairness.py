"""Fairness among workers racing for claims: six workers on three clones drain 120 trivial
jobs, and every worker makes claims (without taking turns, two workers of one clone made every
claim while the others lost every race)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.fleet import Fleet, fleet_in

pytestmark = pytest.mark.slow
JOBS, PER_CLONE = 120, 2


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with fleet_in(tmp_path / "fleet", 3) as made:
        yield made


@pytest.mark.heavy  # it keeps both cores busy: see tests/conftest.py
def test_six_racing_workers_each_get_claims(fleet: Fleet) -> None:
    fleet.drop_jobs({f"job-{n:03}": ("true", {"verify": "true"}) for n in range(JOBS)})
    workers = [fleet.start(clone, "run", "--drain", "--worker", f"w{c}-{i}", "--poll", "0.05",
                           name=f"w{c}-{i}")
               for c, clone in enumerate(fleet.clones) for i in range(PER_CLONE)]
    for worker in workers:
        assert fleet.finish(worker, 300) == 0, fleet.err(worker)
    claims = Counter(event["by"] for n in range(JOBS)
                     for event in fleet.events(f"job-{n:03}", "claimed"))
    assert sum(claims.values()) >= JOBS
    assert len(claims) == len(workers) and min(claims.values()) >= 5, claims
