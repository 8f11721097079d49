"""The queue's git remote with real git: push as compare-and-swap, align, landed, heartbeats, leases, offline, fsck."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from aq.store.beats import trailer
from aq.store.clone import Clone
from aq.store.queue import Queue
from aq.store.replica import Delivery
from aq.store.sync import EMPTY_TREE, LeaseObserver, Push, Remote
from aq.store.tx import Tx
from tests.helpers.fleet import Fleet, fleet_in, ledger_body, ledger_rows, machine_ref
from tests.helpers.git import git, head
from tests.helpers.queue import write_job
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.slow

LONG_LEASE = "10m"  # for tests about something else than lease expiry


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with fleet_in(tmp_path / "fleet", 2) as made:
        yield made


def remote_of(root: Path) -> Remote:
    remote = Remote.detect(root, None)
    assert remote is not None
    return remote


def commit(root: Path, files: dict[str, str], message: str) -> str:
    """Write `files` (path -> text) in the clone and commit them with plain git; the new HEAD."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(root, "add", "--", *files)
    git(root, "commit", "-q", "-m", message)
    return head(root)


@contextmanager
def remote_away(fleet: Fleet) -> Iterator[None]:
    """The remote is unreachable for every clone (its folder renamed away) until the block ends."""
    away = fleet.bare.with_name("remote.away")
    fleet.bare.rename(away)
    try:
        yield
    finally:
        away.rename(fleet.bare)


def cut_off(root: Path) -> None:
    """This clone alone can no longer reach the remote: origin points at a path that does not exist."""
    git(root, "remote", "set-url", "origin", str(root.parent / "no-such-remote.git"))


def reconnect(fleet: Fleet, root: Path) -> None:
    git(root, "remote", "set-url", "origin", str(fleet.bare))


def arm_remote_fault(fleet: Fleet, when: str) -> None:
    """The remote's receive-pack is killed once, on the next push to main: before it takes the push
    ("before") or right after it updated the branch ("after"), so the pusher never hears back."""
    hooks = fleet.bare / "hooks"
    if when == "before":
        hook, state = hooks / "pre-receive", "true"
    else:
        hook, state = hooks / "reference-transaction", '[ "$1" = committed ]'
    hook.write_text(f'#!/bin/sh\nif {state} && grep " refs/heads/main$" >/dev/null && [ -e "$0.armed" ]; '
                    'then rm -f "$0.armed"; kill -9 $PPID; fi\nexit 0\n')
    hook.chmod(0o755)
    hook.with_name(hook.name + ".armed").touch()


def fault_fired(fleet: Fleet) -> bool:
    return not list((fleet.bare / "hooks").glob("*.armed"))


# --- push is compare-and-swap --------------------------------------------------------------------

def test_a_push_onto_a_remote_that_moved_is_rejected_and_nothing_is_merged(fleet: Fleet) -> None:
    """A clone pushing a commit made on a stale tip gets REJECTED; its HEAD stays its own commit and the remote keeps the winner's."""
    a, b = fleet.clones
    winner = commit(b, {"queue/inbox/from-b.md": "echo b\n"}, "b adds a job")
    assert remote_of(b).push()[0] is Push.OK
    mine = commit(a, {"queue/inbox/from-a.md": "echo a\n"}, "a adds a job")

    assert remote_of(a).push()[0] is Push.REJECTED
    assert head(a) == mine
    assert len(git(a, "rev-list", "--parents", "-n", "1", "HEAD").split()) == 2  # no merge commit
    assert not (a / "queue/inbox/from-b.md").exists()
    assert fleet.tip() == winner
    assert "from-a" not in git(fleet.bare, "log", "--name-only", "--format=", "main")


def test_align_fast_forwards_a_clone_that_is_only_behind(fleet: Fleet) -> None:
    """A clone with no commits of its own is fast-forwarded to the remote's tip, its untracked files left alone."""
    a, b = fleet.clones
    tip = commit(b, {"queue/inbox/from-b.md": "echo b\n"}, "b adds a job")
    assert remote_of(b).push()[0] is Push.OK
    (a / "scratch.txt").write_text("mine\n")
    remote = remote_of(a)

    assert remote.fetch()
    Clone(remote).align()
    assert head(a) == tip
    assert (a / "queue/inbox/from-b.md").read_text() == "echo b\n"
    assert (a / "scratch.txt").read_text() == "mine\n"


def test_align_after_a_refused_commit_resets_to_the_remote_and_keeps_what_is_not_the_queues(
        fleet: Fleet) -> None:
    """Aligning after a refused push drops the refused queue changes but keeps a job a person dropped in the inbox and every file outside queue/, aq.yaml, profiles/."""
    a, b = fleet.clones
    tip = commit(b, {"queue/inbox/from-b.md": "echo b\n"}, "b adds a job")
    assert remote_of(b).push()[0] is Push.OK
    yaml_at_tip = (b / "aq.yaml").read_text()
    commit(a, {"queue/inbox/refused.md": "echo refused\n", "aq.yaml": "poll: 1s\n"},
           "aq: a's commit the remote refuses")
    dropped = write_job(a, "dropped-by-hand", "echo dropped")
    os.utime(dropped, (1_700_000_000, 1_700_000_000))
    (a / ".gitattributes").write_text((a / ".gitattributes").read_text() + "*.bin binary\n")
    (a / "notes").mkdir()
    (a / "notes/todo.txt").write_text("untracked, outside the queue\n")
    remote = remote_of(a)
    assert remote.push()[0] is Push.REJECTED

    assert remote.fetch()
    Clone(remote).align()
    assert head(a) == tip
    assert not (a / "queue/inbox/refused.md").exists()
    assert (a / "aq.yaml").read_text() == yaml_at_tip
    assert (a / "queue/inbox/from-b.md").exists()
    assert dropped.read_text() == "echo dropped\n"
    assert dropped.stat().st_mtime == 1_700_000_000
    assert (a / ".gitattributes").read_text().endswith("*.bin binary\n")
    assert (a / "notes/todo.txt").exists()
    assert git(a, "status", "--porcelain", "--", "queue", "aq.yaml", "profiles").splitlines() == \
        ["?? queue/inbox/dropped-by-hand.md"]


