"""The fleet's push budget (aq.yaml `push_budget`), kept by pacing: a forge counts every push
(GitHub recommends at most 6 a minute per repository), and a push over its limit is refused.

Each clone (a machine) keeps the pushes it made in the last window in a file under a file lock
in its state folder, shared by its processes, and takes its share of the budget: the budget
over the machines whose heartbeats it sees, less what its own heartbeats will need. A push of
the queue's branch waits for room in that share; a heartbeat never waits (a lease must not go
unrenewed for a budget) but counts. Every push is also counted, for `aq stats`.

A push takes its place in the window when it starts and, while it is on the way, counts as
happening now; when it ends, its place moves to its end: the remote counted it somewhere
between, and a slow push (a busy machine, a slow link) must not make the next one early.
A machine that pushes after a quiet window is joining the fleet: for one window it counts one
machine more than it sees, since machines that start together cannot yet see each other.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aq.core.events import iso, parse_iso
from aq.infra.files import write_atomic

KINDS = ("pushes", "rejected", "refused", "heartbeats")  # what is counted
MARGIN = 1.0  # seconds added to the window, for a remote that counts a push late
LOCK_WAIT = 10.0
POLL = 2.0  # the longest a waiting push sleeps before looking again (pushes end, and move)
IN_FLIGHT = 120.0  # a push on the way longer than this was lost with its process


@dataclass(frozen=True, slots=True)
class PushBudget:
    """`push_budget: {pushes: 6, per: 1m}` (or `{per_minute: 6}`): the fleet's pushes allowed
    in any window of `per` seconds."""

    pushes: int
    per: float = 60.0


@dataclass(frozen=True, slots=True)
class Turn:
    """Whether a heartbeat goes now, and its place in the window (for `Pacer.pushed`)."""

    go: bool
    stamp: float | None


class Pacer:
    def __init__(self, state_dir: Path, budget: PushBudget | None, *, boot: str, machine: str,
                 lease_ttl: float, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 utc: Callable[[], datetime] | None = None,
                 signs: Callable[[float], Mapping[str, float]] | None = None) -> None:
        self.path = state_dir / "pushes.json"
        self.machine = machine
        self.budget = budget
        self.boot = boot
        self.lease_ttl = lease_ttl
        self.monotonic = monotonic
        self.sleep = sleep
        self.utc = utc or (lambda: datetime.now(UTC))
        # machine -> seconds since one of its commits was seen land (on `monotonic`): a machine
        # whose commits keep landing may not beat at all
        self.signs = signs

    def machines(self, beats: Iterable[Mapping[str, Any]]) -> int:
        """The machines sharing the budget: this one, and each other whose heartbeat (`beats`:
        their payloads, as last fetched) was written, or one of whose commits was seen land, in
        the last three lease TTLs, or in the last window if all its workers stopped (their
        pushes stay in the remote's window). A beat's age by its machine's own clock: a budget
        is no lease, a guess will do."""
        now, others = self.utc(), 0
        signs = self.signs(self.monotonic()) if self.signs is not None else {}
        for beat in beats:
            workers = beat.get("workers")
            if not isinstance(workers, dict) or beat.get("machine") == self.machine:
                continue
            stopped = not any(isinstance(w, dict) and not w.get("retiring")
                              for w in workers.values())
            try:
                age = (now - parse_iso(str(beat.get("wall")))).total_seconds()
            except (ValueError, TypeError):
                continue
            age = min(age, signs.get(str(beat.get("machine")), age))
            if stopped:
                others += self.budget is not None and age <= self.budget.per + MARGIN
            else:
                others += age <= 3 * self.lease_ttl
        return 1 + others

    def part(self, machines: int) -> int:
        """The pushes this machine may make in a window: its part of the budget."""
        assert self.budget is not None
        return max(1, self.budget.pushes // max(1, machines))

    def share(self, machines: int) -> int:
        """The pushes of the queue's branch this machine may make in a window: its part of the
        budget, less the heartbeats it will push meanwhile (two a lease TTL); at least one."""
        assert self.budget is not None
        beats = math.ceil(2 * self.budget.per / self.lease_ttl)
        return max(1, self.part(machines) - beats)

    def wait_turn(self, machines: int) -> float | None:
        """Wait until this machine may push its branch under the budget (its pushes in the
        window, and its heartbeats there or the room they will need, within its part), and
        take the push's place in the window: its stamp, for `pushed` (None with no budget)."""
        if self.budget is None:
            return None
        while True:
            stamp, wait = self._take(machines, "push")
            if stamp is not None:
                return stamp
            import random  # only for a push that waits: `aq ls` reads the budget alone

            self.sleep(min(wait, POLL) + random.uniform(0, 0.5))  # spread a fleet's pushes

    def beat_turn(self, machines: int, *, renews: bool, wait: float = 0.0) -> Turn:
        """Whether a heartbeat may be pushed now, counted. One that `renews` a lease never
        waits (a lease must not lapse for a budget) but takes its place in the window; one
        that renews none (an idle machine's, a stopping one's) goes only if there is room,
        waited for up to `wait` seconds (a stopping machine's goodbye, said once)."""
        if self.budget is None:
            self.count("heartbeats")
            return Turn(True, None)
        if renews:
            return Turn(True, self.count("heartbeats", in_window=True))
        waited = 0.0
        while True:
            stamp, until = self._take(machines, "beat")
            if stamp is not None:
                self.count("heartbeats")
                return Turn(True, stamp)
            if waited >= wait:
                return Turn(False, None)
            pause = min(until, POLL, wait - waited)
            self.sleep(pause)
            waited += pause

    def _take(self, machines: int, kind: str) -> tuple[float | None, float]:
        """Take a place of `kind` ("push" or "beat") in the window if this machine's part has
        room: (its stamp, 0); else (None, seconds until the oldest place leaves the window)."""
        assert self.budget is not None
        with self._locked() as data:
            now = self.monotonic()  # under the lock: no sibling's later stamp is in the future
            recent = _recent(data, now, self.budget.per + MARGIN)
            joining = self._joining(data, recent, now)
            part = self.part(machines + joining)
            reserve = part - self.share(machines + joining)
            pushes = [t for t, each in recent if each == "push"]
            beats = len(recent) - len(pushes)
            if kind == "beat":
                room = len(recent) < part
            else:
                room = not pushes or len(pushes) + max(beats, reserve) < part
            if not room:
                return None, max(0.05, recent[0][0] + self.budget.per + MARGIN - now)
            data["window"] = [*_entries(data, now, self.budget.per + MARGIN), [now, kind, True]]
            return now, 0.0

    def pushed(self, stamp: float | None) -> None:
        """The push that took its place at `stamp` ended: its place moves to now."""
        if stamp is None or self.budget is None:
            return
        with self._locked() as data:
            now = self.monotonic()
            data["window"] = [[now, entry[1], False] if entry[0] == stamp else entry
                              for entry in _entries(data, now, self.budget.per + MARGIN)]

    def count(self, kind: str, *, in_window: bool = False) -> float | None:
        """Count a push of `kind` (KINDS); `in_window`: one that did not wait its turn (a
        heartbeat) takes its place in the window too: its stamp, for `pushed`."""
        with self._locked() as data:
            now = self.monotonic()
            counts = data.setdefault("counts", {})
            counts[kind] = int(counts.get(kind, 0)) + 1
            if not in_window or self.budget is None:
                return None
            self._joining(data, _recent(data, now, self.budget.per + MARGIN), now)
            data["window"] = [*_entries(data, now, self.budget.per + MARGIN), [now, "beat", True]]
            return now

    def _joining(self, data: dict[str, Any], recent: list[tuple[float, str]], now: float) -> int:
        """1 while this machine is joining the fleet: within a window of a push that found the
        window empty."""
        assert self.budget is not None
        if not recent:
            data["joined"] = now
        joined = data.get("joined")
        return int(isinstance(joined, int | float) and now - joined < self.budget.per + MARGIN)

    def counts(self) -> dict[str, Any]:
        """Every push this clone counted since `since` (its wall time when it began)."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        counts = data.get("counts") if isinstance(data, dict) else None
        if not isinstance(counts, dict):
            return {}
        return {**{kind: int(counts.get(kind, 0)) for kind in KINDS}, "since": data.get("since")}

    def _locked(self) -> _Locked:
        return _Locked(self)


class _Locked:
    """The pacer's file, read under its lock and written back when the block ends."""

    def __init__(self, pacer: Pacer) -> None:
        from filelock import FileLock

        self.pacer = pacer
        self.lock = FileLock(str(pacer.path.with_suffix(".lock")), timeout=LOCK_WAIT)
        self.data: dict[str, Any] = {}

    def __enter__(self) -> dict[str, Any]:
        self.pacer.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        try:
            data = json.loads(self.pacer.path.read_text())
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        if data.get("boot") != self.pacer.boot:  # the monotonic clock began again
            data = {"boot": self.pacer.boot, "counts": data.get("counts") or {},
                    "since": data.get("since")}
        if not data.get("since"):
            data["since"] = iso(self.pacer.utc())
        self.data = data
        return data

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                write_atomic(self.pacer.path, json.dumps(self.data))
        finally:
            self.lock.release()


def _entries(data: dict[str, Any], now: float, within: float) -> list[list[Any]]:
    """The window as stored: [when, "push" or "beat", still on the way], less what left it."""
    kept = []
    for entry in data.get("window") or ():
        if not isinstance(entry, list) or len(entry) != 3:
            continue
        when, kind, flying = float(entry[0]), str(entry[1]), bool(entry[2])
        if now - when < (IN_FLIGHT if flying else within):  # never drop one stamped later
            kept.append([when, kind, flying])
    return kept


def _recent(data: dict[str, Any], now: float, within: float) -> list[tuple[float, str]]:
    """The window's pushes (when, and "push" or "beat"), oldest first; one on the way counts
    as happening now."""
    return sorted((now if flying else when, kind)
                  for when, kind, flying in _entries(data, now, within))
