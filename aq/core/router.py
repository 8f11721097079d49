"""The router (DESIGN §4): in which order a worker takes the jobs `assess` found ready.

Priority stays first: no score lifts a job over one of a higher priority. Within a priority each
job gets a score, the sum of the parts below, and the higher score goes first; then the older
job, then the id (DESIGN §4: a batch dropped at once is taken in id order). A `seed` can
break exact ties by a hash instead; aq's workers give none: every worker racing for the same
job changes nothing under compare-and-swap (the loser decides again either way), and a person
who drops a batch expects it taken in order.

- fit: the job's `prefers:` names this worker or an engine it has (+); an engine-class job would
  run here on a later choice of its class (-), so a worker with only a fallback engine takes
  other work first and leaves the job to one with a better engine.
- warm: the job's repository has a cache on this machine (a fetch, not a clone).
- starving: it has been ready longer than STARVE_AFTER; grows without bound, so a job is passed
  over a bounded number of times however many warm, fair or preferred jobs keep arriving.
- fair: its repository (or tracker project) had fewer claims over the last FAIR_WINDOW than the
  busiest one among the candidates.
- load: its repository (or tracker project) has fewer jobs running now (in building, on any
  machine) than the most loaded one among the candidates: what runs at once is spread over
  the repositories, whose CI, reviewers and merges it shares.
- cost: the typical cost of an attempt on its engine (from the costs recorded in the queue)
  fits its `budget.usd` (+), or does not (-).

Pure: it is handed the jobs, what this machine knows (`Signals`) and `now`; same inputs, same
order, whatever order the jobs come in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from aq.core.events import JobState, iso, time_or_none
from aq.core.manifest import Manifest
from aq.core.profile import Profile, apply_profile, choose_engine
from aq.core.scheduler import JobView, Routing

# The weights, in points. A point is worth half a minute of waiting past STARVE_AFTER, so every
# bonus is also how long it may hold an older job back: all of them together (MOST_AHEAD) an
# hour at most.
FIT_PREFERRED = 20.0  # a job's own word on who should run it, after its prefer window too
FIT_ENGINE = 10.0  # taken off for the last engine of a class: its list is its author's ranking
WARM = 30.0  # the largest: a clone of a big repository costs minutes, a fetch seconds
FAIR = 10.0  # a repository no one served lately against the busiest: a small one keeps moving
LOAD = 10.0  # a repository with nothing running now against the most loaded: spread what runs
COST = 10.0  # ±: an attempt that its budget is likely to stop is money spent for nothing
STARVE_AFTER = 600.0  # seconds ready before waiting earns points: ordinary queues keep age order
STARVE_PER_MINUTE = 2.0
FAIR_WINDOW = 3600.0  # seconds of claims counted: long enough to span several agent runs

MOST_AHEAD = FIT_PREFERRED + FIT_ENGINE + WARM + FAIR + LOAD + 2 * COST  # the widest gap

QUEUE_GROUP = ""  # the fairness group of jobs with no repository and no tracker project


class Known(Protocol):
    """A job as the router reads it: a scheduler JobView or a store Job."""

    @property
    def manifest(self) -> Manifest | None: ...

    @property
    def state(self) -> JobState: ...


@dataclass(frozen=True, slots=True)
class Signals:
    """What the router is told beyond the jobs: this machine, and the queue's recent past."""

    warm: frozenset[str] = frozenset()  # repositories (as jobs name them) cached on this machine
    claims: Mapping[str, int] = field(default_factory=dict)  # recent claims per fairness group
    running: Mapping[str, int] = field(default_factory=dict)  # jobs in building per group
    engine_costs: Mapping[str, float] = field(default_factory=dict)  # USD of a typical attempt
    default_repo: str | None = None  # aq.yaml `repo:`
    default_engine: str | None = None  # aq.yaml `default_engine:`
    seed: str | None = None  # breaks exact ties only (None: by id)