def test_align_keeps_a_persons_unpushed_commit_on_a_branch(fleet: Fleet) -> None:
    """A commit the remote lacks that aq did not make (a person's, or an agent's that committed
    in the queue's clone) is never dropped by aligning to the remote: it is kept on a local
    branch aq-kept/<commit>, the clone goes on with the remote's tip, and the command that
    aligned says where the commit is."""
    a, b = fleet.clones
    tip = commit(b, {"queue/inbox/from-b.md": "echo b\n"}, "b adds a job")
    assert remote_of(b).push()[0] is Push.OK
    mine = commit(a, {"src/app.py": "print('not pushed yet')\n"}, "a person's work, not pushed yet")

    done = fleet.aq(a, "add", "--title", "t", "--engine", "shell", "--body", "echo x")
    assert done.returncode == 0, done.stderr
    assert f"aq-kept/{mine[:7]}" in done.stderr and "push or merge them" in done.stderr
    assert git(a, "rev-parse", f"aq-kept/{mine[:7]}").strip() == mine
    assert remote_of(a).is_ancestor(tip, head(a))
    assert not remote_of(a).is_ancestor(mine, head(a))


# --- a push whose answer is lost -----------------------------------------------------------------

def test_landed_is_unknown_while_the_remote_is_away_and_false_for_a_push_that_never_arrived(
        fleet: Fleet) -> None:
    """A push to an unreachable remote is TRANSPORT; landed() is None while it stays away and False once it answers."""
    a = fleet.clones[0]
    mine = commit(a, {"queue/inbox/lonely.md": "echo lonely\n"}, "a job")
    remote = remote_of(a)
    with remote_away(fleet):
        assert remote.push()[0] is Push.TRANSPORT
        assert remote.landed(mine) is None
    assert remote.landed(mine) is False
    assert remote.push()[0] is Push.OK
    assert remote.landed(mine) is True


def test_landed_finds_a_push_the_remote_took_before_it_died(fleet: Fleet) -> None:
    """The remote dies right after updating the branch: the pusher sees TRANSPORT, and landed() says it is there."""
    a = fleet.clones[0]
    mine = commit(a, {"queue/inbox/landed.md": "echo landed\n"}, "a job")
    arm_remote_fault(fleet, "after")
    remote = remote_of(a)
    assert remote.push()[0] is Push.TRANSPORT
    assert fault_fired(fleet)
    assert remote.landed(mine) is True
    assert fleet.tip() == mine


@pytest.mark.parametrize("when", ["before", "after"])
def test_an_add_whose_push_gets_no_answer_adds_the_job_exactly_once(fleet: Fleet, when: str) -> None:
    """`aq add` whose push the remote dies on (before or after taking it) checks what landed: exit 0 and one job on the remote."""
    a = fleet.clones[0]
    arm_remote_fault(fleet, when)
    added = fleet.aq(a, "add", "--id", "lost-answer", "--body", "echo hi")
    assert fault_fired(fleet)
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "lost-answer"
    assert fleet.stages_at() == {"lost-answer": ["inbox"]}
    assert len(fleet.events("lost-answer", "added")) == 1
    assert git(fleet.bare, "log", "--format=%s", "main").count("aq: add lost-answer") == 1


# --- heartbeats and leases -----------------------------------------------------------------------

def test_a_heartbeat_is_a_parentless_commit_on_the_workers_own_ref_and_never_on_main(fleet: Fleet) -> None:
    """heartbeat() force-pushes an empty-tree, parentless commit to refs/aq/workers/<id>; main does not move; observers read it back."""
    a, b = fleet.clones
    tip = fleet.tip()
    payload = {"worker": "w1", "seq": 1, "tokens": ["1.w1.abc123"], "wall": "1999-01-01T00:00:00Z"}
    assert remote_of(a).heartbeat("w1", payload)
    assert remote_of(a).heartbeat("w1", {**payload, "seq": 2})

    beat = git(fleet.bare, "rev-parse", "refs/aq/workers/w1").strip()
    assert git(fleet.bare, "rev-list", "--parents", "-n", "1", beat).split() == [beat]
    assert git(fleet.bare, "rev-parse", f"{beat}^{{tree}}").strip() == EMPTY_TREE
    assert fleet.tip() == tip
    observer = remote_of(b)
    assert observer.fetch()
    assert observer.observed_heartbeats() == {"w1": (beat, {**payload, "seq": 2})}


