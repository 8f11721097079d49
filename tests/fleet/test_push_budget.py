"""A remote that limits pushes, as a forge does: its pre-receive hook refuses any push beyond
N in a window, across all refs (heartbeats too). With `push_budget` matching the limit, four
workers on two clones drain the queue without one refused push; with none set, they are
refused, hold back, and still lose no job. `aq stats --json` counts what they pushed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.fleet import Fleet, fleet_in
from tests.helpers.git import git
from tests.helpers.queue import configure

pytestmark = pytest.mark.slow
LIMIT, WINDOW = 6, 3  # pushes, seconds
JOBS = 6
RATE_LIMIT = """#!/bin/sh
exec 9>"{base}/limit.lock"
flock 9
now=$(date +%s.%N)
refs=$(cat | awk '{{print $3}}' | tr '\n' ,)
touch "{base}/accepted"
awk -v now="$now" -v w={window} '$1 > now - w' "{base}/accepted" > "{base}/accepted.tmp"
mv "{base}/accepted.tmp" "{base}/accepted"
if [ "$(wc -l < "{base}/accepted")" -ge {limit} ]; then
  echo "$now" >> "{base}/refused"; echo "$now refused $refs" >> "{base}/all"
  echo "rate limit: {limit} pushes per {window}s" >&2
  exit 1
fi
echo "$now" >> "{base}/accepted"; echo "$now ok $refs" >> "{base}/all"
"""


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with fleet_in(tmp_path / "fleet", 2) as made:
        yield made


def drain(fleet: Fleet, budget: dict[str, object] | None) -> list[str]:
    """Drop the jobs, limit the remote, drain with two workers per clone; the refused pushes."""
    settings: dict[str, object] = {"lease_ttl": "20s"}
    if budget is not None:
        settings["push_budget"] = budget
    configure(fleet.seed, **settings)
    git(fleet.seed, "commit", "-qam", "lease and push budget")
    git(fleet.seed, "push", "-q", "origin", "HEAD:main")
    fleet.drop_jobs({f"job-{n}": ("echo done", {"verify": "true"}) for n in range(JOBS)})
    for clone in fleet.clones:
        git(clone, "pull", "-q", "origin", "main")
    hook = fleet.bare / "hooks" / "pre-receive"
    hook.write_text(RATE_LIMIT.format(base=fleet.base, limit=LIMIT, window=WINDOW))
    hook.chmod(0o755)
    workers = [fleet.start(clone, "run", "--drain", "--worker", f"w{n}-{i}", "--poll", "0.2",
                           name=f"w{n}-{i}")
               for n, clone in enumerate(fleet.clones) for i in range(2)]
    for worker in workers:
        assert fleet.finish(worker, 300) == 0, fleet.err(worker)
    assert sorted(fleet.stages_at().values()) == [["testing"]] * JOBS  # none lost
    for n in range(JOBS):
        assert [e["action"] for e in fleet.events(f"job-{n}", "finished")] == ["pass"]
    refused = fleet.base / "refused"
    return refused.read_text().split() if refused.exists() else []


def test_a_fleet_within_its_push_budget_is_never_refused(fleet: Fleet) -> None:
    assert drain(fleet, {"pushes": LIMIT, "per": f"{WINDOW}s"}) == []
    shown = fleet.aq(fleet.clones[0], "stats", "--json")
    assert shown.returncode == 0, shown.stderr
    pushes = json.loads(shown.stdout)["pushes"]
    assert pushes["refused"] == 0 and pushes["pushes"] >= 1 and pushes["per_job"] > 0


def test_a_fleet_with_no_budget_is_refused_holds_back_and_loses_nothing(fleet: Fleet) -> None:
    assert drain(fleet, None) != []