@dataclass(frozen=True, slots=True)
class Score:
    fit: float = 0.0
    warm: float = 0.0
    starving: float = 0.0
    fair: float = 0.0
    load: float = 0.0
    cost: float = 0.0

    @property
    def total(self) -> float:
        return round(self.fit + self.warm + self.starving + self.fair + self.load + self.cost, 2)

    def breakdown(self) -> dict[str, float]:
        """As the `claimed` event and `aq next --json` record it."""
        return {"total": self.total, "fit": self.fit, "warm": self.warm,
                "starving": self.starving, "fair": self.fair, "load": self.load,
                "cost": self.cost}

    def said(self) -> str:
        """`score 38: warm 30, fair 8` (the parts that are not zero)."""
        parts = [f"{name} {_num(value)}" for name, value in self.breakdown().items()
                 if name != "total" and value]
        return f"score {_num(self.total)}" + (": " + ", ".join(parts) if parts else "")


@dataclass(frozen=True, slots=True)
class Ranked:
    job: JobView
    score: Score
    group: str  # its fairness group: repository, else tracker project, else QUEUE_GROUP


def rank(ready: Sequence[JobView], now: datetime, signals: Signals,
         routing: Routing | None = None, worker_caps: frozenset[str] | None = None
         ) -> list[Ranked]:
    """The ready jobs in the order a worker takes them: priority, score, age, seeded tie, id."""
    routing = routing or Routing()
    runs = [(job, _as_run(job, routing)) for job in ready if job.manifest is not None]
    groups = {job.id: group_of(manifest, signals.default_repo) for job, manifest in runs}
    busiest = max((signals.claims.get(group, 0) for group in groups.values()), default=0)
    loaded = max((signals.running.get(group, 0) for group in groups.values()), default=0)
    ranked = [Ranked(job, Score(
        fit=_fit(manifest, routing, worker_caps),
        warm=WARM if (manifest.repo or signals.default_repo) in signals.warm else 0.0,
        starving=_starving(job, now),
        fair=_share(FAIR, signals.claims.get(groups[job.id], 0), busiest),
        load=_share(LOAD, signals.running.get(groups[job.id], 0), loaded),
        cost=_cost(manifest, engine_of(manifest, job.state, routing, worker_caps,
                                       signals.default_engine), signals.engine_costs),
    ), groups[job.id]) for job, manifest in runs]
    return sorted(ranked, key=lambda r: _order(r, signals.seed))


def _order(ranked: Ranked, seed: str | None) -> tuple[int, float, datetime, str, str]:
    manifest = ranked.job.manifest
    assert manifest is not None
    tie = _tie(seed, ranked.job.id) if seed else ""
    return (manifest.priority_rank, -ranked.score.total, ranked.job.added, tie, ranked.job.id)


def _tie(seed: str, job_id: str) -> str:
    """A worker's own order among jobs equal in all else, the same at every look."""
    import hashlib  # lazily: only a worker's claim has a seed; `aq next` saves its import

    return hashlib.sha256(f"{seed}\0{job_id}".encode()).hexdigest()


def group_of(manifest: Manifest, default_repo: str | None) -> str:
    """Whose turn a job counts toward: its repository, else its tracker project
    (`github:owner/repo` of `github:owner/repo#12`), else the queue's own."""
    repo = manifest.repo or default_repo
    if repo:
        return repo
    if manifest.tracker_item and "#" in manifest.tracker_item:
        return manifest.tracker_item.partition("#")[0]
    return QUEUE_GROUP


def recent_claims(jobs: Iterable[Known], now: datetime, *, default_repo: str | None = None,
                  profiles: Mapping[str, Profile] | None = None,
                  window: float = FAIR_WINDOW) -> dict[str, int]:
    """Claims per fairness group over the last `window` seconds, from every job's attempts (one
    per `claimed` event); a claim with an unreadable time is not counted."""
    since = now - timedelta(seconds=window)
    since_text = iso(since)

    def counted(started: str) -> bool:
        """At or after `since` (one stamped ahead by a fast clock too); aq's own stamps compare
        as text, which is several times faster than parsing thousands of them."""
        if len(started) == len(since_text) and started.endswith("Z"):
            return started >= since_text
        moment = time_or_none(started)
        return moment is not None and moment >= since

    counts: Counter[str] = Counter()
    for job in jobs:
        if job.manifest is None or not job.state.attempts:
            continue
        recent = sum(1 for attempt in job.state.attempts if counted(attempt.started))
        if recent:
            counts[_group(job.manifest, default_repo, profiles)] += recent
    return dict(counts)


