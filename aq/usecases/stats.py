"""How the queue has been doing, from its event logs: flow times, pass rates, who was busy.

`compute_stats` reads every event log once (and the snapshot for stages and manifests) and
returns a frozen `Stats`; `stats_json` renders it for programs, `aq.usecases.stats_tables` for
a person. A window (`since`) bounds what is counted; an event before it still pairs with a later
one (a claim before the window gives the time to a finish inside it).

Times are seconds between two events of one job, as their `ts` say. Clocks of different
machines disagree, so a pair that comes out negative counts as 0.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from aq.core.events import ADDED, CLAIMED, FINISHED, MOVED, Event, counts_as_reclaim, iso
from aq.core.lifecycle import STAGES, Stage
from aq.core.usage import Usage
from aq.store.queue import Queue
from aq.store.snapshot import Job
from aq.usecases.events import epoch, no_gc, read_logs
from aq.usecases.pushes import PushFigures, push_figures

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from aq.core.profile import Profile

PASSED = frozenset({"review", "testing", "shipped"})  # a first attempt that went here passed
INBOX, SHIPPED, DEAD_LETTER = "inbox", "shipped", "dead_letter"
NOT_THE_JOBS_FAULT = frozenset({"ok", "interrupted", "lease_expired"})  # outcomes that are no failure
NO_PROFILE = "(none)"
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Median and 90th percentile (linear between ranks) of `count` samples, in seconds."""

    median: float | None
    p90: float | None
    count: int
    # the samples themselves, sorted: `aq metrics` makes its histograms of them
    samples: tuple[float, ...] = field(default=(), compare=False, repr=False)


class WorkerRow(NamedTuple):
    worker: str
    attempts: int  # claims in the window
    busy_seconds: float  # time in the window running at least one attempt
    busy_share: float  # busy_seconds / the window's length


class Breakdown(NamedTuple):
    name: str
    attempts: int  # claims in the window
    ok: int  # of those, attempts that ended ok
    failed: int  # of those, attempts that failed (timeout, verify_failed, engine_failed, ...)
    median_duration: float | None  # of those that ended, in seconds
    cost_usd: float | None = None  # what those attempts cost, as reported (None: none reported)
    tokens: int | None = None  # the tokens they used (None: none reported)
    first_attempts: int = 0  # of those, jobs' first attempts
    first_passed: int = 0  # of those, first attempts that passed (verify, or review without one)


class ShippedCost(NamedTuple):
    job: str
    cost_usd: float | None  # every attempt of the job (None: no attempt reported a cost)
    tokens: int | None
    attempts: int


@dataclass(frozen=True, slots=True)
class Stats:
    since: str | None  # start of the window (ISO); None: all the queue's history
    now: str
    window_seconds: float
    jobs_per_stage: dict[str, int]
    shipped_per_day: tuple[tuple[str, int], ...]  # (UTC date, jobs shipped), every day, zeros too
    queued_to_claimed: Percentiles
    claimed_to_done: Percentiles
    verify_pass_rate: float | None
    verify_runs: int
    first_pass_rate: float | None
    first_attempts: int  # jobs whose first attempt ended in the window
    retries: int
    reclaims: int
    dead_letters: int
    attempts: int
    events: int  # events in the window
    workers: tuple[WorkerRow, ...]
    per_profile: tuple[Breakdown, ...]
    per_engine: tuple[Breakdown, ...]
    cost_usd: float | None = None  # attempts in the window that reported a cost
    tokens: int | None = None
    shipped_cost: tuple[ShippedCost, ...] = ()  # jobs shipped in the window, dearest first
    # (UTC date, what the attempts that ended that day cost), every day, zeros too
    cost_per_day: tuple[tuple[str, float], ...] = ()
    pushes: PushFigures | None = None  # the fleet's spend of its remote's push budget


# --- computing -------------------------------------------------------------------------------

@dataclass(slots=True)
class _Attempt:
    """One claim and how it ended, as far as the log tells."""

    job_id: str
    started: float
    worker: str
    profile: str | None
    engine: str | None
    token: object
    counted: bool  # claimed in the window
    ended: float | None = None
    outcome: str | None = None
    duration: float | None = None
    cost: float | None = None
    tokens: int | None = None
    first: bool = False  # the job's first attempt
    passed: bool = False  # it moved the job on (testing, review or shipped)