def test_a_running_worker_renews_its_lease_on_its_ref_without_adding_commits_to_main(fleet: Fleet) -> None:
    """A worker holding a job for several heartbeats moves only its machine's ref
    refs/aq/workers/<machine>, whose beat lists its lease; main gains just the claim."""
    go = fleet.base / "go"
    fleet.drop_jobs({"held": (f"while [ ! -e {go} ]; do sleep 0.1; done\n", {})})
    before = int(git(fleet.bare, "rev-list", "--count", "main"))
    worker = fleet.worker(fleet.clones[0], "beater", lease=LONG_LEASE)
    assert wait_until(lambda: fleet.stage("held") == "building", 30), fleet.err(worker)
    seen: set[str] = set()

    def beats() -> bool:
        done = git(fleet.bare, "rev-parse", "-q", "--verify", machine_ref(fleet.clones[0]),
                   check=False)
        seen.add(done.strip())
        return len(seen - {""}) >= 4

    assert wait_until(beats, 30, every=0.2)
    assert int(git(fleet.bare, "rev-list", "--count", "main")) == before + 1
    observer = remote_of(fleet.clones[1])
    assert observer.fetch()
    _commit, payload = observer.observed_heartbeats()[machine_ref(fleet.clones[0]).rsplit("/", 1)[1]]
    token = fleet.events("held", "claimed")[0]["token"]
    assert payload["tokens"] == payload["workers"]["beater"]["tokens"] == [token]
    go.touch()
    assert wait_until(lambda: fleet.stage("held") == "review", 30)
    fleet.kill(worker, signal.SIGTERM)
    assert fleet.finish(worker) == 0


def test_lease_silence_grows_on_the_observers_clock_and_resets_only_when_a_beat_lists_the_token(
        fleet: Fleet, tmp_path: Path) -> None:
    """LeaseObserver: silence is the observer's `now` minus when it saw the holder's ref change to list the token."""
    a, b = fleet.clones
    holder, observer_remote = remote_of(a), remote_of(b)
    observer = LeaseObserver(tmp_path / "leases.json")
    token, other = "1.w1.aaaaaa", "1.w2.bbbbbb"
    building = {token: "w1"}

    def beat(seq: int, tokens: list[str], now: float) -> tuple[dict[str, float], set[str]]:
        if seq:  # the holder's wall clock, an hour off, plays no part
            assert holder.heartbeat("w1", {"seq": seq, "tokens": tokens, "wall": "2000-01-01T00:00:00Z"})
        assert observer_remote.fetch()
        return observer.observe(observer_remote, now, building)

    assert beat(1, [token], 100.0) == ({token: 0.0}, set())  # first sight: not yet seen renewed
    assert beat(0, [], 102.5) == ({token: 2.5}, set())  # no change: silence grows
    assert beat(2, [token], 104.0) == ({token: 0.0}, {token})  # the ref changed and lists it
    assert beat(0, [], 106.0)[0] == {token: 2.0}
    assert beat(3, [], 107.0)[0] == {token: 3.0}  # a beat that no longer lists it renews nothing

    building = {token: "w1", other: "w2"}  # a lease whose holder never beat: counted from first sight
    assert beat(0, [], 110.0)[0] == {token: 6.0, other: 0.0}
    assert beat(0, [], 113.5)[0] == {token: 9.5, other: 3.5}
    seen = observer.workers(120.0)
    assert seen["w1"][0] == pytest.approx(13.0)
    assert seen["w1"][1]["seq"] == 3
    building = {}
    assert beat(0, [], 121.0) == ({}, set())  # leases no longer building are forgotten
    assert json.loads((tmp_path / "leases.json").read_text())["renewed"] == {}


def test_a_landed_commit_whose_trailer_names_a_lease_renews_it(fleet: Fleet, tmp_path: Path
                                                                  ) -> None:
    """A commit of the holder's machine that names its leases (aq.store.beats' trailer) renews
    them for an observer that sees it land, as a beat would; one that names other leases, or
    none, renews nothing; and the commits before the observer's first look count for nothing."""
    a, b = fleet.clones
    observer_remote = remote_of(b)
    observer = LeaseObserver(tmp_path / "leases.json")
    token, other = "1.w1.aaaaaa", "1.w2.bbbbbb"
    building = {token: "w1", other: "w2"}

    def land(message: str | None, now: float) -> dict[str, float]:
        if message is not None:
            commit(a, {f"queue/.events/x-{now:g}.jsonl": "{}\n"}, message)
            git(a, "push", "-q", "origin", "HEAD:main")
        assert observer_remote.fetch()
        return observer.observe(observer_remote, now, building)[0]

    named = f"aq: claim x by w1\n\n{trailer('box-a', [token])}"
    assert land(named, 100.0) == {token: 0.0, other: 0.0}  # before the first look: not counted
    assert land(None, 103.0) == {token: 3.0, other: 3.0}
    assert land(named, 104.0) == {token: 0.0, other: 4.0}
    assert land("aq: add y by a person", 106.0) == {token: 2.0, other: 6.0}
    assert land(f"aq: finish\n\n{trailer('box-a', [])}", 107.5) == {token: 3.5, other: 7.5}
    # a person's commit that quotes a trailer renews nothing
    assert land(f"Notes on leases\n\n{trailer('box-a', [other])}", 108.0) == {token: 4.0,
                                                                               other: 8.0}


