"""Alerts: the troubles of a queue a person should hear of without looking, as a read model.

`evaluate` is pure: the snapshot, aq.yaml, `now` and the signs of life the snapshot does not
hold (`Signs`: the heartbeats as `aq workers` reads them, the running logs on this machine)
give the alerts open now, each a frozen `Alert` whose `key` stays the same while its trouble
lasts. The kinds (thresholds in aq.yaml `alerts:`, aq.core.alert_rules):

- stalled: a building job with no sign of progress for `stall`: no log output (seen only on
  the machine running it), its worker's heartbeat silent, or still building well past its
  timeout (measured from its claim, on the claiming machine's clock);
- failure_spike: `failure_spike` failed attempts of one engine/profile within its window, keyed
  by the window's slot of time: a spike that goes on is told again at most once a window;
- budget: the queue's daily budget crossed (aq.yaml `budget:`), or a job stopped at its own;
- machine_offline: a machine silent (no heartbeat, no commit of its workers landing) for
  `offline` without a goodbye (a worker that stops says so in its last beat);
- dead_letter: a job in dead_letter.

`raise_alerts` is what an idle worker does with them (aq.worker.upkeep): each alert whose key
this machine has not raised before goes to aq.yaml's `hooks.on_alert` (run by aq.store.hooks;
the run of an alert about a job is recorded as that job's `hook` event). The keys raised are kept
in a file of the clone's state folder under a file lock, so the workers of one clone raise an
alert once. An alert about a job is raised once across the fleet: the machine raising it first
notes it on the job as an `alerted` event, pushed as any move is (compare-and-swap), and a
machine that finds the note on the remote's tip raises nothing. An alert about no job (a spike,
a machine, the queue's budget) has no job to note it on: the first by name of the idle workers
the heartbeats show raises it (`speaks_for_fleet`), once.
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aq.core.alert_rules import (
    BUDGET,
    DEAD_LETTER,
    FAILURE_SPIKE,
    KINDS,
    MACHINE_OFFLINE,
    STALLED,
)
from aq.core.durations import format_duration
from aq.core.events import Attempt, iso, time_or_none
from aq.core.lifecycle import NEVER_RETRIED, Outcome, Stage
from aq.core.profile import apply_profile
from aq.errors import AqError, NotApplicable, RemoteUnreachable
from aq.infra.files import write_atomic
from aq.infra.rundir import RunFiles
from aq.store.queue import Queue
from aq.store.snapshot import Job, Snapshot
from aq.usecases.fleet import WorkerRow, list_workers
from aq.usecases.spend import day_spend, queue_budget_crossed
from aq.usecases.stats import NOT_THE_JOBS_FAULT

if TYPE_CHECKING:
    from aq.core.profile import Profile
    from aq.store.config import QueueConfig

# outcomes that are no failure of the job's: stats' own, and two that only wait for something
NO_FAILURE = NOT_THE_JOBS_FAULT | {Outcome.AWAITING_CHILDREN, Outcome.REVIEW_CHANGES,
                                   Outcome.REVIEW_FAILED}  # the review job alerts of its own
OVERRUN = 60.0  # seconds past its timeout and kill grace a job may take to record its end
ALERTED_FILE = "alerted.json"
ALERTED = "alerted"  # the event on a job: its alert raised, by whom (once across the fleet)
FORGET_AFTER = 30 * 86400.0  # a key no longer open is forgotten this long after it was raised
MOST_PER_LOOK = 10  # alerts handed to the hook per look: a backlog goes out over a few looks


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str  # one of aq.core.alert_rules.KINDS
    key: str  # the same while the trouble lasts: an alert is raised once per key
    subject: str  # the job, the machine, the engine/profile, or "queue"
    message: str  # one line
    since: str | None  # when the trouble began (ISO), as far as known
    job: str | None = None  # the job it is about, if one

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Signs:
    """Signs of life the snapshot does not hold."""

    workers: tuple[WorkerRow, ...] | None = None  # the heartbeats (None: not known)
    log_quiet: Mapping[str, float] = field(default_factory=dict)  # job -> s since its log grew here
    profiles: Mapping[str, Profile] = field(default_factory=dict)  # of the building jobs
    remark: str | None = None  # why the heartbeats are not known


@dataclass(frozen=True, slots=True)
class AlertReport:
    alerts: tuple[Alert, ...]
    signs: Signs


# --- the read model --------------------------------------------------------------------------

def evaluate(snapshot: Snapshot, config: QueueConfig, now: datetime, signs: Signs
             ) -> tuple[Alert, ...]:
    """Every alert open at `now`, by kind, then since, then key."""
    jobs = snapshot.jobs
    found = [*_stalled(jobs, config, now, signs), *_failure_spikes(jobs, config, now),
             *_budgets(jobs, config, now), *_offline(signs.workers, config, now),
             *_dead_letters(jobs, config)]
    return tuple(sorted(found, key=lambda a: (KINDS.index(a.kind), a.since or "", a.key)))


def _stalled(jobs: Iterable[Job], config: QueueConfig, now: datetime, signs: Signs
             ) -> Iterator[Alert]:
    stall = config.alerts.stall
    if stall is None:
        return
    rows = {row.worker: row for row in signs.workers or ()}
    for job in jobs:
        if job.stage is not Stage.BUILDING or not job.state.attempts:
            continue
        attempt = job.state.attempts[-1]
        found = _stall_of(job, attempt, config, stall, now, signs, rows.get(attempt.worker))
        if found is not None:
            why, since = found
            yield Alert(STALLED, f"{STALLED}:{job.id}:{attempt.number}", job.id,
                        f"{job.id} (attempt {attempt.number}, {attempt.worker}): {why}",
                        iso(since), job.id)


def _stall_of(job: Job, attempt: Attempt, config: QueueConfig, stall: float, now: datetime,
              signs: Signs, row: WorkerRow | None) -> tuple[str, datetime] | None:
    """Why the building job looks stalled, and since when; None: it does not."""
    quiet = signs.log_quiet.get(job.id)
    if quiet is not None and quiet >= stall:
        return f"no log output for {format_duration(quiet)}", now - timedelta(seconds=quiet)
    if row is not None and row.silent_for is not None and row.silent_for >= stall:
        return (f"its worker's heartbeat is silent for {format_duration(row.silent_for)}",
                now - timedelta(seconds=row.silent_for))
    started = time_or_none(attempt.started)
    if started is None or job.manifest is None:
        return None
    manifest = job.manifest
    if manifest.profile is not None:
        manifest = apply_profile(manifest, signs.profiles.get(manifest.profile))
    timeout = config.timeout_for(manifest)
    running = (now - started).total_seconds()
    if running > timeout + config.kill_grace + OVERRUN:
        return (f"building for {format_duration(running)}, past its timeout of "
                f"{format_duration(timeout)}", started + timedelta(seconds=timeout))
    return None


def _failure_spikes(jobs: Iterable[Job], config: QueueConfig, now: datetime) -> Iterator[Alert]:
    if config.alerts.failure_spike is None:
        return
    most, window = config.alerts.failure_spike
    start = now - timedelta(seconds=window)
    failed: dict[str, list[datetime]] = defaultdict(list)
    for job in jobs:
        for attempt in job.state.attempts:
            ended = time_or_none(attempt.finished)
            if attempt.outcome in (None, *NO_FAILURE) or ended is None or ended < start:
                continue
            failed[_engine_profile(job, attempt, config)].append(ended)
    slot = int(now.timestamp() // window)
    for name, times in sorted(failed.items()):
        if len(times) >= most:
            yield Alert(FAILURE_SPIKE, f"{FAILURE_SPIKE}:{name}:{slot}", name,
                        f"{len(times)} failed attempts of {name} in the last "
                        f"{format_duration(window)} (alerting at {most})", iso(min(times)))


def _engine_profile(job: Job, attempt: Attempt, config: QueueConfig) -> str:
    """`engine/profile` (or the engine alone) of an attempt: the engine it ran, else its job's."""
    manifest = job.manifest
    engine = attempt.engine or (config.engine_for(manifest) if manifest else "?")
    profile = manifest.profile if manifest else None
    return f"{engine}/{profile}" if profile else engine


