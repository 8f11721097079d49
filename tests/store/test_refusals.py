"""A remote that says no (a pre-receive hook, a forge's rate limit) is not a lost race: a person's
command says so in one line and changes nothing; a worker holds its pushes back, longer each
time, keeps its results, and sends them once the remote takes pushes again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aq.infra.proc import Completed
from aq.store.sync import Push, Remote, push_outcome
from tests.helpers.fleet import Fleet, fleet_in
from tests.helpers.git import git, head
from tests.helpers.waiting import wait_for

REJECTED_LINE = "!\tHEAD:refs/heads/main\t[rejected] (fetch first)\nDone\n"
HOOK_LINE = "!\tHEAD:refs/heads/main\t[remote rejected] (pre-receive hook declined)\nDone\n"


def test_a_moved_branch_is_a_lost_race_and_a_declining_hook_a_refusal() -> None:
    assert push_outcome(Completed(1, REJECTED_LINE, "")) == (Push.REJECTED, "")
    stale = "!\tHEAD:refs/heads/main\t[rejected] (stale info)\n"
    assert push_outcome(Completed(1, stale, ""))[0] is Push.REJECTED
    # the server's git lost the ref to another push at the same moment: a race too
    locked = ("!\tHEAD:refs/heads/main\t[remote rejected] (cannot lock ref 'refs/heads/main': "
              "is at 1e9b but expected 28c4)\n")
    assert push_outcome(Completed(1, locked, ""))[0] is Push.REJECTED
    failed = "!\tHEAD:refs/heads/main\t[remote rejected] (failed to update ref)\n"
    assert push_outcome(Completed(1, failed, ""))[0] is Push.REJECTED
    said = "remote: push limit: 6 per minute, try later\n"
    assert push_outcome(Completed(1, HOOK_LINE, said)) == (
        Push.REFUSED, "push limit: 6 per minute, try later")
    assert push_outcome(Completed(1, HOOK_LINE, "")) == (Push.REFUSED, "pre-receive hook declined")


def test_a_forges_rate_limit_over_http_is_a_refusal_and_a_dropped_connection_is_not() -> None:
    limited = "error: RPC failed; HTTP 429 curl 22 The requested URL returned error: 429\n"
    assert push_outcome(Completed(128, "", limited))[0] is Push.REFUSED
    dropped = "fatal: the remote end hung up unexpectedly\n"
    assert push_outcome(Completed(128, "", dropped)) == (Push.TRANSPORT, "")
    assert push_outcome(Completed(0, "Done\n", "")) == (Push.OK, "")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with fleet_in(tmp_path / "fleet", 1) as made:
        yield made


def decline(fleet: Fleet, times: int) -> Path:
    """The remote's pre-receive hook declines the next `times` pushes to main (and logs each
    push as 'ok' or 'declined')."""
    hook = fleet.bare / "hooks" / "pre-receive"
    count, log = hook.with_name("declines-left"), hook.with_name("push.log")
    count.write_text(f"{times}\n")
    hook.write_text(f"""#!/bin/sh
left=$(cat "{count}")
if [ "$left" -gt 0 ]; then
  echo $((left - 1)) > "{count}"; echo declined >> "{log}"
  echo "push limit reached: try again later" >&2; exit 1
fi
echo ok >> "{log}"
""")
    hook.chmod(0o755)
    return log


def test_a_persons_command_on_a_refusing_remote_says_so_and_changes_nothing(fleet: Fleet) -> None:
    clone = fleet.clones[0]
    decline(fleet, 1)
    before = head(clone)
    added = fleet.aq(clone, "add", "--body", "echo hi", "--id", "j1")
    assert added.returncode == 1
    assert added.stderr.strip().splitlines() == [
        "aq: the remote 'origin' refused the push (push limit reached: try again later): "
        "nothing changed; try again later"], added.stderr
    assert head(clone) == before and not (clone / "queue/inbox/j1.md").exists()
    again = fleet.aq(clone, "add", "--body", "echo hi", "--id", "j1")  # the limit has passed
    assert again.returncode == 0, again.stderr


def limit(fleet: Fleet, seconds: int) -> Path:
    """The remote's pre-receive hook declines the first push, and every push in the `seconds`
    after it, as a forge's rate limit would (and logs each push as 'ok' or 'declined')."""
    hook = fleet.bare / "hooks" / "pre-receive"
    closed, log = hook.with_name("closed-until"), hook.with_name("push.log")
    hook.write_text(f"""#!/bin/sh
read old new ref
now=$(date +%s)
[ -e "{closed}" ] || echo $((now + {seconds})) > "{closed}"
if [ "$now" -lt "$(cat "{closed}")" ]; then
  echo "declined $ref" >> "{log}"; echo "push limit reached: try again later" >&2; exit 1
fi
echo "ok $ref" >> "{log}"
""")
    hook.chmod(0o755)
    return log


@pytest.mark.slow
def test_a_worker_holds_its_pushes_back_after_a_refusal_and_loses_no_result(fleet: Fleet) -> None:
    clone = fleet.clones[0]
    fleet.drop_jobs({"j1": ("echo one", {"verify": "true"}), "j2": ("echo two", {"verify": "true"})})
    log = limit(fleet, 3)
    worker = fleet.worker(clone, "w1", "--drain", lease="1m")
    assert fleet.finish(worker, 180) == 0, fleet.err(worker)
    assert {fleet.stage("j1"), fleet.stage("j2")} == {"testing"}
    pushes = [line.split()[0] for line in log.read_text().splitlines()
              if line.endswith(" refs/heads/main")]
    # the claim refused, then no push of the queue's branch until the limit passed (a lost race
    # is tried again at once, dozens of times within the window)
    assert pushes[0] == "declined" and set(pushes[1:]) == {"ok"}, pushes
    said = fleet.err(worker) + fleet.out(worker)
    assert said.count("refused the push (push limit reached: try again later)") == 1, said
    for job in ("j1", "j2"):
        assert [e["action"] for e in fleet.events(job, "finished")] == ["pass"]


def test_remote_push_reports_a_declining_hook(fleet: Fleet) -> None:
    clone = fleet.clones[0]
    decline(fleet, 1)
    (clone / "note.txt").write_text("x\n")
    git(clone, "add", "note.txt")
    git(clone, "commit", "-qm", "a note")
    remote = Remote.detect(clone, None)
    assert remote is not None
    assert remote.push() == (Push.REFUSED, "push limit reached: try again later")
    assert remote.push()[0] is Push.OK
    wait_for(lambda: git(fleet.bare, "rev-parse", "main").strip() == head(clone), 10, "the push")
