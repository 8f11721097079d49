"""The review gate across a fleet, with a worker killed -9 in the middle of a review: the
review is taken back and run again, no second review is made, and the job moves on."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.fleet import Fleet, fleet_in
from tests.helpers.git import git
from tests.helpers.queue import configure
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with fleet_in(tmp_path / "fleet", 2) as made:
        yield made


def test_a_worker_killed_mid_review_loses_no_verdict_and_makes_no_second_review(
        fleet: Fleet) -> None:
    started = fleet.base / "review-started"
    # the first run of the review hangs (its worker is killed); a second run approves
    hang_first = (f'if [ "$AQ_ATTEMPT" = 1 ]; then touch {started}; n=0; '
                  'while [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done; fi\n'
                  'echo "looks right"; echo "VERDICT: approve"')
    configure(fleet.seed, engines={"reviewer": {"cmd": ["bash", "-c", hang_first], "input": "stdin"}})
    git(fleet.seed, "commit", "-qam", "a reviewer engine")
    git(fleet.seed, "push", "-q", "origin", "HEAD:main")
    for clone in fleet.clones:  # a worker reads aq.yaml as its clone has it when it starts
        git(clone, "pull", "-q", "origin", "main")
    fleet.drop_jobs({"feature": ("echo work", {"verify": "true",
                                               "review": {"engine": "reviewer"}})})

    doomed = fleet.worker(fleet.clones[0], "w-doomed", "--drain", lease="3s")
    wait_for(lambda: started.exists() or doomed.poll() is not None, 120, "the review's first run")
    assert started.exists(), fleet.out(doomed) + fleet.err(doomed)
    fleet.kill(doomed, signal.SIGKILL)
    doomed.wait(timeout=30)

    survivor = fleet.worker(fleet.clones[1], "w-survivor", "--drain", lease="3s")
    assert fleet.finish(survivor, 240) == 0, fleet.err(survivor)
    assert fleet.stage("feature") == "testing"
    reviews = {job_id: stages for job_id, (stages, manifest) in fleet.manifests().items()
               if (manifest.idempotency_key or "").startswith("review:feature:")}
    assert list(reviews.values()) == [["shipped"]], reviews
    (review,) = reviews
    assert next(e["action"] for e in fleet.events(review, "finished")) == "reclaim"
    assert [e["action"] for e in fleet.events("feature", "finished")][-1] == "pass"