def _budgets(jobs: tuple[Job, ...], config: QueueConfig, now: datetime) -> Iterator[Alert]:
    if not config.alerts.budget:
        return
    day = iso(now)[:10]
    crossed = queue_budget_crossed(config, *day_spend((job.state for job in jobs), day), day)
    if crossed is not None:
        yield Alert(BUDGET, f"{BUDGET}:queue:{day}", "queue", crossed, None)
    for job in jobs:
        attempts = job.state.attempts
        if job.stage in (Stage.FAILED, Stage.DEAD_LETTER) and attempts \
                and attempts[-1].outcome in NEVER_RETRIED:
            last = attempts[-1]
            yield Alert(BUDGET, f"{BUDGET}:{job.id}:{last.number}", job.id,
                        f"{job.id} stopped at its budget: {last.reason or last.outcome}",
                        last.finished, job.id)


def _offline(workers: tuple[WorkerRow, ...] | None, config: QueueConfig, now: datetime
             ) -> Iterator[Alert]:
    after = config.alerts.offline_after(config.lease_ttl)
    if after is None or workers is None:
        return
    machines: dict[tuple[str, str], list[WorkerRow]] = defaultdict(list)
    for row in workers:
        if not row.retiring and row.silent_for is not None and row.silent_for >= after:
            # a machine's workers share its beat: its host and the wall time it last wrote
            machines[(row.host or "?", row.their_clock or "")].append(row)
    for (host, wall), rows in sorted(machines.items()):
        silent = max(row.silent_for or 0.0 for row in rows)
        held = sorted(job for row in rows for job in row.jobs)
        yield Alert(MACHINE_OFFLINE, f"{MACHINE_OFFLINE}:{host}:{wall}", host,
                    f"{host}: no heartbeat or commit for {format_duration(silent)} (worker "
                    f"{', '.join(row.worker for row in rows)})"
                    + (f", holding {', '.join(held)}" if held else ""),
                    iso(now - timedelta(seconds=silent)))


