"""The fleet as a person sees it: the kill switch (halt, resume) and the workers seen on the
remote."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from aq.core.events import iso, parse_iso
from aq.core.leases import watch_gap
from aq.core.lifecycle import Stage, reason_problem
from aq.errors import NotApplicable, RemoteUnreachable, UsageError
from aq.store.layout import HALT_FILE
from aq.store.queue import Queue
from aq.store.sync import LeaseObserver
from aq.store.tx import Tx


def halt(queue: Queue, *, reason: str, who: str, now: datetime) -> bool:
    """Create queue/HALT: no worker claims anything until `resume`. False if already halted."""
    if problem := reason_problem(reason):
        raise UsageError(problem)

    def change(tx: Tx) -> bool:
        if queue.halted() is not None:
            return False
        tx.write(queue.qdir / HALT_FILE, f"{reason}\nby {who} at {iso(now)}\n")
        return True

    return queue.transact(change, f"aq: halt by {who}: {reason}")


def resume(queue: Queue, *, who: str) -> bool:
    def change(tx: Tx) -> bool:
        if queue.halted() is None:
            return False
        tx.remove(queue.qdir / HALT_FILE)
        return True

    return queue.transact(change, f"aq: resume by {who}")


@dataclass(frozen=True, slots=True)
class WorkerRow:
    worker: str
    host: str | None
    silent_for: float | None  # seconds since its heartbeat changed; None: unknown
    their_clock: str | None  # its last sign of life on its own clock: its beat, or its machine's commit
    jobs: tuple[str, ...]
    retiring: bool
    age_from: str = "this machine"  # or "its clock": first seen here, aged by its own wall time
    capabilities: tuple[str, ...] = ()  # as its heartbeat lists them


def list_workers(queue: Queue, *, monotonic: float, now: datetime | None = None
                 ) -> tuple[WorkerRow, ...]:
    """Each worker whose heartbeat ref is on the remote, as this machine sees it now."""
    remote = queue.remote
    if remote is None:
        raise NotApplicable("this queue has no git remote: workers publish heartbeats only to a remote")
    reachable = queue.refresh_from_remote()
    if not reachable:
        said = f" ({queue.unreachable_said.removeprefix('fatal: ')})" if queue.unreachable_said else ""
        raise RemoteUnreachable(f"cannot reach the queue's remote {remote.name!r}{said}: "
                                "try again when it answers")
    snapshot = queue.snapshot()
    building = {job.state.token: job for job in snapshot.jobs
                if job.stage is Stage.BUILDING and job.state.token}
    observer = LeaseObserver(queue.state_dir / "leases.json")
    with queue.lock():
        observer.observe(remote, monotonic, {t: str(j.state.holder) for t, j in building.items()},
                         gap=watch_gap(queue.config.lease_ttl, queue.config.poll))
        seen = observer.workers(monotonic)
        changing = observer.seen_changing()
    rows = []
    for worker, (silent, payload) in sorted(seen.items()):
        # the jobs it holds: its claims on the remote (its heartbeat lists them only from its next beat)
        jobs = tuple(sorted(job.id for job in building.values() if job.state.holder == worker))
        age_from = "this machine"
        written = _wall_age(payload.get("wall"), now)
        if worker not in changing and written is not None and written > (silent or 0.0):
            # never seen to beat here: how long ago it did is only in the beat, on its clock
            silent, age_from = written, "its clock"
        caps = payload.get("capabilities")
        rows.append(WorkerRow(worker, payload.get("host"), silent, payload.get("wall"), jobs,
                              bool(payload.get("retiring")), age_from,
                              tuple(str(c) for c in caps) if isinstance(caps, list) else ()))
    return tuple(rows)


def _wall_age(wall: object, now: datetime | None) -> float | None:
    if not isinstance(wall, str) or now is None:
        return None
    try:
        return (now - parse_iso(wall)).total_seconds()
    except (ValueError, TypeError):
        return None
