"""What a board shows: a card per job, the stages in order, the lease holders' heartbeat ages as
this machine saw them, and the time it was read (`now`), which the cards' relative times count
from."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from aq.core.children import Family, families
from aq.core.events import iso, parse_iso
from aq.core.leases import watch_gap
from aq.core.lifecycle import STAGES, Stage
from aq.core.profile import Profile
from aq.core.scheduler import Verdict
from aq.errors import AqError
from aq.store.queue import Queue
from aq.store.snapshot import Job, Snapshot
from aq.store.sync import LeaseObserver, Remote
from aq.usecases.failures import failure_line
from aq.usecases.listing import Capabilities, list_jobs, profiles_used

ISO_LENGTH = len("2026-01-01T12:00:00.000000Z")
LOCK_WAIT = 10.0  # seconds a refresh waits for the clone's lock before showing the clone as it is


@dataclass(frozen=True, slots=True)
class Card:
    """One job as its card shows it."""

    job_id: str
    title: str
    priority: str  # critical / high / medium / low; "-" for a job whose manifest is invalid
    profile: str | None
    engine: str | None  # the job's or its profile's engine, else its engine class; None: the default
    capabilities: tuple[str, ...]  # the job's and its profile's
    tracker_item: str | None
    attempt: int  # attempts made so far
    holder: str | None  # the worker holding the lease (building jobs)
    heartbeat_age: float | None  # seconds since this machine saw the holder's heartbeat change
    blocked: str | None  # why an inbox job waits, as `aq ls` says it; None: ready (or not inbox)
    out_of_scope: int  # files changed outside the job's allowed-scope
    stage: str
    branch: str | None = None  # a job with a repo: its branch as the last attempt left it
    branch_pushed: bool = True  # False: that branch's work is not on the repo's remote yet
    cost_usd: float | None = None  # its attempts' cost, a building one's so far (None: unknown)
    started: str | None = None  # a building job: when its running attempt started (ISO, UTC)
    failure: str | None = None  # a failed or dead-lettered job: the line that says why (failures)
    parent: str | None = None  # the job it is a child of
    children: tuple[int, int] | None = None  # (settled, all) of its children; None: it has none
    retry_at: str | None = None  # an inbox job waiting out a retry's backoff: when it may start


@dataclass(frozen=True, slots=True)
class BoardData:
    # (stage, jobs in it, cards shown): shipped holds its latest few, newest first; every other
    # stage all its cards, in pick order (priority, then oldest first, then id)
    columns: tuple[tuple[str, int, tuple[Card, ...]], ...]
    halted: str | None
    workers: int  # workers whose heartbeat this machine has seen (since boot)
    problems: tuple[str, ...]
    now: datetime | None = None  # when it was read: the cards' relative times count from it


# --- gathering ---------------------------------------------------------------------------------

def board_data(
    queue: Queue,
    *,
    now: datetime,
    monotonic: float,
    fetch: bool = False,
    shipped_shown: int = 5,
    capabilities: Capabilities = None,
    shown: int | None = None,
) -> BoardData:
    """The board at `now` (`monotonic`: this machine's clock, for heartbeat ages). With `fetch`
    and a remote, the clone is brought to the remote's tip first; a remote that does not answer
    becomes a problem line and the board shows the clone as it is. `shown`: at most this many
    cards per stage are made (the first in pick order); a column still counts all its jobs."""
    problems: list[str] = []
    remote = _sync(queue, problems) if fetch else None
    listing = list_jobs(queue, now=now, capabilities=capabilities)
    observer = LeaseObserver(queue.state_dir / "leases.json")
    if remote is not None:
        _observe(queue, remote, observer, monotonic, listing.jobs, problems)
    seen = observer.workers(monotonic)
    ages = {worker: age for worker, (age, _payload) in seen.items()}
    profiles = profiles_used(queue, Snapshot(listing.jobs, listing.problems))
    kin = families(listing.jobs)
    by_stage: dict[Stage, list[Job]] = {stage: [] for stage in STAGES}
    for job in listing.jobs:
        by_stage[job.stage].append(job)
    columns = []
    for stage, jobs in by_stage.items():
        if stage is Stage.SHIPPED:
            chosen = heapq.nlargest(shipped_shown, jobs, key=_shipped_order)
        else:  # listed oldest first (then by id): a stable sort by priority gives pick order
            picked = sorted(jobs, key=_priority_rank)
            chosen = picked if shown is None else picked[:shown]
        cards = tuple(_with_family(_card(job, listing.verdicts.get(job.id), profiles, ages,
                                         _cost(queue, job)), job, kin) for job in chosen)
        columns.append((str(stage), len(jobs), cards))
    return BoardData(tuple(columns), queue.halted(), len(seen), (*problems, *listing.problems),
                     now)


def _sync(queue: Queue, problems: list[str]) -> Remote | None:
    """Bring the clone to the remote's tip, as `aq workers` does; the remote when it answered."""
    try:
        remote = queue.remote
        if remote is None:
            return None
        reachable = queue.refresh_from_remote(LOCK_WAIT)
    except AqError as err:
        problems.append(f"not synced with the remote: {err}")
        return None
    if not reachable:
        problems.append(f"cannot reach the queue's remote {remote.name!r}: showing this clone as "
                        "last fetched")
        return None
    return remote


def _observe(queue: Queue, remote: Remote, observer: LeaseObserver, monotonic: float,
             jobs: Iterable[Job], problems: list[str]) -> None:
    """Note the heartbeats just fetched, so that ages count from when this machine saw them."""
    building = {job.state.token: str(job.state.holder) for job in jobs
                if job.stage is Stage.BUILDING and job.state.token}
    config = queue.config
    try:
        with queue.lock(LOCK_WAIT):
            observer.observe(remote, monotonic, building,
                             gap=watch_gap(config.lease_ttl, config.poll))
    except AqError as err:
        problems.append(f"heartbeats not updated: {err}")


def _priority_rank(job: Job) -> int:
    return job.manifest.priority_rank if job.manifest else 99


def _shipped_order(job: Job) -> str:
    """When the job last moved, as far as its state tells without reading its events: the end
    of its last attempt, else when it was added. As aq writes it (`iso`), a time's text sorts
    as the time does; any other spelling is put in that form first."""
    state = job.state
    moved = state.attempts[-1].finished if state.attempts else None
    text = max(moved or "", state.added_at or "") or iso(job.added)
    if len(text) == ISO_LENGTH and text.endswith("Z"):
        return text
    try:
        return iso(parse_iso(text))
    except (ValueError, TypeError):
        return iso(job.added)


def _cost(queue: Queue, job: Job) -> float | None:
    from aq.usecases.spend import cost_so_far

    return cost_so_far(job.state, job.stage is Stage.BUILDING, queue.running_dir() / job.id)


def _card(job: Job, verdict: Verdict | None, profiles: Mapping[str, Profile],
          ages: Mapping[str, float | None], cost: float | None = None) -> Card:
    manifest, state = job.manifest, job.state
    profile = profiles.get(manifest.profile) if manifest and manifest.profile else None
    engine = None
    capabilities: tuple[str, ...] = ()
    if manifest is not None:
        engine = manifest.engine or (profile.engine if profile else None) \
            or manifest.engine_class or (profile.engine_class if profile else None)
        capabilities = manifest.capabilities
        if profile is not None and profile.capabilities:
            capabilities = tuple(dict.fromkeys((*capabilities, *profile.capabilities)))
    holder = state.holder if job.stage is Stage.BUILDING else None
    return Card(
        job_id=job.id,
        title=manifest.title if manifest else "(invalid manifest)",
        priority=manifest.priority if manifest else "-",
        profile=manifest.profile if manifest else None,
        engine=engine,
        capabilities=capabilities,
        tracker_item=manifest.tracker_item if manifest else None,
        attempt=state.attempt_count,
        holder=holder,
        heartbeat_age=ages.get(holder) if holder else None,
        blocked=verdict.reason if verdict is not None and not verdict.ready else None,
        out_of_scope=len(state.out_of_scope),
        stage=str(job.stage),
        branch=state.branch,
        branch_pushed=state.branch_pushed or state.branch is None,
        cost_usd=cost,
        started=state.attempts[-1].started if holder and state.attempts else None,
        failure=failure_line(state) if job.stage in (Stage.FAILED, Stage.DEAD_LETTER) else None,
        retry_at=state.not_before if verdict is not None and verdict.kind == "not_before" else None,
    )


def _with_family(card: Card, job: Job, kin: Mapping[str, Family]) -> Card:
    family = kin.get(job.id)
    children = None if family is None else (
        len(family.children) - len(family.unsettled), len(family.children))
    parent = job.manifest.parent if job.manifest else None
    return card if parent is None and children is None else replace(
        card, parent=parent, children=children)