def test_commits_renew_in_a_holders_count_only_once_every_machine_says_it_reads_them(
        fleet: Fleet, tmp_path: Path) -> None:
    """A machine whose beat (seen within the window) does not say it reads trailers (an older
    aq) keeps every holder beating as before; one long silent does not. One that reads them as
    renewals but not as signs of life keeps every machine beating once a TTL."""
    a, b = fleet.clones
    holder, observer_remote = remote_of(a), remote_of(b)
    observer = LeaseObserver(tmp_path / "leases.json")
    assert observer.fleet_reads(100.0, 30.0) == frozenset()  # before a first look: nothing

    def look(now: float) -> None:
        assert observer_remote.fetch()
        observer.observe(observer_remote, now, {})

    both = {"aq-leases", "aq-alive"}
    assert holder.heartbeat("new-box", {"seq": 1, "tokens": [], "reads": sorted(both)})
    look(100.0)
    assert observer.fleet_reads(101.0, 30.0) == both
    assert holder.heartbeat("old-box", {"seq": 1, "tokens": []})  # an aq before trailers
    look(105.0)
    assert observer.fleet_reads(106.0, 30.0) == frozenset()
    assert holder.heartbeat("mid-box", {"seq": 1, "tokens": [], "reads": ["aq-leases"]})
    look(110.0)
    assert observer.fleet_reads(111.0, 30.0) == frozenset()
    assert observer.fleet_reads(136.0, 30.0) == {"aq-leases"}  # old-box's beat: out of the window
    assert observer.fleet_reads(141.0, 30.0) == {*both, "aq-archive-ref"}  # none in the window


def test_a_machines_landed_commit_shows_its_workers_alive(fleet: Fleet, tmp_path: Path) -> None:
    """What `aq workers`, the offline alert and the push budget see of a machine: the later of
    its beat changing and one of its commits landing (its trailer, naming a lease or none), on
    the observer's clock while its watch is unbroken; and when the machine last committed, on
    its own clock, whatever the watch (a first look reads it from the tip's last commits). A
    person's commit, or another machine's, shows it nothing."""
    a, b = fleet.clones
    observer_remote = remote_of(b)
    observer = LeaseObserver(tmp_path / "leases.json")

    def look(now: float, gap: float = math.inf) -> None:
        assert observer_remote.fetch()
        observer.observe(observer_remote, now, {}, gap=gap)

    def land(message: str, now: float | None, gap: float = math.inf) -> None:
        commit(a, {f"queue/.events/x-{time.monotonic()}.jsonl": "{}\n"}, message)
        git(a, "push", "-q", "origin", "HEAD:main")
        if now is not None:
            look(now, gap)

    beat = {"machine": "box-a", "wall": "2026-01-05T00:00:00Z", "tokens": [],
            "workers": {"w1": {"pid": 1, "tokens": [], "capabilities": [], "retiring": False}}}
    assert remote_of(a).heartbeat("box-a", beat)
    land(f"aq: claim x by w1\n\n{trailer('box-a', ['1.w1.aaaaaa'])}", None)  # before any look
    look(100.0)
    assert observer.alive(101.0) == {}  # landed before the first look: not seen land
    age, said = observer.workers(110.0)["w1"]
    assert age == pytest.approx(10.0) and said["wall"] > "2026-12"  # its commit, not its beat
    assert observer.seen_changing() == set()  # appeared only: its age is on its own clock
    land(f"aq: finish x by w1\n\n{trailer('box-a', [])}", 150.0)
    assert observer.workers(155.0)["w1"][0] == pytest.approx(5.0)
    assert observer.seen_changing() == {"w1"}
    assert observer.alive(155.0) == {"box-a": pytest.approx(5.0)}
    land(f"A person's notes\n\n{trailer('box-a', [])}", 170.0)
    land(f"aq: claim y by w9\n\n{trailer('box-z', [])}", 171.0)  # a machine with no beat seen
    assert observer.workers(180.0)["w1"][0] == pytest.approx(30.0)
    assert observer.alive(180.0) == {"box-a": pytest.approx(30.0)}
    # looks further apart than the gap: what landed or beat meanwhile may be old, not seen now
    other = {**beat, "machine": "box-b", "workers": {"w2": beat["workers"]["w1"]}}
    assert remote_of(a).heartbeat("box-b", other)
    look(200.0)
    assert remote_of(a).heartbeat("box-b", {**other, "seq": 2})
    land(f"aq: claim z by w1\n\n{trailer('box-a', [])}", 400.0, gap=60.0)
    assert observer.alive(400.0) == {"box-a": pytest.approx(250.0)}
    assert "w2" not in observer.seen_changing()  # its age: by its own clock
    assert remote_of(a).heartbeat("box-b", {**other, "seq": 3})
    look(410.0, gap=60.0)
    assert "w2" in observer.seen_changing()


def test_lease_silence_restarts_after_a_fetch_failed_or_nobody_looked_for_longer_than_the_gap(
        fleet: Fleet) -> None:
    """A failed fetch (any process of the machine's) and a pause between looks longer than
    `gap` both restart every lease's silence from the next look: the holders may have been cut
    off too. An unbroken watch counts on."""
    a, b = fleet.clones
    holder, observer_remote = remote_of(a), remote_of(b)
    queue = Queue(b)
    observer = LeaseObserver(queue.state_dir / "leases.json")
    token = "1.w1.aaaaaa"
    assert holder.heartbeat("w1", {"seq": 1, "tokens": [token]})

    def look(now: float) -> float:
        with queue.lock():
            assert queue.fetch(observer_remote)
            return observer.observe(observer_remote, now, {token: "w1"}, gap=4.0)[0][token]

    assert look(100.0) == 0.0
    assert look(103.0) == 3.0
    with remote_away(fleet), queue.lock():
        assert not queue.fetch(observer_remote)  # noted for every observer of this clone
    assert look(117.0) == 0.0  # the first look after the outage: a full TTL from here
    assert look(120.5) == 3.5
    assert look(130.0) == 0.0  # nobody looked for 9.5 s, more than the gap
    assert look(132.0) == 2.0


