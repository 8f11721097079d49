"""A person's moves of a job (promote, ship, reject, requeue, cancel), each posted to the job's
tracker item at once, whichever front end made it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from aq.core.children import descendants, families
from aq.core.events import iso, moved
from aq.core.lifecycle import Action, Stage, check_move, reason_problem
from aq.errors import JobNotFound, MoveRefused, UsageError
from aq.store.queue import Queue
from aq.store.tx import Tx
from aq.usecases.archive import unarchive
from aq.usecases.ship import scope_gate, ship_work
from aq.usecases.tracker_delivery import Sent, post_moves


@dataclass(frozen=True, slots=True)
class MoveResult:
    job_id: str
    source: Stage
    target: Stage
    action: Action
    tracker: tuple[Sent, ...] = ()  # its post to the job's tracker item, if linked (failed: owed)
    children_canceled: tuple[str, ...] = ()  # a canceled or rejected parent's, and theirs


def move_job(queue: Queue, ref: str, action: Action, *, who: str, now: datetime,
             env: Mapping[str, str], reason: str | None = None, allow_out_of_scope: bool = False,
             announce: Callable[[MoveResult], None] | None = None) -> MoveResult:
    """`record_move`, then its post to the job's tracker item, sent as its mover (`env`: where
    the tracker's token is). `announce` hears of the move before the tracker is asked: the move
    stands whatever the tracker answers, and a failed post stays owed."""
    result = record_move(queue, ref, action, who=who, now=now, reason=reason,
                         allow_out_of_scope=allow_out_of_scope)
    if announce is not None:
        announce(result)
    ended = _end_children(queue, result.job_id, action, who=who, now=now) \
        if action in (Action.CANCEL, Action.REJECT) else []
    sent = post_moves(queue, [result.job_id, *ended], me=who, now=now, env=env)
    return dataclasses.replace(result, tracker=tuple(sent), children_canceled=tuple(ended))


def _end_children(queue: Queue, parent: str, action: Action, *, who: str, now: datetime
                  ) -> list[str]:
    """A canceled or rejected parent's children still in the workers' hands are canceled too,
    and theirs in turn: their work is no longer wanted. The tree is read from one snapshot; one
    move each; a child that moved on meanwhile is left as it is, and so are its own."""
    ended: list[str] = []
    done = {parent}  # parents whose move stood: only their children follow
    for child, above in descendants(families(queue.snapshot().jobs), parent):
        if above not in done:
            continue
        how = "rejected" if above == parent and action is Action.REJECT else "canceled"
        try:
            record_move(queue, child, Action.CANCEL, who=who, now=now,
                        reason=f"its parent {above} was {how}")
        except (MoveRefused, JobNotFound):
            continue
        done.add(child)
        ended.append(child)
    return ended


def record_move(queue: Queue, ref: str, action: Action, *, who: str, now: datetime,
                reason: str | None = None, allow_out_of_scope: bool = False) -> MoveResult:
    """promote, ship, reject, requeue, cancel: refused unless the lifecycle allows it. A ship
    of a job whose last attempt changed files outside its allowed-scope is refused unless
    `allow_out_of_scope`, and the override is recorded with who made it. The move alone: the
    post it owes a tracker item stays owed."""
    if action is Action.REJECT and not (reason or "").strip():  # every front end's rule
        raise UsageError("a reject needs a reason: say why (it is kept in the event log)")
    if reason is not None and (problem := reason_problem(reason)):
        raise UsageError(problem)
    job = queue.resolve(ref)
    job_id = job.id
    shipped: dict[str, object] = {}
    if action is Action.SHIP:  # every gate before the first side effect on the project's repo
        check_move(job_id, job.stage, action)
        scope_gate(job_id, job.state.out_of_scope, allow_out_of_scope)
        shipped = ship_work(queue, job, who)

    def change(tx: Tx) -> MoveResult:
        # an archived job comes back to its stage folder first: if the move is refused, the
        # transaction puts it back
        stage = tx.stage_of(job_id) or unarchive(tx, job_id, who=who, now=now)
        if stage is None:
            raise JobNotFound(f"{job_id} vanished while moving it: run 'aq ls'")
        target = check_move(job_id, stage, action)
        extra: dict[str, object] = dict(shipped)
        outside = tx.state(job_id).out_of_scope if action is Action.SHIP else ()
        scope_gate(job_id, outside, allow_out_of_scope)
        if outside:  # the override is kept beside what the ship did
            extra.update({"override": "out_of_scope", "out_of_scope": list(outside)})
        why = reason or {"cancel": "canceled"}.get(str(action), f"{action} by {who}")
        tx.move(job_id, stage, target, moved(iso(now), who, stage, target, action, why, **extra))
        return MoveResult(job_id, stage, target, action)

    return queue.transact(change, f"aq: {action} {job_id} by {who}")
