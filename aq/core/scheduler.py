"""Picking (DESIGN §4): which inbox job a worker takes next, and why every other one waits.

Pure: it is handed the jobs, their stages and `now`; it reads nothing and never the clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aq.core.children import awaited, families
from aq.core.events import JobState, iso, time_or_none
from aq.core.lifecycle import DONE_FOR_DEPS, Stage
from aq.core.manifest import Manifest
from aq.core.profile import Profile, apply_profile, choose_engine, profile_problem
from aq.core.requirements import missing


@dataclass(frozen=True, slots=True)
class JobView:
    """What the scheduler knows of one job."""

    id: str
    stage: Stage
    manifest: Manifest | None  # None: the file is invalid; `error` says why
    state: JobState
    added: datetime  # for age ordering: the `added` event, else the file's time
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Routing:
    """What routes a job to a worker beyond its capabilities: the queue's profiles (None: not
    checked), engine classes, and who is asking (None: no `prefers` window applies)."""

    profiles: Mapping[str, Profile] | None = None
    engine_classes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    worker_id: str | None = None
    prefer_window: float = 120.0

    def engines_of(self, engine_class: str, profile: Profile | None) -> Sequence[str]:
        """The engines that can serve `engine_class`, best first: the profile's prefers-engine
        (when the class is the profile's own), else the queue's list for the class."""
        if profile is not None and profile.prefers_engine and profile.engine_class in (None, engine_class):
            return profile.prefers_engine
        return self.engine_classes.get(engine_class, ())

    def unserved(self, engine_class: str, profile: Profile | None) -> str | None:
        """Why no engine can ever serve `engine_class` (the queue lists none for it, nor does
        the profile), or None."""
        if self.engines_of(engine_class, profile):
            return None
        return (f"engine-class {engine_class!r} names no engines: list them in aq.yaml "
                "engine_classes or the profile's prefers-engine")


NO_ROUTING = Routing()


@dataclass(frozen=True, slots=True)
class Verdict:
    job: JobView
    reason: str | None  # None: ready to be taken
    kind: str | None = None  # invalid, profile, cycle, dep, lock, not_before, capability, preferred, halted

    @property
    def ready(self) -> bool:
        return self.reason is None


def pick_order(job: JobView) -> tuple[int, datetime, str]:
    rank = job.manifest.priority_rank if job.manifest else 99
    return (rank, job.added, job.id)


def dependency_cycles(manifests: Mapping[str, Manifest]) -> dict[str, list[str]]:
    """For each job on a dependency cycle, the cycle it is on (Tarjan's SCC, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: dict[str, list[str]] = {}
    counter = 0
    for root in manifests:
        if root in index:
            continue
        work = [(root, iter(manifests[root].deps))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in manifests:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(manifests[child].deps)))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    ordered = sorted(component)
                    for member in component:
                        cycles[member] = ordered
    return cycles


def capabilities_missing(required: Iterable[str], have: frozenset[str] | None) -> list[str]:
    """The required capabilities a worker lacks (`node>=20` against its `node=20.11.1`); nothing
    is checked when `have` is None."""
    if have is None:
        return []
    return missing(required, have)


def assess(
    jobs: Sequence[JobView],
    now: datetime,
    *,
    halted: str | None = None,
    worker_caps: frozenset[str] | None = None,
    held_locks: Mapping[str, str] | None = None,
    retry_waits: Mapping[str, float] | None = None,
    routing: Routing | None = None,
) -> list[Verdict]:
    """Every inbox job in pick order, each with the reason it cannot be taken now (None: ready).

    `held_locks` adds locks (lock -> job id) beyond those of building jobs, for a worker that
    claims several jobs in one pass. `retry_waits` (job id -> seconds) is how long each retry
    still waits as a worker measures it on its own clock; without it the wall clock decides.
    `routing` brings profiles, engine classes and the worker's identity into the decision.
    """
    stages = {job.id: job.stage for job in jobs}
    manifests = {job.id: job.manifest for job in jobs if job.manifest is not None}
    locks: dict[str, str] = {}
    for job in jobs:
        if job.stage is Stage.BUILDING and job.manifest and job.manifest.lock:
            locks.setdefault(job.manifest.lock, job.id)
    locks.update(held_locks or {})
    inbox = sorted((job for job in jobs if job.stage is Stage.INBOX), key=pick_order)
    cycles = dependency_cycles(manifests) if any(m.deps for m in manifests.values()) else {}
    kin = families(jobs) if any(job.state.awaiting_children for job in inbox) else {}
    waiting = {job.id: kin[job.id].waiting_reason(awaited(job.state.attempts)) for job in inbox
               if job.state.awaiting_children and job.id in kin}
    verdicts = []
    for job in inbox:
        children = waiting.get(job.id)
        blocked = ("children", children) if children else _block_reason(
            job, now, halted, worker_caps, stages, locks, cycles, retry_waits, routing or NO_ROUTING)
        verdicts.append(Verdict(job, blocked[1], blocked[0]) if blocked else Verdict(job, None))
    return verdicts


def _block_reason(
    job: JobView,
    now: datetime,
    halted: str | None,
    worker_caps: frozenset[str] | None,
    stages: Mapping[str, Stage],
    locks: Mapping[str, str],
    cycles: Mapping[str, list[str]],
    retry_waits: Mapping[str, float] | None,
    routing: Routing,
) -> tuple[str, str] | None:
    """(kind, reason) of what keeps the job from being taken now, or None."""
    manifest = job.manifest
    if manifest is None:
        return "invalid", f"invalid manifest: {job.error}"
    if job.error:  # readable, but not to be taken: e.g. a copy of it sits in another stage
        return "invalid", job.error
    profile = None
    if manifest.profile is not None and routing.profiles is not None:
        problem = profile_problem(manifest, routing.profiles)
        if problem:
            return "profile", problem
        profile = routing.profiles[manifest.profile]
        manifest = apply_profile(manifest, profile)
    if job.id in cycles:
        return "cycle", "dependency cycle: " + " -> ".join([*cycles[job.id], cycles[job.id][0]])
    for dep in manifest.deps:
        stage = stages.get(dep)
        if stage is None:
            return "dep", f"dep {dep} does not exist"
        if stage not in DONE_FOR_DEPS:
            return "dep", f"waits for dep {dep} ({stage})"
    if manifest.lock and manifest.lock in locks:
        return "lock", f"lock {manifest.lock!r} is held by {locks[manifest.lock]}"
    not_before = time_or_none(job.state.not_before)
    if retry_waits is not None and job.id in retry_waits:
        if retry_waits[job.id] > 0:
            return "not_before", f"retry waits its backoff ({retry_waits[job.id]:.0f}s more)"
    elif not_before is not None and not_before > now:
        wait = (not_before - now).total_seconds()
        return "not_before", f"retry not before {job.state.not_before} (in {wait:.0f}s)"
    missing = capabilities_missing(manifest.capabilities, worker_caps)
    if missing:
        return "capability", "needs capability " + ", ".join(missing) + " that this worker lacks"
    if manifest.engine is None and manifest.engine_class is not None:
        engines = routing.engines_of(manifest.engine_class, profile)
        if not engines:
            return "capability", str(routing.unserved(manifest.engine_class, profile))
        if choose_engine(manifest.engine_class, engines, worker_caps) is None:
            return "capability", (f"needs an engine of class {manifest.engine_class} "
                                  f"({', '.join(engines)}) that this worker lacks")
    if manifest.prefers and routing.worker_id is not None:
        waiting = _preferred_elsewhere(job, manifest.prefers, now, worker_caps, routing)
        if waiting:
            return "preferred", waiting
    if halted is not None:
        return "halted", f"queue halted: {halted}"
    return None


def _preferred_elsewhere(job: JobView, prefers: Sequence[str], now: datetime,
                         worker_caps: frozenset[str] | None, routing: Routing) -> str | None:
    """A job that prefers other workers waits `prefer_window` after it became ready (added, or
    its retry time) before this worker may take it; None when this worker may take it now."""
    for hint in prefers:
        if hint == f"factory:{routing.worker_id}" or (
                hint.startswith("engine:") and worker_caps is not None and hint in worker_caps):
            return None
    ready_since = max(job.added, time_or_none(job.state.not_before) or job.added)
    opens = ready_since + timedelta(seconds=routing.prefer_window)
    if now >= opens:
        return None
    return (f"preferred for {', '.join(prefers)} until {iso(opens)} "
            f"({(opens - now).total_seconds():.0f}s more)")


def pick(
    jobs: Sequence[JobView],
    now: datetime,
    *,
    halted: str | None = None,
    worker_caps: frozenset[str] | None = None,
    held_locks: Mapping[str, str] | None = None,
    retry_waits: Mapping[str, float] | None = None,
    routing: Routing | None = None,
) -> JobView | None:
    """The job a worker takes next, or None."""
    for verdict in assess(jobs, now, halted=halted, worker_caps=worker_caps, held_locks=held_locks,
                          retry_waits=retry_waits, routing=routing):
        if verdict.ready:
            return verdict.job
    return None