# --- offline -------------------------------------------------------------------------------------

def test_an_offline_worker_claims_and_runs_while_the_remote_is_away_and_its_results_land_later(
        fleet: Fleet) -> None:
    """`aq run --offline` with the remote away claims and runs locally; when the remote returns the claim and result land."""
    ledger = fleet.base / "ledger"
    fleet.drop_jobs({"off-job": (ledger_body(ledger), {"verify": "true"})})
    a = fleet.clones[0]
    git(a, "pull", "-q")
    with remote_away(fleet):
        worker = fleet.worker(a, "roamer", "--offline", "--once", lease=LONG_LEASE)
        assert wait_until(lambda: (a / "queue/testing/off-job.md").exists(), 30), fleet.out(worker)
        assert ledger_rows(ledger) == [["off-job", "1", "roamer"]]
        assert worker.poll() is None  # it still owes the remote its work
    assert fleet.finish(worker, 60) == 0, fleet.err(worker)

    assert fleet.stage("off-job") == "testing"
    claims = fleet.events("off-job", "claimed")
    assert [(c["by"], c.get("offline")) for c in claims] == [("roamer", True)]
    finished = fleet.events("off-job", "finished")
    assert [(f["by"], f["to"], f["token"]) for f in finished] == [("roamer", "testing", claims[0]["token"])]
    assert ledger_rows(ledger) == [["off-job", "1", "roamer"]]


def test_a_job_claimed_offline_that_another_worker_took_meanwhile_is_reported_and_fenced(
        fleet: Fleet) -> None:
    """Offline and online workers both run one job: the online result stands; the offline one is an offline_conflict note and a stale_result."""
    ledger = fleet.base / "ledger"
    fleet.drop_jobs({"contested": (ledger_body(ledger), {"verify": "true"})})
    a, b = fleet.clones
    git(a, "pull", "-q")
    cut_off(a)
    offline = fleet.worker(a, "offline", "--offline", "--once", lease=LONG_LEASE)
    assert wait_until(lambda: (a / "queue/testing/contested.md").exists(), 30), fleet.out(offline)
    online = fleet.worker(b, "online", "--once", lease=LONG_LEASE)
    assert fleet.finish(online) == 0, fleet.err(online)
    assert fleet.stage("contested") == "testing"

    reconnect(fleet, a)
    assert fleet.finish(offline, 60) == 0, fleet.err(offline)
    assert "taken meanwhile" in fleet.out(offline)
    events = fleet.events("contested")
    claims = [e for e in events if e["type"] == "claimed"]
    assert [c["by"] for c in claims] == ["online"]
    assert [(e["by"], e["to"]) for e in events if e["type"] == "finished"] == [("online", "testing")]
    notes = [e for e in events if e["type"] == "note" and e["by"] == "offline"]
    assert len(notes) == 1 and notes[0]["why"].startswith("offline_conflict")
    stale = [e for e in events if e["type"] == "stale_result"]
    assert [(e["by"], e["token"]) for e in stale] == [("offline", notes[0]["token"])]
    assert fleet.stage("contested") == "testing"
    assert sorted(row[2] for row in ledger_rows(ledger)) == ["offline", "online"]


def test_without_offline_an_unreachable_remote_means_no_claim_until_it_answers(fleet: Fleet) -> None:
    """`aq run --drain` without --offline claims nothing while the remote cannot be reached, says so, and claims once it answers."""
    ledger = fleet.base / "ledger"
    fleet.drop_jobs({"waits": (ledger_body(ledger), {})})
    a = fleet.clones[0]
    git(a, "pull", "-q")
    before = head(a)
    cut_off(a)
    worker = fleet.worker(a, "grounded", "--drain", lease=LONG_LEASE)
    assert wait_until(lambda: "does not answer" in fleet.out(worker), 30), fleet.err(worker)
    assert ledger_rows(ledger) == []
    assert head(a) == before
    assert git(a, "status", "--porcelain", "--", "queue") == ""
    assert fleet.stage("waits") == "inbox"

    reconnect(fleet, a)
    assert fleet.finish(worker) == 0, fleet.err(worker)
    assert ledger_rows(ledger) == [["waits", "1", "grounded"]]
    assert fleet.stage("waits") == "review"


def test_once_with_the_remote_unreachable_says_so_and_exits_without_claiming(fleet: Fleet) -> None:
    """`aq run --once` does not wait for an unreachable remote: it says so, claims nothing and exits."""
    ledger = fleet.base / "ledger"
    fleet.drop_jobs({"later": (ledger_body(ledger), {})})
    a = fleet.clones[0]
    git(a, "pull", "-q")
    cut_off(a)
    worker = fleet.worker(a, "one-shot", "--once", lease=LONG_LEASE)
    assert fleet.finish(worker) == 0, fleet.err(worker)
    assert "does not answer" in fleet.out(worker)
    assert ledger_rows(ledger) == []
    reconnect(fleet, a)
    assert fleet.stage("later") == "inbox"


