"""One heartbeat per machine (aq.store.beats), driven tick by tick with a clock the test holds:
the beat carries every fresh worker's leases, is pushed only when due, leaves out a worker that
is gone or stopped ticking, and says a worker's stop at once."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from aq.store.beats import MachineBeat, Me, Timing, trailer, trailers, worker_beats

TIMING = Timing(interval=50.0, tick=5.0, idle=100.0)  # a lease TTL of 100s
PID = os.getpid()  # a live process the workers can claim to be


class Remote:
    """Takes beats (or refuses them while `down`), keeping each payload pushed."""

    def __init__(self) -> None:
        self.beats: list[dict[str, Any]] = []
        self.down = False

    def __call__(self, payload: dict[str, Any]) -> bool:
        if self.down:
            return False
        self.beats.append(payload)
        return True


def me(worker: str, *tokens: str, pid: int = PID, retiring: bool = False) -> Me:
    return Me(worker, pid, tokens, ("os:linux",), retiring)


def test_the_workers_of_a_machine_share_one_beat_pushed_twice_a_ttl(tmp_path: Path) -> None:
    beat, remote = MachineBeat(tmp_path, "box-1", "boot"), Remote()
    for second in range(0, 200, 5):  # two workers tick every 5s for two TTLs
        beat.tick(me("w1", "t1"), float(second), TIMING, remote, "wall")
        beat.tick(me("w2", "t2", "t3"), float(second) + 0.5, TIMING, remote, "wall")
    assert len(remote.beats) == 4  # at 0 (the first), 50, 100, 150: not one per worker
    last = remote.beats[-1]
    assert last["tokens"] == ["t1", "t2", "t3"] and last["machine"] == "box-1"
    assert sorted(last["workers"]) == ["w1", "w2"]
    assert [b["seq"] for b in remote.beats] == [1, 2, 3, 4]


def test_a_machine_holding_no_lease_beats_once_a_ttl_and_when_its_workers_change(
        tmp_path: Path) -> None:
    beat, remote = MachineBeat(tmp_path, "box-1", "boot"), Remote()
    for second in range(0, 300, 5):
        beat.tick(me("w1"), float(second), TIMING, remote, "wall")
    assert len(remote.beats) == 3  # 0, 100, 200
    beat.tick(me("w2"), 301.0, TIMING, remote, "wall")  # a worker started: said at once
    assert sorted(remote.beats[-1]["workers"]) == ["w1", "w2"]


def test_a_worker_that_is_gone_or_stopped_ticking_is_left_out(tmp_path: Path) -> None:
    beat, remote = MachineBeat(tmp_path, "box-1", "boot"), Remote()
    gone = subprocess.Popen(["true"])
    gone.wait()
    beat.tick(me("dead", "t-dead", pid=gone.pid), 0.0, TIMING, remote, "wall")
    beat.tick(me("paused", "t-paused"), 0.0, TIMING, remote, "wall")
    beat.tick(me("live", "t-live"), 1.0, TIMING, remote, "wall", force=True)
    assert remote.beats[-1]["tokens"] == ["t-live", "t-paused"]  # the dead one's lease goes
    for second in range(5, 60, 5):  # `paused` ticks no more: after three ticks it drops out
        beat.tick(me("live", "t-live"), float(second), TIMING, remote, "wall")
    assert remote.beats[-1]["tokens"] == ["t-live"]


def test_a_failed_beat_is_tried_again_a_tick_later_and_only_a_landed_one_renews(
        tmp_path: Path) -> None:
    beat, remote = MachineBeat(tmp_path, "box-1", "boot"), Remote()
    first = beat.tick(me("w1", "t1"), 0.0, TIMING, remote, "wall")
    assert (first.pushed, first.landed, first.landed_at, dict(first.renewals)) == (
        True, True, 0.0, {"t1": 0.0})
    remote.down = True
    failed = beat.tick(me("w1", "t1"), 50.0, TIMING, remote, "wall")
    assert failed.pushed and not failed.landed and failed.landed_at == 0.0
    assert not beat.tick(me("w1", "t1"), 52.0, TIMING, remote, "wall").pushed  # within a tick
    remote.down = False
    again = beat.tick(me("w1", "t1"), 55.0, TIMING, remote, "wall")
    assert again.landed and again.landed_at == 55.0


def test_a_stopping_worker_says_so_at_once_and_is_then_forgotten(tmp_path: Path) -> None:
    beat, remote = MachineBeat(tmp_path, "box-1", "boot"), Remote()
    beat.tick(me("w1", "t1"), 0.0, TIMING, remote, "wall")
    beat.tick(me("w2"), 1.0, TIMING, remote, "wall", force=True)
    beat.tick(me("w2", retiring=True), 2.0, TIMING, remote, "wall", force=True)
    assert remote.beats[-1]["workers"]["w2"]["retiring"] is True
    assert beat.tick(me("w1", "t1"), 55.0, TIMING, remote, "wall").pushed
    assert sorted(remote.beats[-1]["workers"]) == ["w1"]


def test_the_last_worker_of_a_machine_to_stop_says_so_at_once(tmp_path: Path) -> None:
    beat, remote = MachineBeat(tmp_path, "box-1", "boot"), Remote()
    beat.tick(me("w1"), 0.0, TIMING, remote, "wall")
    beat.tick(me("w2"), 0.5, TIMING, remote, "wall")
    assert not beat.tick(me("w2", retiring=True), 1.0, TIMING, remote, "wall").pushed  # w1 stays
    assert beat.tick(me("w1", retiring=True), 12.0, TIMING, remote, "wall").pushed
    assert remote.beats[-1]["workers"]["w1"]["retiring"] is True


def test_another_boot_starts_afresh(tmp_path: Path) -> None:
    remote = Remote()
    MachineBeat(tmp_path, "box-1", "boot-1").tick(me("w1", "t1"), 500.0, TIMING, remote, "wall")
    after = MachineBeat(tmp_path, "box-1", "boot-2").tick(me("w1", "t1"), 3.0, TIMING, remote,
                                                         "wall")
    assert after.landed and after.landed_at == 3.0  # not "500s ago, in the future"


def test_a_machines_beat_speaks_for_each_of_its_workers_and_an_old_beat_for_one() -> None:
    machine = {"machine": "box-1", "host": "box", "wall": "w", "tokens": ["t1"],
               "workers": {"w1": {"pid": 1, "tokens": ["t1"], "capabilities": ["a"],
                                  "retiring": False}}}
    assert worker_beats("box-1", machine) == {"w1": {
        "pid": 1, "tokens": ["t1"], "capabilities": ["a"], "retiring": False, "worker": "w1",
        "host": "box", "wall": "w", "machine": "box-1"}}
    old = {"worker": "w9", "tokens": ["t9"], "host": "h"}
    assert worker_beats("w9", old) == {"w9": old}


def test_a_machine_whose_commits_keep_landing_beats_once_a_ttl(tmp_path: Path) -> None:
    """A landed commit that named the machine's leases renews them: while one lands every 20s
    the beat is due only once a TTL, as a machine's holding none (to be seen); once they stop,
    it comes an interval after the last."""
    beat, remote = MachineBeat(tmp_path, "box-1", "boot"), Remote()
    beat.tick(me("w1", "t1"), 0.0, TIMING, remote, "wall", commits=True)  # the first beat
    assert beat.leases(1.0, TIMING) == {"t1"}
    for second in range(5, 200, 5):
        if second % 20 == 0 and second <= 120:  # a claim or result of the machine lands
            beat.renewed(beat.leases(float(second), TIMING), float(second))
        beat.tick(me("w1", "t1"), float(second), TIMING, remote, "wall", commits=True)
    # at 0; at 100, a TTL on, though commits land (the last at 120); then at 170, an interval
    # after the last commit (without commits: at 0, 50, 100 and 150)
    assert len(remote.beats) == 3, [b["seq"] for b in remote.beats]
    tick = beat.tick(me("w1", "t1"), 200.0, TIMING, remote, "wall", commits=True)
    assert tick.renewed(["t1"], commits=True) == 170.0


def test_a_machine_whose_commits_keep_landing_need_not_beat_at_all(tmp_path: Path) -> None:
    """Where every machine counts a commit as a sign of life too (`alive`), a machine whose
    commits keep landing does not beat for the TTL; once they stop it beats an interval after
    the last. A worker starting meanwhile is said an interval after the last beat."""
    beat, remote = MachineBeat(tmp_path, "box-1", "boot"), Remote()
    beat.tick(me("w1", "t1"), 0.0, TIMING, remote, "wall", commits=True, alive=True)
    for second in range(5, 400, 5):
        if second % 20 == 0 and second <= 320:  # a claim or result of the machine lands
            beat.renewed(beat.leases(float(second), TIMING), float(second))
        beat.tick(me("w1", "t1"), float(second), TIMING, remote, "wall", commits=True, alive=True)
        if second == 200:  # a second worker starts: said at 50 after the last beat (at 0)
            beat.tick(me("w2"), 200.5, TIMING, remote, "wall", commits=True, alive=True)
        if second > 200:
            beat.tick(me("w2"), second + 0.5, TIMING, remote, "wall", commits=True, alive=True)
    # at 0; at 200.5, to say w2; at 370, an interval after the last commit (at 320)
    assert [b["seq"] for b in remote.beats] == [1, 2, 3]
    assert sorted(remote.beats[1]["workers"]) == ["w1", "w2"]
    # a machine holding no lease is seen by its commits alike: its beat waits a TTL from the last
    idle, quiet = MachineBeat(tmp_path / "idle", "box-2", "boot"), Remote()
    for second in range(0, 300, 5):
        if second in (60, 140):
            idle.renewed(frozenset(), float(second))
        idle.tick(me("w3"), float(second), TIMING, quiet, "wall", commits=True, alive=True)
    assert len(quiet.beats) == 2  # at 0 and 240 (without `alive`: at 0, 100 and 200)


def test_a_commit_renews_only_the_leases_it_named(tmp_path: Path) -> None:
    """A lease the commit did not name (taken after it was made) is renewed by a beat, an
    interval after the machine first noted it, whatever commits landed."""
    beat, remote = MachineBeat(tmp_path, "box-1", "boot"), Remote()
    for second in range(0, 115, 5):
        if second == 90:
            beat.renewed(frozenset({"t1"}), 90.0)  # made before w2 took t2
        beat.tick(me("w1", "t1"), float(second), TIMING, remote, "wall", commits=True)
        held = ("t2",) if second >= 60 else ()  # noted at 61
        tick = beat.tick(me("w2", *held), second + 1.0, TIMING, remote, "wall", commits=True)
        if second == 105:
            assert (len(remote.beats), tick.renewed(["t1"], commits=True),
                    tick.renewed(["t2"], commits=True)) == (2, 90.0, None)  # at 0 and 50
    assert len(remote.beats) == 3 and remote.beats[-1]["tokens"] == ["t1", "t2"]  # at 111


def test_while_a_machine_of_the_fleet_reads_no_trailers_commits_spare_no_beat(
        tmp_path: Path) -> None:
    """An older aq takes a lease back that only commits renewed: until every machine reads
    trailers, the beat comes every interval, and the holder counts no commit's renewal."""
    beat, remote = MachineBeat(tmp_path, "box-1", "boot"), Remote()
    beat.tick(me("w1", "t1"), 0.0, TIMING, remote, "wall")
    for second in range(5, 200, 5):
        if second % 20 == 0:
            beat.renewed(frozenset({"t1"}), float(second))
        tick = beat.tick(me("w1", "t1"), float(second), TIMING, remote, "wall")
    assert len(remote.beats) == 4  # at 0, 50, 100 and 150, as with no commit at all
    assert tick.renewed(["t1"], commits=False) == 150.0
    assert tick.renewed(["t1"], commits=True) == 180.0
    assert all(b["reads"] == ["aq-leases", "aq-alive", "aq-archive-ref"]
               for b in remote.beats)  # each says what it reads


