"""The queue's figures for a monitoring system (`aq metrics`, `/metrics` of `aq web`), as a read
model; aq.ui.prometheus renders it in Prometheus's text format.

Counters are the queue's whole history as its event logs tell it, computed by `compute_stats`
exactly as `aq stats --json` computes them (so the two never disagree); gauges are the queue as
it is now: jobs per stage, the oldest ready job's wait, the workers whose heartbeats are on the
remote, the alerts open. Nothing is kept between two reads: each read is the queue at that
moment, so any number of `aq web` processes or machines can be scraped and agree. Archived jobs
(queue/.archive/) are not counted, as in `aq stats`: a counter drops when jobs are archived, which
Prometheus's rate() reads as a reset.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from aq.core.alert_rules import KINDS
from aq.core.events import time_or_none
from aq.core.scheduler import assess
from aq.store.queue import Queue
from aq.usecases.alerts import evaluate, look
from aq.usecases.stats import Stats, compute_stats

if TYPE_CHECKING:
    from aq.store.config import QueueConfig
    from aq.store.snapshot import Snapshot
    from aq.usecases.fleet import WorkerRow


@dataclass(frozen=True, slots=True)
class WorkerCounts:
    """The workers whose heartbeats are on the remote, less those that said goodbye."""

    busy: int  # alive, holding a job
    idle: int  # alive, holding none
    offline: int  # silent as long as a machine_offline alert waits (without a goodbye)


@dataclass(frozen=True, slots=True)
class Metrics:
    stats: Stats  # the whole history (since=None)
    oldest_ready_age: float  # seconds the oldest job ready to be taken has waited; 0: none
    ready: int  # inbox jobs ready to be taken now (by a worker able to)
    halted: bool
    workers: WorkerCounts | None  # None: no remote, or it did not answer
    alerts: dict[str, int]  # kind -> alerts open now, every kind (zeros too)


def read_metrics(queue: Queue, *, now: datetime, monotonic: float) -> Metrics:
    """The queue's figures now: one fetch of the remote (as `aq workers`), one read of the event
    logs (as `aq stats`)."""
    snapshot, signs = look(queue, now=now, monotonic=monotonic)
    config = queue.config
    alerts = dict.fromkeys(KINDS, 0)
    for alert in evaluate(snapshot, config, now, signs):
        alerts[alert.kind] += 1
    ready, oldest = _ready(snapshot, now)
    return Metrics(stats=compute_stats(queue, now=now, since=None), oldest_ready_age=oldest,
                   ready=ready, halted=queue.halted() is not None,
                   workers=None if signs.workers is None else _workers(signs.workers, config),
                   alerts=alerts)


def _ready(snapshot: Snapshot, now: datetime) -> tuple[int, float]:
    """Inbox jobs nothing keeps from being taken (a halt aside: a halted queue's ready jobs
    still wait), and how long the oldest has waited since it last entered the inbox."""
    waits = []
    for verdict in assess(snapshot.views(), now):
        if verdict.ready:
            job = verdict.job
            entered = time_or_none(job.state.moved_at) or job.added
            waits.append(max(0.0, (now - entered).total_seconds()))
    return len(waits), max(waits, default=0.0)


def _workers(rows: tuple[WorkerRow, ...], config: QueueConfig) -> WorkerCounts:
    after = config.alerts.offline_after(config.lease_ttl) or 2 * config.lease_ttl
    busy = idle = offline = 0
    for row in rows:
        if row.retiring:
            continue
        if row.silent_for is not None and row.silent_for >= after:
            offline += 1
        elif row.jobs:
            busy += 1
        else:
            idle += 1
    return WorkerCounts(busy, idle, offline)