@pytest.mark.parametrize("command", [["add", "--body", "echo new", "--title", "New"], ["ship", "done-job"]])
def test_a_human_command_with_the_remote_unreachable_fails_in_one_line_and_changes_nothing(
        fleet: Fleet, command: list[str]) -> None:
    """`aq add` / `aq ship` when the remote does not answer: exit 1, one line on stderr, the clone as it was."""
    write_job(fleet.seed, "done-job", "echo done", stage="review")
    git(fleet.seed, "add", "queue/review")
    git(fleet.seed, "commit", "-q", "-m", "a job waiting for review")
    git(fleet.seed, "push", "-q", "origin", "HEAD:main")
    a = fleet.clones[0]
    git(a, "pull", "-q")
    cut_off(a)
    before = (head(a), git(a, "status", "--porcelain"), sorted(str(p) for p in (a / "queue").rglob("*")))

    done = fleet.aq(a, *command)
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "remote" in done.stderr and "Traceback" not in done.stderr
    assert (head(a), git(a, "status", "--porcelain"),
            sorted(str(p) for p in (a / "queue").rglob("*"))) == before
    assert fleet.stage("done-job") == "review"


# --- aq workers, aq fsck --history ---------------------------------------------------------------

def test_workers_json_lists_each_worker_with_the_jobs_it_holds(fleet: Fleet) -> None:
    """`aq workers --json` on a third clone shows a busy worker with its job and an idle one with none."""
    go = fleet.base / "go"
    fleet.drop_jobs({"long-one": (f"while [ ! -e {go} ]; do sleep 0.1; done\n", {})})
    a, b = fleet.clones
    busy = fleet.worker(a, "busy", lease=LONG_LEASE)
    assert wait_until(lambda: fleet.stage("long-one") == "building", 30), fleet.err(busy)
    idle = fleet.worker(b, "idle", lease=LONG_LEASE)
    assert wait_until(lambda: machine_ref(b) in git(fleet.bare, "for-each-ref"), 30)

    shown = fleet.aq(fleet.seed, "workers", "--json")
    assert shown.returncode == 0, shown.stderr
    rows = {row["worker"]: row for row in json.loads(shown.stdout)}
    assert set(rows) == {"busy", "idle"}
    assert rows["busy"]["jobs"] == ["long-one"]
    assert rows["idle"]["jobs"] == []
    assert rows["busy"]["host"] == socket.gethostname()
    go.touch()
    for proc in (busy, idle):
        fleet.kill(proc, signal.SIGTERM)
        assert fleet.finish(proc) == 0


def test_fsck_history_fails_on_a_commit_with_a_job_in_two_stages_and_passes_a_clean_history(
        fleet: Fleet) -> None:
    """`aq fsck --history` exits 0 on a fleet's history and 1 naming the commit where a job sat in two stages; HEAD alone is fine."""
    ledger = fleet.base / "ledger"
    fleet.drop_jobs({"ok-job": (ledger_body(ledger), {}), "twin": (ledger_body(ledger), {})})
    worker = fleet.worker(fleet.clones[0], "tidy", "--drain", lease=LONG_LEASE)
    assert fleet.finish(worker) == 0
    b = fleet.clones[1]
    git(b, "pull", "-q")
    clean = fleet.aq(b, "fsck", "--history")
    assert clean.returncode == 0, clean.stdout

    shutil.copy(b / "queue/review/twin.md", b / "queue/inbox/twin.md")
    git(b, "add", "queue/inbox/twin.md")
    git(b, "commit", "-q", "-m", "twin in two stages")
    bad = head(b)
    git(b, "rm", "-q", "queue/inbox/twin.md")
    git(b, "commit", "-q", "-m", "twin back in one stage")

    assert fleet.aq(b, "fsck").returncode == 0
    found = fleet.aq(b, "fsck", "--history")
    assert found.returncode == 1
    assert found.stdout.splitlines() == [f"commit {bad[:10]}: job twin is in inbox, review"]


# --- a worker killed while git held a lock -------------------------------------------------------

def test_a_stale_index_lock_left_by_a_killed_worker_does_not_stop_the_next_worker(fleet: Fleet) -> None:
    """An index.lock an hour old (its git was killed with its worker) is removed by the next worker, which then runs the job."""
    ledger = fleet.base / "ledger"
    fleet.drop_jobs({"after-crash": (ledger_body(ledger), {})})
    a = fleet.clones[0]
    git(a, "pull", "-q")
    lock = a / ".git/index.lock"
    lock.write_text("")
    an_hour_ago = time.time() - 3600
    os.utime(lock, (an_hour_ago, an_hour_ago))

    worker = fleet.worker(a, "next", "--once", lease=LONG_LEASE)
    assert fleet.finish(worker) == 0, fleet.err(worker)
    assert "index.lock" in fleet.out(worker)
    assert not lock.exists()
    assert ledger_rows(ledger) == [["after-crash", "1", "next"]]
    assert fleet.stage("after-crash") == "review"


