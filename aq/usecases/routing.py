"""What the router (aq.core.router) is told on this machine, and its order of the ready jobs:
the repositories cached here, the claims of the last hour and the jobs running now per
repository, what an attempt typically costs on each engine. `aq run` claims by it; `aq next` shows it."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

from aq.core.lifecycle import Stage
from aq.core.profile import Profile, apply_profile
from aq.core.router import Ranked, Signals, engine_costs, rank, recent_claims, running_now
from aq.core.scheduler import Routing, Verdict
from aq.errors import AqError
from aq.store.queue import Queue
from aq.store.snapshot import Snapshot


def rank_ready(queue: Queue, snapshot: Snapshot, verdicts: Sequence[Verdict], now: datetime, *,
               profiles: Mapping[str, Profile] | None, worker_caps: frozenset[str] | None,
               worker_id: str | None = None, leaving: Collection[str] = ()) -> list[Ranked]:
    """The ready jobs (but those in `leaving`, e.g. already running here) in the order this
    worker takes them, each with its score."""
    ready = [v.job for v in verdicts if v.ready and v.job.id not in leaving]
    if not ready:
        return []
    config = queue.config
    routing = Routing(profiles, config.engine_classes, worker_id, config.prefer_window)
    repos = {repo for job in ready if job.manifest is not None and (repo := apply_profile(
        job.manifest, (profiles or {}).get(job.manifest.profile or "")).repo or config.repo)}
    signals = Signals(
        warm=warm_repos(queue, repos),
        claims=recent_claims(snapshot.jobs, now, default_repo=config.repo, profiles=routing.profiles),
        running=running_now([job for job in snapshot.jobs if job.stage is Stage.BUILDING],
                            default_repo=config.repo, profiles=routing.profiles),
        engine_costs=engine_costs(snapshot.jobs) if any(
            job.manifest is not None and job.manifest.budget is not None
            and job.manifest.budget.usd is not None for job in ready) else {},
        default_repo=config.repo, default_engine=config.default_engine)
    return rank(ready, now, signals, routing, worker_caps)


def warm_repos(queue: Queue, repos: Collection[str]) -> frozenset[str]:
    """The repositories (as jobs name them) that have a cache on this machine: a job of theirs
    starts with a fetch instead of a clone."""
    if not repos:
        return frozenset()
    # lazily: it loads git's plumbing, which a queue of jobs with no repo never needs
    from aq.infra.repocache import cache_dir_for, is_cache, resolve_repo

    root = queue.config.workspaces_root(queue.workspace_key)
    warm = set()
    for repo in repos:
        try:
            cache = cache_dir_for(resolve_repo(repo, queue.root), root)
        except AqError:  # an empty repo: the attempt says so
            continue
        if is_cache(cache):
            warm.add(repo)
    return frozenset(warm)
