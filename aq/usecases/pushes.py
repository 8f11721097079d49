"""What the fleet spends of a forge's push budget (aq.store.pacer): every clone counts its
pushes (of the queue's branch, rejected ones among them, refused ones, heartbeats) and its
heartbeat carries the counts; this adds them up per job and per hour."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aq.core.events import iso, parse_iso
from aq.store.pacer import KINDS
from aq.store.queue import Queue


@dataclass(frozen=True, slots=True)
class PushFigures:
    machines: int  # clones whose counts are in
    since: str | None  # the earliest of their counts' starts
    pushes: int  # of the queue's branch (claims, results, a person's moves)
    rejected: int  # of those, lost races
    refused: int  # of those, said no to by the remote
    heartbeats: int
    attempts: int  # attempts that ended since `since`
    per_job: float | None  # pushes of the branch and heartbeats, per attempt
    rejected_per_job: float | None
    heartbeats_per_hour: float | None


def push_figures(queue: Queue, *, now: datetime, ended: Iterable[float]) -> PushFigures | None:
    """The fleet's push counts as this clone last fetched them (this clone's own, fresher, from
    its state folder), against the attempts that `ended` (timestamps) since they began. None
    for a queue with no remote, or no counts yet."""
    remote = queue.remote
    if remote is None:
        return None
    counts: dict[str, Mapping[str, Any]] = {}
    for _commit, payload in remote.observed_heartbeats().values():
        said = payload.get("pushes")
        if isinstance(said, dict) and payload.get("machine"):
            counts[str(payload["machine"])] = said
    if remote.pacer is not None and remote.pacer.counts():
        counts[remote.pacer.machine] = remote.pacer.counts()
    if not counts:
        return None
    starts = [parse_iso(str(c["since"])) for c in counts.values() if c.get("since")]
    since = min(starts) if starts else None
    total = {kind: sum(_int(c.get(kind)) for c in counts.values()) for kind in KINDS}
    attempts = sum(1 for moment in ended if since is None or moment >= since.timestamp())
    hours = (now - since).total_seconds() / 3600 if since is not None else 0.0
    return PushFigures(
        machines=len(counts), since=iso(since) if since else None,
        pushes=total["pushes"], rejected=total["rejected"], refused=total["refused"],
        heartbeats=total["heartbeats"], attempts=attempts,
        per_job=round((total["pushes"] + total["heartbeats"]) / attempts, 2) if attempts else None,
        rejected_per_job=round(total["rejected"] / attempts, 2) if attempts else None,
        heartbeats_per_hour=round(total["heartbeats"] / hours, 1) if hours > 0 else None)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