@dataclass(slots=True)
class _Tally:
    start: float  # -inf: the whole history
    now: float
    earliest: float = math.inf  # the first event's time
    queued_to_claimed: list[float] = field(default_factory=list)
    claimed_to_done: list[float] = field(default_factory=list)
    shipped: dict[int, int] = field(default_factory=dict)  # UTC day number (epoch // DAY): ships
    verify_runs: int = 0
    verify_passed: int = 0
    first_attempts: int = 0
    first_passed: int = 0
    retries: int = 0
    reclaims: int = 0
    dead_letters: int = 0
    events: int = 0
    attempts: list[_Attempt] = field(default_factory=list)
    shipped_jobs: list[str] = field(default_factory=list)


def compute_stats(queue: Queue, *, now: datetime, since: float | None) -> Stats:
    """The queue's figures for the `since` seconds before `now` (None: its whole history)."""
    with no_gc():
        return _compute(queue, now, since)


def _compute(queue: Queue, now: datetime, since: float | None) -> Stats:
    logs = read_logs(queue)
    snapshot = queue.snapshot()
    end = now.timestamp()
    tally = _Tally(end - since if since is not None else -math.inf, end)
    jobs = snapshot.by_id()
    for job_id, events in logs:
        _tally_job(tally, job_id, events, jobs.get(job_id))
    start = tally.start if since is not None else min(tally.earliest, end)
    stages = {str(stage): 0 for stage in STAGES}
    for job in snapshot.jobs:
        stages[str(job.stage)] += 1
    attempts = [a for a in tally.attempts if a.counted]
    return Stats(
        since=iso(datetime.fromtimestamp(start, UTC)) if since is not None else None,
        now=iso(now), window_seconds=end - start, jobs_per_stage=stages,
        shipped_per_day=_days(tally.shipped, start, end),
        queued_to_claimed=percentiles(tally.queued_to_claimed),
        claimed_to_done=percentiles(tally.claimed_to_done),
        verify_pass_rate=rate_of(tally.verify_passed, tally.verify_runs), verify_runs=tally.verify_runs,
        first_pass_rate=rate_of(tally.first_passed, tally.first_attempts),
        first_attempts=tally.first_attempts, retries=tally.retries, reclaims=tally.reclaims,
        dead_letters=tally.dead_letters, attempts=len(attempts), events=tally.events,
        workers=_workers(tally.attempts, start, end),
        per_profile=_breakdown(attempts, lambda a: a.profile or NO_PROFILE),
        per_engine=_breakdown(attempts, _engine_of(queue, jobs)),
        cost_usd=_sum(a.cost for a in attempts), tokens=_count(a.tokens for a in attempts),
        shipped_cost=_shipped_cost(tally),
        cost_per_day=_cost_days(attempts, start, end),
        pushes=push_figures(queue, now=now, ended=(a.ended for a in tally.attempts if a.ended)),
    )


def _sum(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known), 6) if known else None