def _dead_letters(jobs: Iterable[Job], config: QueueConfig) -> Iterator[Alert]:
    if not config.alerts.dead_letter:
        return
    for job in jobs:
        if job.stage is Stage.DEAD_LETTER:
            state = job.state
            why = state.last_reason or state.last_outcome or "no reason recorded"
            yield Alert(DEAD_LETTER, f"{DEAD_LETTER}:{job.id}:{state.moved_at or ''}", job.id,
                        f"{job.id} is a dead letter: {why}", state.moved_at, job.id)


# --- looking -----------------------------------------------------------------------------------

def current_alerts(queue: Queue, *, now: datetime, monotonic: float) -> AlertReport:
    """The alerts open now, as this machine sees the queue (fetching the heartbeats, as `aq
    workers` does)."""
    snapshot, signs = look(queue, now=now, monotonic=monotonic)
    return AlertReport(evaluate(snapshot, queue.config, now, signs), signs)


def look(queue: Queue, *, now: datetime, monotonic: float) -> tuple[Snapshot, Signs]:
    """The queue and its signs of life: the heartbeats on the remote (through `list_workers`,
    which fetches them and the queue's branch first), then the jobs, and the running logs of the
    building jobs whose attempt runs on this machine."""
    workers: tuple[WorkerRow, ...] | None = None
    remark = None
    try:
        workers = list_workers(queue, monotonic=monotonic, now=now)
    except NotApplicable:
        pass  # no remote: no heartbeats, and no machine to miss
    except RemoteUnreachable as err:
        remark = f"machines not checked: {err}"
    snapshot = queue.snapshot()
    building = [job for job in snapshot.jobs if job.stage is Stage.BUILDING and job.state.attempts]
    named = {job.manifest.profile for job in building if job.manifest and job.manifest.profile}
    profiles = {name: profile for name, profile in queue.profiles().found.items()
                if name in named} if named else {}
    return snapshot, Signs(workers, _log_quiet(queue, building, now), profiles, remark)


def _log_quiet(queue: Queue, building: list[Job], now: datetime) -> dict[str, float]:
    """Seconds since the running log (or usage so far) of each building job's attempt grew, for
    the attempts that run on this machine."""
    quiet = {}
    for job in building:
        files = RunFiles(queue.running_dir() / job.id, job.state.attempt_count)
        times = []
        for path in (files.log, files.live_usage):
            with contextlib.suppress(OSError):
                times.append(path.stat().st_mtime)
        if times:
            quiet[job.id] = max(0.0, now.timestamp() - max(times))
    return quiet


# --- raising -----------------------------------------------------------------------------------

def alert_hook(config: QueueConfig) -> str | None:
    """The command aq.yaml's `hooks.on_alert` names; None: no one to tell."""
    return config.hooks.on_alert if config.hooks is not None else None


def raise_alerts(queue: Queue, *, now: datetime, monotonic: float, who: str,
                 say: Callable[[str], None]) -> tuple[Alert, ...]:
    """Hand each alert open now that this clone has not raised before to the on_alert hook, as
    `who` (at most MOST_PER_LOOK a look); the alerts handed over."""
    if alert_hook(queue.config) is None:
        return ()
    report = current_alerts(queue, now=now, monotonic=monotonic)
    if queue.remote is None:
        speaks = True  # alone
    elif report.signs.workers is None:
        speaks = False  # the remote did not answer: who speaks is for a later look to say
    else:
        speaks = speaks_for_fleet(report.signs.workers, who, 2 * queue.config.lease_ttl)
    fresh = claim_new(queue.state_dir, tuple(alert for alert in report.alerts
                                             if alert.job is not None or speaks), now)
    raised = []
    for alert in fresh:  # each sent as soon as its note landed
        if _first_to_raise(queue, alert, now, who, say):
            say(f"alert {alert.kind}: {alert.message}")
            send_alert(queue, alert, now, who=who, say=say)
            raised.append(alert)
    return tuple(raised)


