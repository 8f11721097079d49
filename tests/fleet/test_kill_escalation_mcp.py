"""Engine escalation and children spawned through `aq mcp`, each with a worker killed -9 in the
middle of an attempt: the attempt is taken back by a worker of another clone once its lease
expires, and what the re-run does is judged from the job's events on the remote. A take-back is
no step up the engine ladder; a child spawned again through MCP is the same child."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aq.core.events import parse_iso
from tests.helpers.fleet import Fleet, can_fake_hosts, fleet_in
from tests.helpers.git import git
from tests.helpers.queue import configure
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.slow

LADDER = ("e1", "e2", "e3")


@functools.cache
def own_hosts() -> bool:
    """Each worker on a hostname of its own, where the system allows it: then no worker can see
    that another's pid is gone, and only the lease running out lets a job be taken back."""
    return can_fake_hosts()


def host(name: str) -> str | None:
    return name if own_hosts() else None


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with fleet_in(tmp_path / "fleet", 2) as made:
        yield made


def hang_until(release: Path) -> str:
    """Shell that waits (at most a minute) for `release`: the attempt its worker is killed in
    outlives the worker (an engine has a session of its own), and the test ends it."""
    return f"n=0; while [ $n -lt 600 ] && [ ! -e {release} ]; do sleep 0.1; n=$((n+1)); done"


def ladder_engine(name: str, out: Path, release: Path) -> dict[str, object]:
    """An engine that notes its own name (per attempt, and in a ledger of every run), then runs
    the job's body. e2's first run touches `e2-running` and hangs: its worker is killed there."""
    hang = (f'if [ ! -e {out}/e2-running ]; then touch {out}/e2-running; '
            f'{hang_until(release)}; fi\n' if name == "e2" else "")
    script = (f'echo "$AQ_ATTEMPT $0 $AQ_WORKER_ID" >> {out}/ran\n'
              f'echo "$0" > {out}/engine-$AQ_ATTEMPT\n{hang}bash "$1"')
    return {"cmd": ["bash", "-c", script, name, "{prompt_file}"], "input": "body"}


def push_config(fleet: Fleet, **values: Any) -> None:
    """aq.yaml changed on the remote and in every clone (a worker reads it as its clone has it)."""
    configure(fleet.seed, **values)
    git(fleet.seed, "commit", "-qam", "engines for the test")
    git(fleet.seed, "push", "-q", "origin", "HEAD:main")
    for clone in fleet.clones:
        git(clone, "pull", "-q", "origin", "main")


