"""A person's command in a clone that has not fetched: job commands fetch first, listings say
how old their view of the remote is."""

from __future__ import annotations

import json
import os
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.helpers.fleet import fleet_in
from tests.helpers.git import git


def test_a_job_command_fetches_first_and_a_listing_says_how_old_it_is(tmp_path: Path) -> None:
    """A job added in one clone is canceled from another that never fetched it; `aq ls` there
    says its view is stale until --fetch; with the remote gone, the move is refused in one line."""
    with fleet_in(tmp_path, clones=2) as fleet:
        first, second = fleet.clones
        assert fleet.aq(first, "add", "--body", "echo c5", "--id", "c5").returncode == 0
        assert git(first, "log", "-1", "--format=%s").startswith("aq: add c5")

        for name in ("FETCH_HEAD", "packed-refs"):  # this clone last looked ten minutes ago
            if (second / ".git" / name).exists():
                then = time.time() - 600
                os.utime(second / ".git" / name, (then, then))
        listed = fleet.aq(second, "ls")
        assert listed.stdout == "no jobs\n"
        assert re.fullmatch(r"aq: this clone was last fetched 10m(0\ds)? ago from 'origin'; "
                            r"--fetch looks at the remote now\n", listed.stderr), listed

        fetched = fleet.aq(second, "ls", "--fetch")
        assert "c5" in fetched.stdout and fetched.stderr == "", fetched

        assert fleet.aq(first, "add", "--body", "echo c6", "--id", "c6").returncode == 0
        canceled = fleet.aq(second, "cancel", "c6")
        assert (canceled.returncode, canceled.stdout) == (0, "c6: inbox -> failed\n"), canceled
        assert fleet.stage("c6") == "failed"

        fleet.bare.rename(tmp_path / "gone.git")
        refused = fleet.aq(second, "cancel", "c5")
        # git's own line says why
        assert (refused.returncode, refused.stderr) == (
            1, f"aq: cannot reach the queue's remote 'origin' ('{fleet.bare}' does not appear to "
               "be a git repository): nothing changed; try again when it answers\n")


def test_a_fresh_clone_ages_a_long_stopped_worker_by_its_heartbeat_not_by_first_sight(
        tmp_path: Path) -> None:
    """A worker that beat three hours ago and stopped is shown three hours old by a clone that
    sees its heartbeat for the first time (by its own clock, and said so), not 0.6 s old."""
    with fleet_in(tmp_path, clones=2) as fleet:
        first, second = fleet.clones
        then = datetime.now(UTC) - timedelta(hours=3)
        payload = {"worker": "old-worker", "host": "gone", "pid": 1, "seq": 9,
                   "wall": then.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "tokens": [], "retiring": True}
        # the heartbeat it left on the remote, as a worker writes it (a commit off main)
        tree = git(first, "hash-object", "-t", "tree", "-w", "/dev/null").strip()
        beat = git(first, "commit-tree", tree, "-m", json.dumps(payload)).strip()
        git(first, "push", "-q", "origin", f"{beat}:refs/aq/workers/old-worker")
        shown = fleet.aq(second, "workers", "--json")
        assert shown.returncode == 0, shown.stderr
        [row] = json.loads(shown.stdout)
        assert row["worker"] == "old-worker" and row["age_from"] == "its clock"
        assert 3 * 3600 - 60 < row["heartbeat_age"] < 3 * 3600 + 600
        text = fleet.aq(second, "workers").stdout
        assert "seen 3h ago (its clock)" in text and "(stopped)" in text
