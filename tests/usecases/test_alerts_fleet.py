"""Alerts raised by a real fleet: `aq run` processes on two clones of one remote, each clone a
machine of its own, the on_alert hook writing to a file outside both."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.helpers.fleet import fleet_in
from tests.helpers.git import git
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.slow


def stalled_lines(ledger: Path) -> list[dict[str, object]]:
    if not ledger.exists():
        return []
    raised = [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()]
    return [alert for alert in raised if alert.get("kind") == "stalled"]


def test_a_job_that_prints_nothing_raises_one_stalled_alert_across_two_clones(
        tmp_path: Path) -> None:
    """A job silent for `stall` is seen stalled by the idle worker of the clone running it (its
    log is there), once; the idle worker of the other clone sees its holder's heartbeat beat on,
    and raises nothing."""
    ledger = tmp_path / "alerts.jsonl"
    with fleet_in(tmp_path / "fleet", 0) as fleet:
        config = fleet.seed / "aq.yaml"
        config.write_text(config.read_text() + "alerts: {stall: 3s, offline: 'off'}\n"
                          f"hooks: {{on_alert: 'cat >> {ledger}'}}\n")
        git(fleet.seed, "commit", "-q", "-m", "alerts", "--", "aq.yaml")
        git(fleet.seed, "push", "-q", "origin", "HEAD:main")
        running, other = fleet.clone(), fleet.clone()
        fleet.drop_jobs({"silent": ("sleep 60", {})})
        holder = fleet.worker(running, "holder", lease="20s")
        assert wait_until(lambda: fleet.stage("silent") == "building", 60), fleet.out(holder)
        idle_here = fleet.worker(running, "idle-here", lease="20s")
        idle_there = fleet.worker(other, "idle-there", lease="20s")
        assert wait_until(lambda: bool(stalled_lines(ledger)), 60), (
            fleet.out(idle_here) + fleet.err(idle_here))
        time.sleep(5)  # a dozen more looks by each idle worker
        [alert] = stalled_lines(ledger)
        assert alert["job"] == "silent"
        details = alert["alert"]
        assert isinstance(details, dict) and details["key"] == "stalled:silent:1"
        assert "no log output for" in details["message"]
        assert "alert stalled: silent" in fleet.out(idle_here)
        assert "alert" not in fleet.out(idle_there) + fleet.out(holder)
