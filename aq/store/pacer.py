"""The fleet's push budget (aq.yaml `push_budget`), kept by pacing: a forge counts every push
(GitHub recommends at most 6 a minute per repository), and a push over its limit is refused.

Each clone (a machine) keeps the pushes it made in the last window in a file under a file lock
in its state folder, shared by its processes, and takes its share of the budget: the budget
over the machines whose heartbeats it sees, less what its own heartbeats will need. A push of
the queue's branch waits for room in that share; a heartbeat never waits (a lease must not go
unrenewed for a budget) but counts. Every push is also counted, for `aq stats`.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aq.core.events import iso, parse_iso
from aq.infra.files import write_atomic

KINDS = ("pushes", "rejected", "refused", "heartbeats")  # what is counted
MARGIN = 1.0  # seconds added to the window: a push is counted here before the remote sees it
LOCK_WAIT = 10.0


@dataclass(frozen=True, slots=True)
class PushBudget:
    """`push_budget: {pushes: 6, per: 1m}` (or `{per_minute: 6}`): the fleet's pushes allowed
    in any window of `per` seconds."""

    pushes: int
    per: float = 60.0


class Pacer:
    def __init__(self, state_dir: Path, budget: PushBudget | None, *, boot: str, machine: str,
                 lease_ttl: float, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 utc: Callable[[], datetime] | None = None) -> None:
        self.path = state_dir / "pushes.json"
        self.machine = machine
        self.budget = budget
        self.boot = boot
        self.lease_ttl = lease_ttl
        self.monotonic = monotonic
        self.sleep = sleep
        self.utc = utc or (lambda: datetime.now(UTC))

    def machines(self, beats: Iterable[Mapping[str, Any]]) -> int:
        """The machines sharing the budget: this one, and each other whose heartbeat (`beats`:
        their payloads, as last fetched) has a worker that has not stopped and was written in
        the last three lease TTLs (by its own clock: a budget is no lease, a guess will do)."""
        now, others = self.utc(), 0
        for beat in beats:
            workers = beat.get("workers")
            if not isinstance(workers, dict) or beat.get("machine") == self.machine:
                continue
            if not any(isinstance(w, dict) and not w.get("retiring") for w in workers.values()):
                continue
            try:
                age = (now - parse_iso(str(beat.get("wall")))).total_seconds()
            except (ValueError, TypeError):
                continue
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

    def wait_turn(self, machines: int) -> float:
        """Wait until this machine may push its branch under the budget (its pushes in the
        window, and its heartbeats there or the room they will need, within its part), and
        count the push in the window; the seconds waited (0 with no budget)."""
        if self.budget is None:
            return 0.0
        waited = 0.0
        reserve = self.part(machines) - self.share(machines)
        while True:
            now = self.monotonic()
            with self._locked() as data:
                recent = _recent(data, now, self.budget.per + MARGIN)
                pushes = [t for t, kind in recent if kind == "push"]
                beats = len(recent) - len(pushes)
                if not pushes or len(pushes) + max(beats, reserve) < self.part(machines):
                    data["window"] = [*recent, (now, "push")]
                    return waited
                wait = recent[0][0] + self.budget.per + MARGIN - now
            pause = max(0.05, wait) + random.uniform(0, 0.5)  # spread a fleet's next pushes
            self.sleep(pause)
            waited += pause

    def count(self, kind: str, *, in_window: bool = False) -> None:
        """Count a push of `kind` (KINDS); `in_window`: one that did not wait its turn (a
        heartbeat) takes its place in the window too."""
        now = self.monotonic()
        with self._locked() as data:
            counts = data.setdefault("counts", {})
            counts[kind] = int(counts.get(kind, 0)) + 1
            if in_window and self.budget is not None:
                data["window"] = [*_recent(data, now, self.budget.per + MARGIN), (now, "beat")]

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


def _recent(data: dict[str, Any], now: float, within: float) -> list[tuple[float, str]]:
    """The window's pushes (when, and "push" or "beat"), oldest first."""
    found = []
    for entry in data.get("window") or ():
        if isinstance(entry, list | tuple) and len(entry) == 2 and 0 <= now - float(entry[0]) < within:
            found.append((float(entry[0]), str(entry[1])))
    return sorted(found)
