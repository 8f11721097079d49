"""The push budget kept by pacing (aq.store.pacer), with a clock the test holds: a machine's
share of the budget, a push that waits for room in it, heartbeats that never wait but count,
the machines that share it, and the counts `aq stats` adds up."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aq.core.events import iso
from aq.errors import ConfigError
from aq.store.config import load_config
from aq.store.pacer import Pacer, PushBudget
from tests.helpers.queue import configure

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


SIX_A_10S = PushBudget(6, 10.0)


def pacer(tmp_path: Path, clock: Clock, budget: PushBudget | None = SIX_A_10S,
          ttl: float = 30.0) -> Pacer:
    return Pacer(tmp_path, budget, boot="b", machine="me-1", lease_ttl=ttl, monotonic=clock,
                 sleep=clock.sleep, utc=lambda: NOW)


def test_a_machines_share_is_the_budget_over_the_machines_less_its_heartbeats(
        tmp_path: Path) -> None:
    clock = Clock()
    assert pacer(tmp_path, clock).share(1) == 5  # a beat every 15s: one in any 10s
    assert pacer(tmp_path, clock).share(2) == 2
    assert pacer(tmp_path, clock).share(9) == 1  # never none: a budget too small still moves
    assert pacer(tmp_path, clock, PushBudget(6, 60.0), ttl=600.0).share(1) == 5


def push(paced: Pacer, clock: Clock, machines: int = 1, takes: float = 0.0) -> float:
    """One paced push that takes `takes` seconds on the way: when it started."""
    stamp = paced.wait_turn(machines)
    started = clock.now
    clock.now += takes
    paced.pushed(stamp)
    return started


def test_a_push_waits_for_room_in_the_window_and_a_heartbeat_never_waits(tmp_path: Path) -> None:
    clock = Clock()
    paced = pacer(tmp_path, clock)
    push(paced, clock)
    clock.now = 106.0
    push(paced, clock)
    clock.now = 112.0  # joined a window ago: alone, its share is 5 (a beat's room kept)
    for _ in range(4):
        push(paced, clock)
    assert clock.slept == []
    paced.pushed(paced.count("heartbeats", in_window=True))  # no wait, but it takes a place
    assert push(paced, clock) >= 106.0 + 10.0 + 1.0  # the push at 106 left the window (+ margin)
    assert pacer(tmp_path, clock, None).wait_turn(1) is None  # no budget: no pacing


def test_a_slow_push_holds_its_place_until_it_ends(tmp_path: Path) -> None:
    clock = Clock()
    paced = pacer(tmp_path, clock, PushBudget(1, 10.0))
    push(paced, clock, takes=7.0)  # the remote may have counted it as late as 107
    assert push(paced, clock) >= 107.0 + 10.0


def test_a_push_on_the_way_counts_as_now_until_it_ends(tmp_path: Path) -> None:
    clock = Clock()
    paced = pacer(tmp_path, clock, PushBudget(1, 10.0))
    flying = paced.wait_turn(1)
    clock.now += 30  # long past the window, and still on the way: a sibling must wait for it
    sibling = pacer(tmp_path, clock, PushBudget(1, 10.0))
    sibling.sleep = lambda seconds: (clock.sleep(seconds), paced.pushed(flying))[0]
    assert push(sibling, clock) >= 130.0 + 10.0  # after the window that follows its end
    assert clock.slept != []


def test_a_heartbeat_that_renews_no_lease_goes_only_if_there_is_room(tmp_path: Path) -> None:
    clock = Clock()
    paced = pacer(tmp_path, clock, PushBudget(2, 10.0))
    assert paced.beat_turn(1, renews=False).go  # an idle machine's first beat: room
    push(paced, clock)
    assert not paced.beat_turn(1, renews=False).go  # the window is full: wait a tick
    assert paced.beat_turn(1, renews=True).go  # a lease's renewal never waits
    assert paced.counts()["heartbeats"] == 2
    assert pacer(tmp_path, clock, None).beat_turn(1, renews=False).go  # no budget


def test_a_place_a_sibling_took_a_moment_later_is_never_dropped(tmp_path: Path) -> None:
    """Two processes of one machine: one whose clock reading is a hair behind the stamp its
    sibling just wrote (it read the clock before the lock was its) keeps that place."""
    behind, ahead = Clock(), Clock()
    ahead.now += 0.01
    late = pacer(tmp_path, behind, PushBudget(1, 10.0))
    early = pacer(tmp_path, ahead, PushBudget(1, 10.0))
    taken = early.wait_turn(1)  # a push on its way, stamped 100.01
    late.pushed(None)  # the lagging process writes the window back (nothing of its own)
    late.count("heartbeats", in_window=True)
    early.pushed(taken)
    data = json.loads((tmp_path / "pushes.json").read_text())
    assert [entry[1] for entry in data["window"]] == ["push", "beat"]  # the push is still there


def test_a_goodbye_beat_waits_a_little_for_room(tmp_path: Path) -> None:
    clock = Clock()
    paced = pacer(tmp_path, clock, PushBudget(1, 2.0))
    push(paced, clock)
    assert not paced.beat_turn(1, renews=False).go  # an idle beat: no room, no wait
    assert paced.beat_turn(1, renews=False, wait=4.0).go  # a goodbye: room within 3 s
    assert 0 < sum(clock.slept) <= 4.0


def test_a_machine_joining_counts_one_machine_more_for_a_window(tmp_path: Path) -> None:
    clock = Clock()
    paced = pacer(tmp_path, clock)  # 6 in 10s, a beat every 15s: alone its share is 5
    for _ in range(3):  # joining: as if two machines, part 3, less a beat's room: 2
        push(paced, clock)
    assert clock.slept != [] and clock.now >= 100.0 + 10.0 + 1.0


def test_every_push_is_counted_since_the_clone_began(tmp_path: Path) -> None:
    clock = Clock()
    paced = pacer(tmp_path, clock, None)
    for kind in ("pushes", "pushes", "rejected", "heartbeats"):
        paced.count(kind)
    assert paced.counts() == {"pushes": 2, "rejected": 1, "refused": 0, "heartbeats": 1,
                              "since": iso(NOW)}
    again = Pacer(tmp_path, None, boot="after-a-reboot", machine="me-1", lease_ttl=30.0,
                  monotonic=clock, utc=lambda: NOW + timedelta(days=1))
    again.count("pushes")
    assert again.counts()["pushes"] == 3 and again.counts()["since"] == iso(NOW)


def test_the_machines_sharing_the_budget_are_those_seen_beating_or_committing_lately(tmp_path: Path) -> None:
    paced = pacer(tmp_path, Clock())

    def beat(machine: str, age: float, retiring: bool = False) -> dict[str, object]:
        return {"machine": machine, "wall": iso(NOW - timedelta(seconds=age)),
                "workers": {"w": {"retiring": retiring}}}

    beats = [beat("me-1", 0), beat("a", 10), beat("b", 80), beat("gone", 200),
             beat("stopped", 1, retiring=True), beat("stopped-before", 12, retiring=True),
             {"worker": "old-style"}]
    # me, a and b (within three TTLs of 30s), and one that stopped within the window of 10s:
    # its last pushes are still counted by the remote
    assert paced.machines(beats) == 4
    # a machine whose commits keep landing need not beat: seen land 50s ago (on this machine's
    # clock, 100s now), "gone" is counted; one seen long ago, or with no beat at all, is not
    clock = Clock()
    signs = {"gone": 50.0, "b": 500.0, "no-beat": 1.0}
    paced = Pacer(tmp_path, SIX_A_10S, boot="b", machine="me-1", lease_ttl=30.0, monotonic=clock,
                  sleep=clock.sleep, utc=lambda: NOW,
                  signs=lambda now: {m: age + clock.now - now for m, age in signs.items()})
    assert paced.machines(beats) == 5


@pytest.mark.parametrize(("value", "says"), [
    ("{per_minute: 6}", None), ("{pushes: 10, per: 10s}", None),
    ("6", "expected {per_minute: 6}"), ("{per_minute: 0}", "a whole number of pushes"),
    ("{per_minute: 6, pushes: 6}", "a whole number of pushes"),
    ("{pushes: 6, per: soon}", "push_budget.per"), ("{per_hour: 6}", "unknown key 'push_budget.per_hour'"),
])
def test_push_budget_in_aq_yaml(queue_root: Path, value: str, says: str | None) -> None:
    (queue_root / "aq.yaml").write_text((queue_root / "aq.yaml").read_text()
                                        + f"push_budget: {value}\n")
    if says is None:
        assert load_config(queue_root).push_budget is not None
        return
    with pytest.raises(ConfigError, match=says):
        load_config(queue_root)


def test_no_push_budget_is_no_pacing(queue_root: Path) -> None:
    configure(queue_root, poll="1s")
    assert load_config(queue_root).push_budget is None