def test_the_leases_a_commit_names_are_those_of_live_fresh_workers(tmp_path: Path) -> None:
    beat, remote = MachineBeat(tmp_path, "box-1", "boot"), Remote()
    gone = subprocess.Popen(["true"])
    gone.wait()
    beat.tick(me("w1", "t1"), 0.0, TIMING, remote, "wall")
    beat.tick(me("w2", "t2", pid=gone.pid), 0.0, TIMING, remote, "wall")  # killed since
    beat.tick(me("w3", "t3"), 1.0, TIMING, remote, "wall")
    assert beat.leases(10.0, TIMING) == {"t1", "t3"}
    assert beat.leases(16.0, TIMING) == {"t3"}  # w1 silent for three ticks: left out
    # a file another aq wrote, or a torn one: what cannot be read names nothing, and fails nothing
    beat.path.write_text('{"boot": "boot", "workers": {"a": 3, "b": {"pid": 1, "alive": "x"}}}')
    assert beat.leases(10.0, TIMING) == frozenset()


def test_a_trailer_names_the_machine_and_its_leases() -> None:
    line = trailer("box-1", {"2.w.bb", "1.w.aa"})
    assert line == "Aq-Leases: box-1 1.w.aa 2.w.bb"
    message = f"aq: claim job by w1\n\n{line}\n\naq: finish other\n\n{trailer('box-2', ['3.x.cc'])}"
    assert trailers(message) == [("box-1", ["1.w.aa", "2.w.bb"]), ("box-2", ["3.x.cc"])]
    assert trailers("aq: claim job by w1\n") == []
    assert trailers(f"aq: finish job\n\n{trailer('box-3', [])}") == [("box-3", [])]  # alive
    assert trailers(f"Fix the docs\n\n{line}\n") == []  # a person's commit quoting one
