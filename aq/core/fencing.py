"""Fencing a result (DESIGN §5): an attempt's result moves its job only while the job is still
in building under the lease the attempt claimed it with. Anything else is kept as a
`stale_result`, once; and a result recorded already (salvaged, or a push that was not
confirmed but landed) is never recorded again.

One rule for the worker recording its own result and for a salvage of a dead worker's commit.
No I/O here: the caller hands in the job's stage and events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from aq.core.events import STALE_RESULT, Event, JobState
from aq.core.lifecycle import Stage


class Standing(StrEnum):
    CURRENT = "current"  # in building under this lease: the result moves the job
    RECORDED = "recorded"  # this very result is in the job's events already
    KEPT = "kept"  # fenced, and kept as a stale_result already
    FENCED = "fenced"  # the job moved on, or is under another lease: keep it as a stale_result


@dataclass(frozen=True, slots=True)
class Fence:
    """Where a result stands, and (fenced) where the job is instead, for the stale_result's why."""

    standing: Standing
    where: str = ""


def fence(stage: Stage | None, state: JobState, events: Sequence[Event], *, token: object,
          outcome: object, worker: object) -> Fence:
    """Where the result of `worker`'s attempt under lease `token`, ended with `outcome`, stands
    against the job as it is now: in `stage` (None: in no stage), with these `events` folded
    into `state`."""
    if stage is not None and any(a.token == token and a.outcome == outcome and a.worker == worker
                                 for a in state.attempts):
        # a lease taken back from the worker has another outcome: it is fenced below
        return Fence(Standing.RECORDED)
    if stage is Stage.BUILDING and state.token == token:
        return Fence(Standing.CURRENT)
    if any(e.get("type") == STALE_RESULT and e.get("token") == token for e in events):
        return Fence(Standing.KEPT)  # by its worker, or by a salvage of its commit
    where = f"the job is in {stage or 'no stage'}"
    return Fence(Standing.FENCED, where + ("" if state.token == token else " under another lease"))