def test_a_claim_whose_commit_fails_leaves_the_clone_as_it_was(fleet: Fleet) -> None:
    """A claim that cannot commit (git's index is locked) changes no file of the queue."""
    ledger = fleet.base / "ledger"
    fleet.drop_jobs({"untouched": (ledger_body(ledger), {})})
    a = fleet.clones[0]
    git(a, "pull", "-q")
    (a / ".git/index.lock").write_text("")  # fresh: as a worker killed a moment ago left it

    worker = fleet.worker(a, "blocked", "--once", lease=LONG_LEASE)
    assert fleet.finish(worker) == 0, fleet.err(worker)
    assert "could not claim" in fleet.out(worker)
    assert ledger_rows(ledger) == []
    assert git(a, "status", "--porcelain", "--", "queue") == ""


def test_a_lock_left_by_a_worker_killed_just_now_does_not_stop_the_next_worker_for_good(
        fleet: Fleet) -> None:
    """A worker started right after its predecessor died holding .git/index.lock gets the job done once the lock is stale."""
    ledger = fleet.base / "ledger"
    fleet.drop_jobs({"after-crash": (ledger_body(ledger), {})})
    a = fleet.clones[0]
    git(a, "pull", "-q")
    (a / ".git/index.lock").write_text("")

    worker = fleet.worker(a, "next")
    assert wait_until(lambda: fleet.stage("after-crash") == "review", 20), fleet.out(worker)
    assert [row[0] for row in ledger_rows(ledger)] == ["after-crash"]


def test_a_job_dropped_by_hand_survives_a_transaction_whose_push_lost_a_race(fleet: Fleet) -> None:
    """A job file a person dropped into a clone's inbox is not lost when a transaction in that clone has its push refused."""
    a, b = fleet.clones
    dropped = write_job(a, "by-hand", "echo by hand")
    queue = Queue(a)
    tries: list[int] = []

    def change(tx: Tx) -> None:
        if not tries:  # another machine pushes between this clone's fetch and its push
            commit(b, {"queue/inbox/from-b.md": "echo b\n"}, "b wins the race")
            assert remote_of(b).push()[0] is Push.OK
        tries.append(len(tries))
        tx.write(queue.qdir / "inbox" / "mine.md", "echo mine\n")

    queue.transact(change, "aq: add mine")
    assert tries == [0, 1]  # the first push was refused, the second landed
    assert {"from-b", "mine"} <= set(fleet.stages_at())
    assert dropped.exists() or "by-hand" in fleet.stages_at()


def test_a_halt_file_written_by_hand_in_a_clone_holds_its_worker_and_stays(fleet: Fleet) -> None:
    """A person writes queue/HALT in a clone: a worker there claims nothing, and the file is still there."""
    ledger = fleet.base / "ledger"
    a = fleet.clones[0]
    (a / "queue/HALT").write_text("maintenance, by hand\n")
    fleet.drop_jobs({"held-back": (ledger_body(ledger), {})})

    worker = fleet.worker(a, "careful", "--once", lease=LONG_LEASE)
    assert fleet.finish(worker) == 0, fleet.err(worker)
    assert ledger_rows(ledger) == []
    assert (a / "queue/HALT").read_text() == "maintenance, by hand\n"
    assert fleet.stage("held-back") == "inbox"


def test_ls_blocked_flags_a_job_no_worker_of_the_fleet_has_advertised_the_capabilities_for(
        fleet: Fleet) -> None:
    """`aq ls --blocked` names an inbox job that no worker's published capabilities can serve
    (kind "fleet", with what is missing), even when this machine could take it, and leaves a
    job some worker can serve alone."""
    a = fleet.clones[0]
    for job_id, caps in (("needs-gpu", ["gpu"]), ("plain", ["os:linux"])):
        write_job(fleet.seed, job_id, "echo hi", capabilities=caps)
    git(fleet.seed, "add", "queue/inbox")
    git(fleet.seed, "commit", "-q", "-m", "two jobs")
    git(fleet.seed, "push", "-q", "origin", "HEAD:main")
    remote = remote_of(a)
    assert remote.heartbeat("cpu-box", {"worker": "cpu-box", "capabilities": ["os:linux", "has:git"]})
    assert remote.fetch()
    git(a, "merge", "-q", "--ff-only", "origin/main")

    done = fleet.aq(a, "ls", "--blocked", "--json", env={"AQ_WORKER_CONFIG": ""})
    assert done.returncode == 0, done.stderr
    listed = {job["id"]: job["blocked"] for job in json.loads(done.stdout)}
    assert listed["needs-gpu"]["kind"] == "fleet", listed
    assert "has advertised gpu" in listed["needs-gpu"]["reason"]
    assert "plain" not in listed