def speaks_for_fleet(workers: tuple[WorkerRow, ...] | None, me: str, alive: float) -> bool:
    """Whether worker `me` raises the alerts about no job (a spike, a silent machine, the
    queue's budget): the first by name of the workers seen idle (holding no job, not stopping,
    heard from within `alive` seconds), so one worker of the fleet raises each. With no
    heartbeats (no remote) it is alone. Two machines may see the fleet differently for a
    moment: an alert may then come twice, or a look later."""
    if workers is None:
        return True
    idle = sorted(row.worker for row in workers if not row.jobs and not row.retiring
                  and row.silent_for is not None and row.silent_for < alive)
    return bool(idle) and idle[0] == me


def _first_to_raise(queue: Queue, alert: Alert, now: datetime, who: str,
                    say: Callable[[str], None]) -> bool:
    """Whether this machine raises `alert`: one about no job, yes; one about a job, if its
    `alerted` note is the first on the job (a transaction, pushed: the machine whose note lands
    first raises it, any other finds the note on the tip and raises nothing)."""
    job_id = alert.job
    if job_id is None:
        return True
    from aq.store.tx import Tx

    def note(tx: Tx) -> bool:
        if tx.stage_of(job_id) is None:
            return False
        noted = [event for event in tx.events(job_id)
                 if event.get("type") == ALERTED and event.get("key") == alert.key]
        if noted:  # another's, or this worker's own from a push that did not say it landed
            return noted[0].get("by") == who
        tx.append_event(job_id, {"ts": iso(now), "type": ALERTED, "by": who, "kind": alert.kind,
                                 "key": alert.key, "why": alert.message})
        return True

    try:
        return bool(queue.transact(note, f"aq: alert {alert.kind} on {job_id} by {who}"))
    except AqError as err:  # the remote away or busy (or the note's push uncertain: if it
        # landed, the next look finds it this worker's own and raises it): forgotten here, so
        # that the next look tries again
        say(f"alert {alert.kind} on {job_id} not raised yet: {err}")
        _forget(queue.state_dir, alert.key)
        return False


def _forget(state_dir: Path, key: str) -> None:
    """Take `key` off this clone's raised alerts."""
    _edit_raised(state_dir, lambda raised: {k: at for k, at in raised.items() if k != key})


def claim_new(state_dir: Path, alerts: tuple[Alert, ...], now: datetime,
              most: int = MOST_PER_LOOK) -> tuple[Alert, ...]:
    """The alerts whose key this clone has not raised, noted as raised (under a file lock: two
    workers of a clone never raise one twice). A key is forgotten once its trouble is over and
    it was raised more than FORGET_AFTER ago."""
    fresh: tuple[Alert, ...] = ()

    def noted(raised: dict[str, Any]) -> dict[str, Any]:
        nonlocal fresh
        fresh = tuple(alert for alert in alerts if alert.key not in raised)[:most]
        open_keys = {alert.key for alert in alerts}
        horizon = now.timestamp() - FORGET_AFTER
        kept = {key: at for key, at in raised.items()
                if key in open_keys or not isinstance(at, int | float) or at >= horizon}
        return {**kept, **{alert.key: now.timestamp() for alert in fresh}}

    _edit_raised(state_dir, noted)
    return fresh


def _edit_raised(state_dir: Path, edit: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """This clone's raised alerts (key -> when), changed by `edit` under the file's lock and
    written back if they changed."""
    from filelock import FileLock

    path = state_dir / ALERTED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_suffix(".lock"))):
        try:
            raised = json.loads(path.read_text())
        except (OSError, ValueError):
            raised = {}
        if not isinstance(raised, dict):
            raised = {}
        changed = edit(raised)
        if changed != raised:
            write_atomic(path, json.dumps(changed, sort_keys=True))


def send_alert(queue: Queue, alert: Alert, now: datetime, *, who: str,
               say: Callable[[str], None]) -> None:
    """Run the on_alert hook for one alert (aq.store.hooks: the alert as JSON on stdin, AQ_*
    variables; a failure said in one line to `say`). The run of an alert about a job is
    recorded as a `hook` event of that job, which rides with this clone's next commit."""
    from aq.store.hooks import PENDING, Outbox, hook_event, run_alert_hook

    run = run_alert_hook(queue.config, {**alert.to_json(), "why": alert.message,
                                        "text": f"aq alert {alert.kind}: {alert.message}"},
                         now, root=queue.root, warn=say)
    if run is not None and alert.job is not None:
        with queue.lock():  # the waiting list is written under the queue lock only
            Outbox(queue.state_dir / PENDING).add(
                [(alert.job, hook_event(iso(now), who, run, alert=alert.kind))])


def alerts_json(report: AlertReport) -> dict[str, Any]:
    """The `aq alerts --json` document."""
    return {"alerts": [alert.to_json() for alert in report.alerts], "remark": report.signs.remark}