def running_now(building: Iterable[Known], *, default_repo: str | None = None,
                profiles: Mapping[str, Profile] | None = None) -> dict[str, int]:
    """Jobs running now (the building ones handed in) per fairness group."""
    counts: Counter[str] = Counter()
    for job in building:
        if job.manifest is not None:
            counts[_group(job.manifest, default_repo, profiles)] += 1
    return dict(counts)


def _group(manifest: Manifest, default_repo: str | None,
           profiles: Mapping[str, Profile] | None) -> str:
    """The fairness group of a job as it runs: its profile applied."""
    return group_of(apply_profile(manifest, _profile(manifest, profiles)), default_repo)


def engine_costs(jobs: Iterable[Known]) -> dict[str, float]:
    """The median cost in USD of an attempt, per engine, over the attempts whose cost is known
    (the engine's own figure, or priced from aq.yaml `prices:` when it finished)."""
    from statistics import median  # lazily: 5 ms that `aq ls` and `aq next` spend otherwise

    seen: dict[str, list[float]] = {}
    for job in jobs:
        for attempt in job.state.attempts:
            usd = (attempt.usage or {}).get("cost_usd")
            if attempt.engine and isinstance(usd, int | float) and not isinstance(usd, bool):
                seen.setdefault(attempt.engine, []).append(float(usd))
    return {engine: float(median(costs)) for engine, costs in sorted(seen.items())}


def engine_of(manifest: Manifest, state: JobState, routing: Routing,
              worker_caps: frozenset[str] | None, default_engine: str | None) -> str | None:
    """The engine the next attempt of a (profiled) job would run on this worker, as the claim
    resolves it: a retry's step of `retry.escalate`, the job's engine, its class's choice here,
    else the queue's default."""
    ladder = manifest.retry.escalate if manifest.retry else ()
    if ladder:
        return ladder[min(state.retries_used, len(ladder) - 1)]
    if manifest.engine is not None:
        return manifest.engine
    if manifest.engine_class is not None:
        return choose_engine(manifest.engine_class, _engines(manifest, routing), worker_caps)
    return default_engine


def _as_run(job: JobView, routing: Routing) -> Manifest:
    assert job.manifest is not None
    return apply_profile(job.manifest, _profile(job.manifest, routing.profiles))


def _profile(manifest: Manifest, profiles: Mapping[str, Profile] | None) -> Profile | None:
    return (profiles or {}).get(manifest.profile) if manifest.profile else None


def _engines(manifest: Manifest, routing: Routing) -> Sequence[str]:
    assert manifest.engine_class is not None
    return routing.engines_of(manifest.engine_class, _profile(manifest, routing.profiles))


def _fit(manifest: Manifest, routing: Routing, worker_caps: frozenset[str] | None) -> float:
    points = 0.0
    mine = {f"factory:{routing.worker_id}"} if routing.worker_id else set()
    if any(hint in mine or (hint.startswith("engine:") and hint in (worker_caps or ()))
           for hint in manifest.prefers):
        points += FIT_PREFERRED
    if manifest.engine is None and manifest.engine_class is not None and worker_caps is not None:
        engines = list(_engines(manifest, routing))
        chosen = choose_engine(manifest.engine_class, engines, worker_caps)
        if chosen is not None:
            points -= round(FIT_ENGINE * engines.index(chosen) / max(1, len(engines) - 1), 2)
    return points


def _starving(job: JobView, now: datetime) -> float:
    """Points for the minutes past STARVE_AFTER since the job became ready (added, or its
    retry's not-before time)."""
    not_before = time_or_none(job.state.not_before)
    ready_since = max(job.added, not_before) if not_before is not None else job.added
    past = (now - ready_since).total_seconds() - STARVE_AFTER
    return round(STARVE_PER_MINUTE * past / 60, 2) if past > 0 else 0.0


def _share(points: float, mine: int, most: int) -> float:
    """All `points` for a group with none (claims, jobs running) when another has some; none
    for the group with the most."""
    return round(points * (most - mine) / most, 2) if most else 0.0


def _cost(manifest: Manifest, engine: str | None, costs: Mapping[str, float]) -> float:
    budget = manifest.budget.usd if manifest.budget else None
    if budget is None or engine is None or engine not in costs:
        return 0.0
    return COST if costs[engine] <= budget else -COST


def _num(value: float) -> str:
    """38, 6.67, -10: two decimals at most, none when whole."""
    return f"{value:.2f}".rstrip("0").rstrip(".") if value else "0"
