"""A worker's moves fire aq.yaml's hooks: `aq run` runs the hook of the stage its result (or
its claim) moved a job to, as the worker; a hook that fails or hangs changes nothing of the
job's course, and is recorded as a `hook` event by the worker."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.helpers.cli import Ran
from tests.helpers.fleet import fleet_in
from tests.helpers.git import git
from tests.helpers.queue import configure, events, stage_of, write_job

Aq = Callable[..., Ran]


def test_a_worker_failing_a_job_fires_on_stage_failed(aq: Aq, queue_root: Path,
                                                       tmp_path: Path) -> None:
    """`aq run --once` on a job that exits 3: on_stage.failed gets the worker's `finished` event
    on stdin, as the worker, after the result is committed; its run is a `hook` event."""
    out = tmp_path / "hook.json"
    configure(queue_root, hooks={"on_stage": {"failed": f"cat > {out}"}})
    write_job(queue_root, "broken", "echo compiling; exit 3", title="Build it")
    ran = aq("run", "--once", "--worker", "w1")
    assert ran.returncode == 0, ran.stderr
    assert stage_of(queue_root, "broken") == "failed"
    got = json.loads(out.read_text())
    finished = events(queue_root, "broken", "finished")[-1]
    assert got["event"] == finished
    assert (got["from"], got["to"], got["by"], got["title"]) == ("building", "failed", "w1",
                                                                 "Build it")
    assert got["text"].startswith("aq: broken building -> failed (")
    hook, = events(queue_root, "broken", "hook")
    assert (hook["hook"], hook["exit"], hook["by"]) == ("on_stage.failed", 0, "w1")
    assert "hook" not in ran.stderr


def test_failing_and_hanging_hooks_never_hold_a_worker_s_job_back(aq: Aq, queue_root: Path) -> None:
    """A claim's hook that fails and a result's hook that hangs past its timeout: the job is
    run and ends in failed all the same, `aq run --once` exits 0, each is said in one line and
    recorded."""
    configure(queue_root, hooks={"on_stage": {"building": "echo no desktop >&2; exit 9",
                                              "failed": "sleep 300"}, "timeout": "1s"})
    write_job(queue_root, "slow-news", "exit 1")
    ran = aq("run", "--once", "--worker", "w1")
    assert ran.returncode == 0
    assert stage_of(queue_root, "slow-news") == "failed"
    said = [line for line in ran.stderr.splitlines() if "hook" in line]
    assert said == ["aq: hook on_stage.building exited 9: no desktop",
                    "aq: hook on_stage.failed stopped after its timeout of 1s"]
    ran_hooks = [(e["hook"], e["exit"]) for e in events(queue_root, "slow-news", "hook")]
    assert ran_hooks == [("on_stage.building", 9), ("on_stage.failed", "timeout")]


def test_a_worker_s_hook_event_rides_with_its_next_commit(tmp_path: Path) -> None:
    """With a remote, the hook event of a worker's result goes out in the worker's next commit
    (the next result, with its claim), not in a push of its own."""
    with fleet_in(tmp_path, clones=0) as fleet:
        configure(fleet.seed, hooks={"on_stage": {"failed": "true"}})
        git(fleet.seed, "commit", "-q", "-m", "hooks", "--", "aq.yaml")
        git(fleet.seed, "push", "-q", "origin", "HEAD:main")
        fleet.drop_jobs({"first": ("exit 2", {"priority": "high"}),
                         "second": ("exit 2", {"priority": "low"})})
        clone = fleet.clone()  # after the hooks: a worker reads aq.yaml as it starts
        ran = fleet.aq(clone, "run", "--drain", "--worker", "w1")
        assert ran.returncode == 0, ran.stderr
        assert (fleet.stage("first"), fleet.stage("second")) == ("failed", "failed")
        hook, = fleet.events("first", "hook")
        assert (hook["hook"], hook["exit"], hook["by"]) == ("on_stage.failed", 0, "w1")
        assert fleet.events("second", "hook") == []  # waits for this clone's next commit
        # the commit that took first's hook event out is the one that recorded second's result
        carried = git(fleet.bare, "log", "--format=%s", "-1", "main", "--",
                      "queue/.events/first.jsonl").strip()
        assert carried.startswith("aq: second attempt 1")