def _count(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _shipped_cost(tally: _Tally) -> tuple[ShippedCost, ...]:
    by_job: dict[str, list[_Attempt]] = defaultdict(list)
    for attempt in tally.attempts:
        by_job[attempt.job_id].append(attempt)
    rows = [ShippedCost(job, _sum(a.cost for a in by_job[job]), _count(a.tokens for a in by_job[job]),
                        len(by_job[job])) for job in dict.fromkeys(tally.shipped_jobs)]
    return tuple(sorted(rows, key=lambda row: (-(row.cost_usd or 0.0), row.job)))


def _tally_job(tally: _Tally, job_id: str, events: list[Event], job: Job | None) -> None:
    """Walk one job's log in file order (its causal order), pairing and counting."""
    start = tally.start
    queued: float | None = None  # when the job last went into the inbox
    current: _Attempt | None = None  # the attempt running, as of this event
    first_done = False
    earliest, inside_count = tally.earliest, 0
    for event in events:
        moment = epoch(event.get("ts"))
        if moment is None:
            continue
        inside = moment >= start
        inside_count += inside
        if moment < earliest:
            earliest = moment
        kind, target = event.get("type"), event.get("to")
        if kind == CLAIMED:
            if current is not None and current.ended is None:
                current.ended = moment  # claimed again with no finish: the lease was lost somehow
            if queued is not None and inside:
                tally.queued_to_claimed.append(max(0.0, moment - queued))
            queued = None
            current = _claim(job_id, event, moment, inside)
            tally.attempts.append(current)
            continue
        if kind == FINISHED:
            if current is not None and current.ended is None and \
                    event.get("token") in (None, current.token):
                _finish(tally, current, event, moment, inside)
                current.first = not first_done
            if inside:
                _count_finish(tally, event)
                if not first_done:
                    tally.first_attempts += 1
                    tally.first_passed += target in PASSED
            first_done = True
        elif kind == MOVED:
            if event.get("action") == "cancel" and current is not None and current.ended is None:
                current.ended = moment  # a person stopped the attempt
        elif kind == ADDED:
            if queued is None:
                queued = moment
            continue
        else:
            continue
        if target == INBOX:
            queued = moment  # a retry, a reclaim, a requeue: waiting again from here
        elif target == SHIPPED and inside:
            tally.shipped_jobs.append(job_id)
            day = int(min(moment, tally.now) // DAY)
            tally.shipped[day] = tally.shipped.get(day, 0) + 1
    tally.earliest = earliest
    tally.events += inside_count
    if current is not None and current.ended is None and job is not None \
            and job.stage is Stage.BUILDING and job.state.token == current.token:
        current.ended = tally.now  # running now: busy until now, no outcome yet


def _claim(job_id: str, event: Event, moment: float, inside: bool) -> _Attempt:
    pinned = event.get("profile")
    profile = pinned.get("name") if isinstance(pinned, dict) else None
    engine = event.get("engine")
    return _Attempt(job_id, moment, str(event.get("by") or "?"),
                    profile if isinstance(profile, str) else None,
                    engine if isinstance(engine, str) else None, event.get("token"), inside)


def _finish(tally: _Tally, attempt: _Attempt, event: Event, moment: float, inside: bool) -> None:
    attempt.ended = moment
    attempt.outcome = str(event.get("outcome") or "") or None
    took = event.get("duration")
    attempt.duration = (float(took) if isinstance(took, int | float) and not isinstance(took, bool)
                        else max(0.0, moment - attempt.started))
    attempt.passed = event.get("to") in PASSED
    usage = Usage.from_event(event.get("usage"))
    if usage is not None:
        attempt.cost, attempt.tokens = usage.cost_usd, usage.tokens
    if inside:
        tally.claimed_to_done.append(max(0.0, moment - attempt.started))


def _count_finish(tally: _Tally, event: Event) -> None:
    action = event.get("action")
    tally.retries += action == "retry"
    tally.reclaims += counts_as_reclaim(event)  # as the fold counts them
    tally.dead_letters += event.get("to") == DEAD_LETTER
    verify_exit = event.get("verify_exit")
    if isinstance(verify_exit, int) and not isinstance(verify_exit, bool):
        tally.verify_runs += 1
        tally.verify_passed += verify_exit == 0


def _engine_of(queue: Queue, jobs: dict[str, Job]) -> Callable[[_Attempt], str]:
    """The engine of an attempt: the one its claim pinned, else the job's, its profile's, or
    the queue's default (profiles and aq.yaml read only if needed, and once)."""
    profiles: dict[str, Profile] = {}
    loaded = False

    def engine(attempt: _Attempt) -> str:
        nonlocal loaded
        if attempt.engine:
            return attempt.engine
        job = jobs.get(attempt.job_id)
        manifest = job.manifest if job is not None else None
        if manifest is not None and manifest.engine:
            return manifest.engine
        name = attempt.profile or (manifest.profile if manifest is not None else None)
        if name and not loaded:
            profiles.update(queue.profiles().found)
            loaded = True
        profile = profiles.get(name) if name else None
        if profile is not None and profile.engine:
            return profile.engine
        return queue.config.default_engine

    return engine


def percentiles(samples: list[float]) -> Percentiles:
    """Median and p90, interpolated linearly between the two nearest ranks."""
    if not samples:
        return Percentiles(None, None, 0)
    ordered = sorted(samples)
    return Percentiles(_quantile(ordered, 0.5), _quantile(ordered, 0.9), len(ordered),
                       tuple(ordered))


def _quantile(ordered: list[float], q: float) -> float:
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def rate_of(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _days(shipped: dict[int, int], start: float, end: float) -> tuple[tuple[str, int], ...]:
    """(UTC date, ships) for every day from the window's first to its last, zeros too."""
    return tuple((name, shipped.get(day, 0)) for day, name in _day_names(start, end))


def _cost_days(attempts: list[_Attempt], start: float, end: float
               ) -> tuple[tuple[str, float], ...]:
    """(UTC date, cost of the attempts that ended that day) for every day of the window."""
    spent: dict[int, float] = defaultdict(float)
    for attempt in attempts:
        if attempt.ended is not None and attempt.cost is not None:
            spent[int(attempt.ended // DAY)] += attempt.cost
    return tuple((name, round(spent.get(day, 0.0), 6)) for day, name in _day_names(start, end))


def _day_names(start: float, end: float) -> list[tuple[int, str]]:
    first, last = int(start // DAY), int(end // DAY)
    epoch_day = datetime(1970, 1, 1, tzinfo=UTC)
    return [(day, (epoch_day + timedelta(days=day)).date().isoformat())
            for day in range(first, last + 1)]


def _workers(attempts: list[_Attempt], start: float, end: float) -> tuple[WorkerRow, ...]:
    """Per worker: claims in the window, and the union of its attempts' time within it."""
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    for attempt in attempts:
        counts[attempt.worker] += attempt.counted
        if attempt.ended is not None:
            low, high = max(attempt.started, start), min(attempt.ended, end)
            if high > low:
                spans[attempt.worker].append((low, high))
    window = end - start
    rows = []
    for worker in counts:
        busy = _union(spans.get(worker, []))
        if counts[worker] or busy:
            rows.append(WorkerRow(worker, counts[worker], busy, busy / window if window > 0 else 0.0))
    return tuple(sorted(rows, key=lambda row: (-row.busy_seconds, -row.attempts, row.worker)))


def _union(spans: list[tuple[float, float]]) -> float:
    """The length of the union of intervals (a worker running several jobs at once is busy once)."""
    total, reach = 0.0, -math.inf
    for low, high in sorted(spans):
        if high <= reach:
            continue
        total += high - max(low, reach)
        reach = high
    return total


def _breakdown(attempts: list[_Attempt], name_of: Callable[[_Attempt], str]
               ) -> tuple[Breakdown, ...]:
    groups: dict[str, list[_Attempt]] = defaultdict(list)
    for attempt in attempts:
        groups[name_of(attempt)].append(attempt)
    rows = []
    for name, members in groups.items():
        ok = sum(1 for a in members if a.outcome == "ok")
        failed = sum(1 for a in members if a.outcome and a.outcome not in NOT_THE_JOBS_FAULT)
        durations = [a.duration for a in members if a.duration is not None]
        firsts = [a for a in members if a.first]
        rows.append(Breakdown(name, len(members), ok, failed, percentiles(durations).median,
                              _sum(a.cost for a in members), _count(a.tokens for a in members),
                              len(firsts), sum(a.passed for a in firsts)))
    return tuple(sorted(rows, key=lambda row: (-row.attempts, row.name)))


# --- JSON ------------------------------------------------------------------------------------

def stats_json(stats: Stats) -> dict[str, Any]:
    """Plain JSON types only; times in seconds, rates as fractions (None: nothing to measure)."""
    def pct(p: Percentiles) -> dict[str, Any]:
        return {"median": p.median, "p90": p.p90, "count": p.count}

    return {
        "since": stats.since, "now": stats.now, "window_seconds": stats.window_seconds,
        "jobs_per_stage": dict(stats.jobs_per_stage),
        "shipped_per_day": [{"day": day, "shipped": count} for day, count in stats.shipped_per_day],
        "queued_to_claimed": pct(stats.queued_to_claimed),
        "claimed_to_done": pct(stats.claimed_to_done),
        "verify_pass_rate": stats.verify_pass_rate, "verify_runs": stats.verify_runs,
        "first_pass_rate": stats.first_pass_rate, "first_attempts": stats.first_attempts,
        "retries": stats.retries, "reclaims": stats.reclaims, "dead_letters": stats.dead_letters,
        "attempts": stats.attempts, "events": stats.events,
        "workers": [row._asdict() for row in stats.workers],
        "per_profile": [row._asdict() for row in stats.per_profile],
        "per_engine": [row._asdict() for row in stats.per_engine],
        "cost_usd": stats.cost_usd, "tokens": stats.tokens,
        "shipped_cost": [row._asdict() for row in stats.shipped_cost],
        "cost_per_day": [{"day": day, "usd": usd} for day, usd in stats.cost_per_day],
        "pushes": dataclasses.asdict(stats.pushes) if stats.pushes else None,
    }
