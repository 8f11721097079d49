"""Best of N across a fleet: two clones' workers run a job's three samples at once; the first
to pass wins, the two still running are stopped, and only the winner's branch becomes the
job's. Then the same with a worker killed -9 while it runs all three: no sample is made twice."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.fleet import Fleet, fleet_in
from tests.helpers.git import git, project_repo
from tests.helpers.queue import configure
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.slow
VERIFY = "grep -qx good answer"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with fleet_in(tmp_path / "fleet", 2) as made:
        yield made


def engines(marks: Path, go: Path) -> dict[str, object]:
    """`slow` marks that it started, then runs a minute unless stopped (and marks that it ended);
    `good` marks that it started and writes the answer once `go` exists."""
    slow = (f'touch "{marks}/started-$AQ_JOB_ID"; n=0; '
            'while [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done; '
            f'echo slow > answer; touch "{marks}/ended-$AQ_JOB_ID"')
    good = (f'touch "{marks}/started-$AQ_JOB_ID"; n=0; '
            f'while [ ! -e "{go}" ] && [ $n -lt 1200 ]; do sleep 0.1; n=$((n+1)); done; '
            'echo good > answer')
    return {"slow": {"cmd": ["bash", "-c", slow], "input": "stdin"},
            "good": {"cmd": ["bash", "-c", good], "input": "stdin"}}


def set_up(fleet: Fleet, tmp_path: Path) -> tuple[Path, Path, Path]:
    project = project_repo(tmp_path)
    marks, go = tmp_path / "marks", tmp_path / "go"
    marks.mkdir()
    configure(fleet.seed, repo=str(project), engines=engines(marks, go))
    git(fleet.seed, "commit", "-qam", "a project and engines")
    git(fleet.seed, "push", "-q", "origin", "HEAD:main")
    for clone in fleet.clones:  # a worker reads aq.yaml as its clone has it when it starts
        git(clone, "pull", "-q", "origin", "main")
    fleet.drop_jobs({"best": ("Write the answer.", {"verify": VERIFY,
                                                    "engines": ["slow", "good", "slow"]})})
    return project, marks, go


def samples(fleet: Fleet) -> dict[int, tuple[str, str]]:
    """sample number -> (its id, its stage) of the job `best`, as the remote has them."""
    found = {}
    for job_id, (stages, manifest) in fleet.manifests().items():
        key = manifest.idempotency_key or ""
        if key.startswith("sample:best:"):
            assert len(stages) == 1, (job_id, stages)
            found[int(key.rsplit(":", 1)[1])] = (job_id, stages[0])
    return found


def check_one_winner(fleet: Fleet, project: Path, marks: Path) -> None:
    assert fleet.stage("best") == "testing"
    made = samples(fleet)
    assert sorted(made) == [1, 2, 3], made  # never a sample made twice
    assert [stage for _, stage in (made[n] for n in (1, 2, 3))] == ["failed", "shipped", "failed"]
    winner = made[2][0]
    last = fleet.events("best", "finished")[-1]
    assert (last["action"], last["branch"], last["sample"]) == ("pass", f"aq/{winner}", winner)
    for number in (1, 3):  # each loser was running, and was stopped: it never ran to its end
        loser = made[number][0]
        assert (marks / f"started-{loser}").exists()
        assert not (marks / f"ended-{loser}").exists()
        assert f"sample 2 ({winner}) of best passed first" in fleet.events(loser, "moved")[-1]["why"]
        assert not [e for e in fleet.events(loser, "finished") if e["action"] != "reclaim"]
    # the job's work is the winner's branch, and nothing of a loser reached the project's main
    assert git(project, "show", f"aq/{winner}:answer").strip() == "good"
    assert git(project, "ls-tree", "--name-only", "main").split() == ["README.md"]


def test_best_of_three_across_two_clones_has_one_winner_and_stops_the_others(
        fleet: Fleet, tmp_path: Path) -> None:
    project, marks, go = set_up(fleet, tmp_path)
    workers = [fleet.worker(clone, f"w{n}", "--drain", "--max", "2", lease="5s")
               for n, clone in enumerate(fleet.clones)]
    wait_for(lambda: len(list(marks.glob("started-*"))) == 3
             or any(w.poll() is not None for w in workers), 120, "all three samples running")
    assert len(list(marks.glob("started-*"))) == 3, [fleet.err(w) for w in workers]
    go.touch()
    for worker in workers:
        assert fleet.finish(worker, 240) == 0, fleet.err(worker)
    check_one_winner(fleet, project, marks)


def test_a_worker_killed_while_it_runs_the_samples_makes_no_second_sample(
        fleet: Fleet, tmp_path: Path) -> None:
    project, marks, go = set_up(fleet, tmp_path)
    doomed = fleet.worker(fleet.clones[0], "w-doomed", "--drain", "--max", "3", lease="3s")
    wait_for(lambda: len(list(marks.glob("started-*"))) == 3 or doomed.poll() is not None, 120,
             "all three samples running on one worker")
    assert len(list(marks.glob("started-*"))) == 3, fleet.err(doomed)
    fleet.kill(doomed, signal.SIGKILL)
    doomed.wait(timeout=30)
    go.touch()

    survivor = fleet.worker(fleet.clones[1], "w-survivor", "--drain", "--max", "3", lease="3s")
    assert fleet.finish(survivor, 240) == 0, fleet.err(survivor)
    check_one_winner(fleet, project, marks)
    winner = samples(fleet)[2][0]
    assert [e["action"] for e in fleet.events(winner, "finished")] == ["reclaim", "autoship"]