def one_finish_per_claim(events: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(claim, finish) of each attempt, in order; fails if an attempt number is claimed twice, a
    lease token is reused, a claim does not end in exactly one `finished` event, or a result
    was kept aside as stale (no worker ran an attempt it did not hold)."""
    assert not [e for e in events if e["type"] == "stale_result"], events
    claims = [e for e in events if e["type"] == "claimed"]
    finishes = [e for e in events if e["type"] == "finished"]
    assert [c["attempt"] for c in claims] == list(range(1, len(claims) + 1)), claims
    assert len({c["token"] for c in claims}) == len(claims), claims
    pairs = []
    for claim in claims:
        ended = [f for f in finishes if f.get("token") == claim["token"]]
        assert len(ended) == 1, (claim, finishes)
        pairs.append((claim, ended[0]))
    assert len(finishes) == len(claims), finishes
    return pairs


def test_a_taken_back_attempt_reruns_on_its_own_engine_and_the_ladder_goes_on(
        fleet: Fleet) -> None:
    """e1 fails verify; e2's run is killed -9 with its worker; the other clone's worker takes the
    job back and runs e2 again (a take-back is no step), which fails verify; e3 passes. Every
    claim says the engine and why; no attempt is lost or run twice."""
    out, release = fleet.base / "out", fleet.base / "release"
    out.mkdir()
    push_config(fleet, engines={name: ladder_engine(name, out, release) for name in LADDER})
    fleet.drop_jobs({"climb": ("echo working", {
        "verify": f'grep -qx e3 {out}/engine-"$AQ_ATTEMPT"',  # only the top of the ladder passes
        "retry": {"escalate": list(LADDER), "backoff": "0s"}})})
    try:
        doomed = fleet.worker(fleet.clones[0], "w-doomed", lease="3s",
                              host=host("machine-a"))  # runs until killed
        wait_for(lambda: (out / "e2-running").exists() or doomed.poll() is not None, 120,
                 "the run of e2")
        assert doomed.poll() is None, fleet.out(doomed) + fleet.err(doomed)
        fleet.kill(doomed)
        doomed.wait(timeout=30)
        assert fleet.stage("climb") == "building"

        survivor = fleet.worker(fleet.clones[1], "w-survivor", "--drain", lease="3s",
                                host=host("machine-b"))
        assert fleet.finish(survivor, 240) == 0, fleet.err(survivor)
    finally:
        release.touch()

    assert "Traceback" not in fleet.err(survivor)
    assert fleet.stage("climb") == "testing"
    assert (out / "ran").read_text().splitlines() == [
        "1 e1 w-doomed", "2 e2 w-doomed", "3 e2 w-survivor", "4 e3 w-survivor"]
    pairs = one_finish_per_claim(fleet.events("climb"))
    assert [(c["by"], c["engine"], c["engine_why"]) for c, _ in pairs] == [
        ("w-doomed", "e1", "retry.escalate step 1 of 3, after 0 retries"),
        ("w-doomed", "e2", "retry.escalate step 2 of 3, after 1 retry"),
        ("w-survivor", "e2", "retry.escalate step 2 of 3, after 1 retry"),  # the take-back
        ("w-survivor", "e3", "retry.escalate step 3 of 3, after 2 retries"),
    ]
    assert [(f["outcome"], f["action"]) for _, f in pairs] == [
        ("verify_failed", "retry"), ("lease_expired", "reclaim"), ("verify_failed", "retry"),
        ("ok", "pass")]
    if own_hosts():  # taken back by the lease running out, not by a look at a pid
        assert "no heartbeat from w-doomed" in pairs[1][1]["why"], pairs[1][1]
    assert [f.get("engine") for _, f in pairs if f["action"] != "reclaim"] == ["e1", "e2", "e3"]

    fleet.pull_seed()
    shown = fleet.aq(fleet.seed, "show", "--json", "climb")
    assert shown.returncode == 0, shown.stderr
    attempts = json.loads(shown.stdout)["attempt_log"]
    assert [(a["number"], a["worker"], a["outcome"]) for a in attempts] == [
        (1, "w-doomed", "verify_failed"), (2, "w-doomed", "lease_expired"),
        (3, "w-survivor", "verify_failed"), (4, "w-survivor", "ok")]
    assert attempts[-1]["engine"] == "e3"
    checked = fleet.aq(fleet.seed, "fsck", "--history")
    assert checked.returncode == 0, checked.stdout + checked.stderr


# An agent inside the parent's attempt: it starts `aq mcp` (which inherits the attempt's
# AQ_JOB_ID and AQ_QUEUE), spawns the child written in a file through it, and notes the answer
# outside the clone.
SPAWNING_AGENT = """
import asyncio, json, os, sys
from pathlib import Path
from mcp import ClientSession, StdioServerParameters, stdio_client

out, child = Path(sys.argv[1]), Path(sys.argv[2]).read_text()

async def main():
    params = StdioServerParameters(command=sys.executable, args=["-m", "aq", "mcp"],
                                   env=dict(os.environ))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        result = await session.call_tool("spawn_child", {"body": child, "title": "kid"})
        said = result.content[0].text
        assert not result.is_error, said
    with open(out / "said", "a") as notes:
        notes.write(json.dumps({"attempt": int(os.environ["AQ_ATTEMPT"]), **json.loads(said)}) + "\\n")

asyncio.run(main())
"""


def test_a_child_spawned_through_mcp_by_a_killed_attempt_is_not_made_again_by_its_rerun(
        fleet: Fleet) -> None:
    """The parent's first attempt spawns its child through `aq mcp`, then its worker is killed
    -9. The other clone's worker takes the parent back; the re-run spawns the same child through
    MCP, is told it exists, and the parent waits. The child needs a worker of its own, started
    only then: one child, run once, and the parent's verify runs after it is settled."""
    out, release = fleet.base / "out", fleet.base / "release"
    out.mkdir()
    agent, child = fleet.base / "agent.py", fleet.base / "child.md"
    agent.write_text(SPAWNING_AGENT)
    child.write_text('---\ncapabilities: [kid-runner]\nverify: "true"\n---\n'
                     f'echo "$AQ_JOB_ID $AQ_WORKER_ID" >> {out}/kid-runs\n')
    body = (f"{sys.executable} {agent} {out} {child} || exit 1\n"
            f'if [ "$AQ_ATTEMPT" = 1 ]; then touch {out}/spawned; {hang_until(release)}; fi')
    fleet.drop_jobs({"parent": (body, {"verify": f"test -s {out}/kid-runs"})})
    try:
        doomed = fleet.worker(fleet.clones[0], "w-doomed", "--once", lease="3s",
                              host=host("machine-a"))
        wait_for(lambda: (out / "spawned").exists() or doomed.poll() is not None, 120,
                 "the first attempt's spawn through MCP")
        assert doomed.poll() is None, fleet.out(doomed) + fleet.err(doomed)
        fleet.kill(doomed)
        doomed.wait(timeout=30)
        (kid,) = fleet.children("parent")

        survivor = fleet.worker(fleet.clones[1], "w-survivor", lease="3s", host=host("machine-b"))
        wait_for(lambda: any(e.get("action") == "await" for e in fleet.events("parent", "finished"))
                 or survivor.poll() is not None, 120, "the re-run's wait for its child")
        assert survivor.poll() is None, fleet.out(survivor) + fleet.err(survivor)
        runner = fleet.worker(fleet.clones[0], "w-kids", "--drain", "--cap", "kid-runner",
                              lease="3s", host=host("machine-c"))
        assert fleet.finish(runner, 240) == 0, fleet.err(runner)
        wait_for(lambda: fleet.stage("parent") == "testing", 120, "the parent's verify")
    finally:
        release.touch()

    assert "Traceback" not in fleet.err(survivor) + fleet.err(runner)

    said = [json.loads(line) for line in (out / "said").read_text().splitlines()]
    assert [(s["attempt"], s["id"], s["parent"], s["created"]) for s in said] == [
        (1, kid, "parent", True), (2, kid, "parent", False)]
    assert fleet.children("parent") == {kid: ["testing"]}
    assert set(fleet.stages_at()) == {"parent", kid}
    assert (out / "kid-runs").read_text().splitlines() == [f"{kid} w-kids"]
    pairs = one_finish_per_claim(fleet.events("parent"))
    assert [(c["by"], f["action"]) for c, f in pairs[:2]] == [
        ("w-doomed", "reclaim"), ("w-survivor", "await")]
    assert pairs[1][1]["detail"].endswith(f"waits for 1 child job(s): {kid}")
    assert [f["action"] for _, f in pairs[2:]] == ["pass"]
    if own_hosts():  # taken back by the lease running out, not by a look at a pid
        assert "no heartbeat from w-doomed" in pairs[0][1]["why"], pairs[0][1]
    [(kid_claim, kid_end)] = one_finish_per_claim(fleet.events(kid))
    assert parse_iso(pairs[1][1]["ts"]) <= parse_iso(kid_claim["ts"])  # the parent waited for it
    assert parse_iso(kid_end["ts"]) <= parse_iso(pairs[2][0]["ts"])  # then its verify ran