def aqs_git_in(root: Path, doing: str = "") -> list[tuple[int, int]]:
    """(pid, parent pid) of each git command aq started that runs in `root` now (from /proc);
    with `doing` ("push"...), of those whose command line has that word."""
    from aq.infra.gitops import GIT

    mark = b"\0".join(part.encode() for part in GIT) + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        try:  # a process may end between any two of these reads
            if not entry.name.isdigit():
                continue
            cmdline = (entry / "cmdline").read_bytes()
            if (cmdline.startswith(mark) and doing.encode() in cmdline
                    and os.readlink(entry / "cwd") == str(root.resolve())):
                found.append((int(entry.name),
                              int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="finding orphans needs /proc")
def test_a_git_push_orphaned_by_a_killed_worker_is_stopped_by_the_next_one(fleet: Fleet) -> None:
    """A worker killed with kill -9 while its push hangs leaves that git running; the next
    worker on the clone kills it (and only aq's own orphaned git) before cleaning locks."""
    from aq.infra.gitops import kill_orphaned_git

    a = fleet.clones[0]
    write_job(fleet.seed, "one", "echo one")
    git(fleet.seed, "add", "queue/inbox")
    git(fleet.seed, "commit", "-q", "-m", "one job")
    git(fleet.seed, "push", "-q", "origin", "HEAD:main")
    hook = fleet.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\nsleep 120\n")
    hook.chmod(0o755)
    worker = fleet.worker(a, "doomed", "--once")
    assert wait_until(lambda: bool(aqs_git_in(a, "push")), 60), "the worker never pushed"
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)
    assert wait_until(lambda: any(parent == 1 for _, parent in aqs_git_in(a)), 10), aqs_git_in(a)
    bystander = subprocess.Popen(["sleep", "60"], cwd=a, start_new_session=True)
    try:
        # aq's git there (the orphaned push, and any git it started, orphaned as it goes or
        # by then); one may end by itself between the two looks
        ours = {pid for pid, _parent in aqs_git_in(a)}
        killed = kill_orphaned_git(a)
        assert killed and set(killed) <= ours, (killed, ours)
        assert wait_until(lambda: not aqs_git_in(a), 10), aqs_git_in(a)
        assert bystander.poll() is None, "a process that is not aq's git was killed"
    finally:
        bystander.kill()
        hook.unlink()


def test_work_whose_push_lost_a_race_stays_unpushed_even_if_the_remote_then_goes_away(
        fleet: Fleet) -> None:
    """A transaction whose push is refused and whose next fetch then fails does not count its
    work as done because the refused commit is still in the clone: the work stays unpushed, and
    it reaches the remote when the remote answers again."""
    a, b = fleet.clones
    queue = Queue(a)
    target = queue.qdir / "inbox" / "mine.md"
    tries: list[int] = []

    def change(tx: Tx) -> str:
        if not tries:  # another machine wins the race; then this clone loses the remote
            commit(b, {"queue/inbox/from-b.md": "echo b\n"}, "b wins the race")
            assert remote_of(b).push()[0] is Push.OK
            cut_off(a)
            git(a, "remote", "set-url", "--push", "origin", str(fleet.bare))  # this push still goes
        tries.append(len(tries))
        if target.exists() and target.read_text() == "echo mine\n":
            return "already there"  # idempotent, as a worker's record of a result is
        tx.write(target, "echo mine\n")
        return "written"

    synced = queue.transact_synced(change, "aq: add mine", replay=lambda _result: change)
    assert synced.delivery is Delivery.UNREACHABLE and not synced.confirmed
    assert synced.unpushed == queue.unpushed == 1, \
        "the work is only in a commit the remote refused, yet nothing is unpushed"

    git(a, "remote", "set-url", "--push", "origin", str(fleet.bare))
    reconnect(fleet, a)
    flushed = queue.transact_synced(lambda tx: None, "aq: flush", replay=lambda _result: None)
    assert flushed.delivery is Delivery.LANDED and flushed.unpushed == 0
    assert not queue.unpushed
    git(fleet.seed, "fetch", "-q", "origin")
    assert "queue/inbox/mine.md" in git(fleet.seed, "ls-tree", "-r", "--name-only", "origin/main")


def test_views_of_the_queue_commit_nothing_so_a_dropped_job_stays_for_the_worker(
        fleet: Fleet) -> None:
    """`aq board --once`, `aq workers` and `aq events` on a clone with a job dropped by hand
    only fetch: they commit nothing (which a worker's next align would drop with the file),
    and the next `aq run` adopts the job and sends it to the remote."""
    a = fleet.clones[0]
    head_before = head(a)
    write_job(a, "by-hand", "echo by hand", engine="shell")
    for view in (("board", "--once"), ("workers",), ("events",)):
        done = fleet.aq(a, *view)
        assert done.returncode == 0, (view, done.stderr)
    assert head(a) == head_before
    assert git(a, "status", "--porcelain", "--", "queue").split() == ["??", "queue/inbox/by-hand.md"]
    assert fleet.aq(a, "run", "--once").returncode == 0
    git(fleet.seed, "fetch", "-q", "origin")
    assert "by-hand" in git(fleet.seed, "log", "--format=%s", "origin/main")


def test_an_agent_that_commits_in_the_queues_clone_does_not_wedge_the_worker(fleet: Fleet) -> None:
    """A job run in the queue's own clone (the default cwd) whose agent makes a commit: the
    worker records the result and goes on, and the agent's commit is kept on an aq-kept
    branch instead of reaching the queue's branch."""
    body = ("echo work > agent.txt && git add agent.txt && "
            "git -c user.name=agent -c user.email=agent@example.com commit -q -m 'the agent'")
    fleet.drop_jobs({"commits": (body, {"engine": "shell"})})
    a = fleet.clones[0]
    git(a, "pull", "-q")
    done = fleet.aq(a, "run", "--once")
    assert done.returncode == 0, done.stdout + done.stderr
    assert fleet.stage("commits") == "review"
    kept = git(a, "branch", "--list", "aq-kept/*").split()
    assert kept, "the agent's commit was dropped"
    assert "agent.txt" in git(a, "show", "--name-only", "--format=", kept[-1])
    git(fleet.seed, "fetch", "-q", "origin")
    assert "agent.txt" not in git(fleet.seed, "ls-tree", "-r", "--name-only", "origin/main")
