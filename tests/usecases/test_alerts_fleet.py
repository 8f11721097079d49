"""Alerts raised by a real fleet: `aq run` processes on two clones of one remote, each clone a
machine of its own, the on_alert hook writing to a file outside both."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.helpers.fleet import fleet_in
from tests.helpers.git import git
from tests.helpers.queue import configure
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


def test_a_dead_letter_seen_by_two_clones_is_raised_once_across_the_fleet(tmp_path: Path) -> None:
    """Both clones' idle workers see the dead letter at their first look; the one whose
    `alerted` note lands first on the remote raises it, the other finds the note and does not."""
    ledger = tmp_path / "alerts.jsonl"
    with fleet_in(tmp_path / "fleet", 0) as fleet:
        config = fleet.seed / "aq.yaml"
        config.write_text(config.read_text() + "alerts: {stall: 'off', offline: 'off', "
                          "failure_spike: 'off', budget: 'off'}\n"
                          f"hooks: {{on_alert: 'cat >> {ledger}'}}\n")
        (fleet.seed / "queue" / "dead_letter" / "doomed.md").write_text("echo doomed\n")
        git(fleet.seed, "add", "-A")
        git(fleet.seed, "commit", "-q", "-m", "alerts, and a dead letter")
        git(fleet.seed, "push", "-q", "origin", "HEAD:main")
        clones = [fleet.clone(), fleet.clone()]
        workers = [fleet.worker(clone, f"idle-{n}", lease="20s") for n, clone in enumerate(clones)]
        assert wait_until(lambda: ledger.exists() and ledger.read_text().strip() != "", 60), (
            [fleet.out(w) + fleet.err(w) for w in workers])
        # both looked: each clone noted the key as its own to raise (the loser then found the
        # winner's note on the remote)
        noted = [clone / ".git" / "aq" / "alerted.json" for clone in clones]
        assert wait_until(lambda: all(path.exists() and "dead_letter:doomed" in path.read_text()
                                      for path in noted), 60), [fleet.err(w) for w in workers]
        time.sleep(1)  # the loser's transaction, if it were to raise, would be under way
        raised = [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()]
        assert [(alert["kind"], alert["job"]) for alert in raised] == [("dead_letter", "doomed")]
        [note] = fleet.events("doomed", "alerted")
        assert note["kind"] == "dead_letter" and note["by"] in ("idle-0", "idle-1")


def test_a_machine_gone_silent_is_raised_once_by_the_fleets_first_idle_worker(
        tmp_path: Path) -> None:
    """A machine killed -9 says no goodbye: both other clones' idle workers see it offline, and
    only the first idle worker by name raises it (an alert about no job has no job to note)."""
    ledger = tmp_path / "alerts.jsonl"
    with fleet_in(tmp_path / "fleet", 0) as fleet:
        configure(fleet.seed, lease_ttl="3s", hooks={"on_alert": f"cat >> {ledger}"},
                  alerts={"stall": "8s", "offline": "1s", "failure_spike": "off",
                          "budget": "off", "dead_letter": "off"})
        git(fleet.seed, "commit", "-q", "-m", "alerts", "--", "aq.yaml")
        git(fleet.seed, "push", "-q", "origin", "HEAD:main")
        first, second, doomed = fleet.clone(), fleet.clone(), fleet.clone()
        victim = fleet.worker(doomed, "victim", lease="3s")
        idle = [fleet.worker(first, "idle-a", lease="3s"),
                fleet.worker(second, "idle-b", lease="3s")]
        assert wait_until(lambda: "victim" in fleet.aq(first, "workers").stdout, 60)
        fleet.kill(victim)
        assert wait_until(lambda: ledger.exists() and ledger.read_text().strip() != "", 90), (
            [fleet.out(w) + fleet.err(w) for w in idle])
        time.sleep(5)  # two more looks by each idle worker
        raised = [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()]
        assert [alert["kind"] for alert in raised] == ["machine_offline"], raised
        assert "alert machine_offline" in fleet.out(idle[0])
        assert "alert" not in fleet.out(idle[1])
