"""Reading the queue as a worker here would: the job list, and what `aq run` takes next."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from aq.core.lifecycle import STAGES, Stage
from aq.core.profile import Profile, apply_profile, choose_engine
from aq.core.requirements import tools_compared
from aq.core.scheduler import Routing, Verdict, assess, capabilities_missing
from aq.store.layout import FINAL_STAGES
from aq.store.queue import Queue
from aq.store.snapshot import Job, Snapshot, read_everything

if TYPE_CHECKING:  # the router orders what `aq next` may take; `aq ls` lists without it
    from aq.core.router import Ranked


@dataclass(frozen=True, slots=True)
class Listing:
    jobs: tuple[Job, ...]
    verdicts: Mapping[str, Verdict]  # inbox jobs only
    problems: tuple[str, ...]


# This machine's capabilities: given, unknown (None: not checked), or probed on demand from the
# tools whose versions the inbox's requirements compare (probing every version costs ~0.3 s).
Capabilities = frozenset[str] | Callable[[frozenset[str]], frozenset[str]] | None


def _worker_caps(capabilities: Capabilities, snapshot: Snapshot,
                 profiles: Mapping[str, Profile]) -> frozenset[str] | None:
    if not callable(capabilities):
        return capabilities

    required: list[str] = []
    classes = False  # an engine class is resolved against the engines this machine has
    for job in snapshot.jobs:
        if job.stage is Stage.INBOX and job.manifest:
            required += job.manifest.capabilities
            classes = classes or job.manifest.engine_class is not None
            if job.manifest.profile and job.manifest.profile in profiles:
                profile = profiles[job.manifest.profile]
                required += profile.capabilities
                classes = classes or profile.engine_class is not None
    if not required and not classes:
        return frozenset()  # nothing to check: the probe (~30 ms of PATH lookups) is not needed
    return capabilities(tools_compared(required))


def profiles_used(queue: Queue, snapshot: Snapshot) -> dict[str, Profile]:
    """The queue's profiles, read only when some job names one (a listing stays fast)."""
    if any(job.manifest and job.manifest.profile for job in snapshot.jobs):
        return queue.profiles().found
    return {}


def assess_inbox(queue: Queue, snapshot: Snapshot, now: datetime, capabilities: Capabilities,
                 worker_id: str | None = None) -> list[Verdict]:
    """What `aq run` on this machine would decide for each inbox job (`worker_id`: as which
    worker, for `prefers:`; None leaves preferences out)."""
    profiles = profiles_used(queue, snapshot)
    config = queue.config
    routing = Routing(profiles, config.engine_classes, worker_id, config.prefer_window)
    return assess(snapshot.views(), now, halted=queue.halted(),
                  worker_caps=_worker_caps(capabilities, snapshot, profiles), routing=routing)


def list_jobs(
    queue: Queue,
    *,
    now: datetime,
    capabilities: Capabilities,
    stages: Sequence[Stage] = (),
    ready: bool = False,
    blocked: bool = False,
    archived: bool = False,
) -> Listing:
    """The jobs of the stage folders (`archived`: and of the archive, after the others of
    their stage), by stage then age, each inbox job with its verdict. The archive is read only
    when asked for and a final stage is listed."""
    snapshot = queue.snapshot()
    verdicts = {v.job.id: v for v in assess_inbox(queue, snapshot, now, capabilities)}
    if blocked:
        verdicts.update(_unservable(queue, snapshot, verdicts))
    if archived and not ready and not blocked and (
            not stages or any(stage in FINAL_STAGES for stage in stages)):
        snapshot = read_everything(queue.layout, snapshot)
    order = {stage: index for index, stage in enumerate(STAGES)}
    jobs = sorted(snapshot.jobs, key=lambda j: (order[j.stage], j.archived, j.added, j.id))
    if stages:
        jobs = [job for job in jobs if job.stage in stages]
    if ready or blocked:
        jobs = [job for job in jobs if job.id in verdicts
                and ((ready and verdicts[job.id].ready) or (blocked and not verdicts[job.id].ready))]
    if ready:  # in the order `aq run` would take them
        order_of = {job_id: index for index, job_id in enumerate(verdicts)}
        jobs.sort(key=lambda j: order_of[j.id])
    return Listing(tuple(jobs), verdicts, snapshot.problems)


def _unservable(queue: Queue, snapshot: Snapshot, verdicts: Mapping[str, Verdict]
                ) -> dict[str, Verdict]:
    """Inbox jobs no worker of the fleet could take, judged by the capabilities each worker
    published in its last heartbeat: kind "fleet", with what none of them has."""
    from aq.store.beats import worker_beats  # lazily: only with a remote

    if queue.remote is None:
        return {}
    fleet = [frozenset(str(cap) for cap in said.get("capabilities") or ())
             for ref, (_commit, payload) in queue.remote.observed_heartbeats().items()
             for said in worker_beats(ref, payload).values() if said.get("capabilities")]
    if not fleet:
        return {}

    profiles = profiles_used(queue, snapshot)
    classes = queue.config.engine_classes
    routing = Routing(profiles, classes)
    unservable = {}
    for job_id, verdict in verdicts.items():
        manifest = verdict.job.manifest
        if manifest is None or verdict.kind not in (None, "capability", "halted", "not_before",
                                                      "dep", "lock", "preferred"):
            continue
        profile = profiles.get(manifest.profile) if manifest.profile else None
        manifest = apply_profile(manifest, profile)
        engines = (routing.engines_of(manifest.engine_class, profile)
                   if manifest.engine is None and manifest.engine_class else None)
        lacking: list[list[str]] = []
        for caps in fleet:
            missing = capabilities_missing(manifest.capabilities, caps)
            if engines is not None and choose_engine(str(manifest.engine_class), engines, caps) is None:
                missing.append(f"an engine of class {manifest.engine_class} ({', '.join(engines)})")
            if not missing:
                break
            lacking.append(missing)
        else:
            fewest = min(lacking, key=len)
            unservable[job_id] = Verdict(
                verdict.job, f"no worker of the fleet ({len(fleet)} seen) has advertised "
                f"{', '.join(fewest)}", "fleet")
    return unservable


@dataclass(frozen=True, slots=True)
class NextResult:
    chosen: Job | None
    verdicts: tuple[Verdict, ...]
    jobs: Mapping[str, Job]
    halted: str | None = None
    ranked: tuple[Ranked, ...] = ()  # the ready jobs in the router's order, the chosen first


def next_job(queue: Queue, *, now: datetime, capabilities: Capabilities,
             worker_id: str | None = None) -> NextResult:
    from aq.usecases.routing import rank_ready

    snapshot = queue.snapshot()
    halted = queue.halted()
    profiles = profiles_used(queue, snapshot)
    caps = _worker_caps(capabilities, snapshot, profiles)
    verdicts = assess_inbox(queue, snapshot, now, caps, worker_id)
    ranked = rank_ready(queue, snapshot, verdicts, now, profiles=profiles, worker_caps=caps,
                        worker_id=worker_id)
    by_id = snapshot.by_id()
    chosen = by_id[ranked[0].job.id] if ranked else None
    return NextResult(chosen, tuple(verdicts), by_id, halted, tuple(ranked))
