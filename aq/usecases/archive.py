"""`aq archive`: jobs final for long enough leave the stage folders for the archive, with their
event logs and attempt logs, a batch at a time; a job requeued from the archive comes back.

The archive is queue/.archive/<yyyy>/<mm>/<nnn>/ (aq.store.layout): the year and month the job
became final, then a part of at most PART_SIZE jobs, holding <stage>/<id>.md, .events/ and
.logs/ as queue/ does. In a git queue it is the checkout of a ref of its own
(aq.store.archive_ref), so the branch every claim pushes holds only the live queue: a batch is
copied onto that ref, then taken off the branch in one transaction (aq.usecases.archive_moves).
Each side is a compare-and-swap decided again on the remote's tip. A job's stage is still the
folder its file sits in, so no event moves it there; an `archived` event says where it went.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from aq.core.events import iso
from aq.core.lifecycle import Stage
from aq.errors import ArchiveWaits
from aq.store.eventlog import parse_time
from aq.store.layout import FINAL_STAGES
from aq.store.queue import Queue
from aq.store.snapshot import Job
from aq.store.tx import Tx
from aq.usecases.archive_moves import (
    ARCHIVED,
    UNARCHIVED,
    ArchivedJob,
    Copied,
    Parts,
    archived_keys,
    branch_copy_plan,
    bring_back,
    copy_plan,
    drop_empty_folders,
    move_in,
    take_off,
    unsafe_log,
)
from aq.usecases.tracker_posts import owed_posts

if TYPE_CHECKING:  # a type only: the archive's ref module loads the sync machinery
    from aq.store.archive_ref import Content

__all__ = ["ARCHIVED", "UNARCHIVED", "ArchiveResult", "ArchivedJob", "archive", "archived_keys",
           "unarchive"]

BATCH = 500  # jobs per commit: a push of a few thousand files, one of the fleet's budget
DEFAULT_AGE = 14 * 86400.0  # `aq archive` without --older-than, when aq.yaml sets no archive_after


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    moved: tuple[ArchivedJob, ...]  # with `dry_run`: what would move
    commits: int  # on the queue's branch
    left: int = 0  # due, but beyond `limit`: the next run takes them
    kept: tuple[tuple[str, str], ...] = ()  # (job id, why) due but kept where it is
    dry_run: bool = False
    moved_over: int = 0  # jobs moved from the branch's queue/archive (an earlier aq's) to the ref


def archive(queue: Queue, *, now: datetime, older_than: float, limit: int | None = None,
            dry_run: bool = False, who: str = "aq", batch: int = BATCH,
            announce: Callable[[Sequence[ArchivedJob]], None] | None = None) -> ArchiveResult:
    """Move every job final (shipped, failed, dead letter) for more than `older_than` seconds
    into the archive, oldest first, at most `limit` of them (None: all), `batch` per commit.
    `announce` hears of each batch once it is committed (and pushed, with a remote). A job with
    a post still owed to its tracker item stays until the post is sent."""
    due, kept = _due(queue, now, older_than)
    left = max(0, len(due) - limit) if limit is not None else 0
    due = due[:limit] if limit is not None else due
    if dry_run:
        parts = Parts(queue.layout)
        planned = tuple(ArchivedJob(job.id, job.stage, iso(since), queue.relative(parts.take(since)))
                        for job, since in due)
        over = len(branch_copy_plan(queue.layout, limit or sys.maxsize, {})) \
            if queue.archive_ref is not None else 0
        return ArchiveResult(planned, 0, left, tuple(kept), dry_run=True, moved_over=over)
    _check_fleet_reads_the_ref(queue)
    moved: list[ArchivedJob] = []
    commits = 0
    for start in range(0, len(due), max(1, batch)):
        chunk = [job.id for job, _ in due[start:start + max(1, batch)]]
        done = _batch(queue, chunk, now, older_than, who)
        if done:
            commits += 1
            moved += done
            drop_empty_folders(queue.layout, [item.job_id for item in done])
            if announce is not None:
                announce(done)
    over, over_commits = _move_branch_archive(queue, limit, batch, who)
    if over:
        drop_empty_folders(queue.layout, [])
    return ArchiveResult(tuple(moved), commits + over_commits, left, tuple(kept), moved_over=over)


def _check_fleet_reads_the_ref(queue: Queue) -> None:
    """Refuse while a machine whose heartbeat is on the remote (as last fetched) runs an older
    aq: it reads no archive off the branch, so a job archived now would vanish from its view
    (its inbox jobs that need it would wait forever there)."""
    remote = queue.remote
    if remote is None:
        return
    from aq.store.beats import ARCHIVE_REF, goodbye
    from aq.store.sync import WORKER_REFS

    older = sorted(machine for machine, (_commit, payload) in remote.observed_heartbeats().items()
                   if not goodbye(payload) and ARCHIVE_REF not in (payload.get("reads") or ()))
    if older:
        raise ArchiveWaits(
            f"{', '.join(older)} run(s) an older aq, which cannot read the archive on its own "
            f"ref: archiving waits until they run this aq or stop (a machine gone for good: "
            f"git push {remote.name} :{WORKER_REFS}/{older[0]})")


def _batch(queue: Queue, chunk: Sequence[str], now: datetime, older_than: float, who: str
           ) -> list[ArchivedJob]:
    """One batch archived: copied onto the archive's ref, then taken off the branch (outside
    git: moved, in one transaction). The jobs that moved."""
    def describe(result: list[ArchivedJob]) -> str:
        return (f"aq: archive {len(result)} job(s) final for over {older_than / 86400:g} "
                f"day(s), by {who}")

    message = f"aq: archive {len(chunk)} job(s) by {who}"
    if queue.archive_ref is None:
        return queue.transact(move_in(chunk, now, older_than, who), message, describe)
    return _copy_then_take_off(
        queue, lambda copied: copy_plan(queue.layout, chunk, now, older_than, who, copied),
        message, describe)


def _copy_then_take_off(queue: Queue, plan: Callable[[dict[str, Copied]], Mapping[Path, Content]],
                        message: str, describe: Callable[[list[ArchivedJob]], str]
                        ) -> list[ArchivedJob]:
    """A batch copied onto the archive's ref as `plan` says (filling in what it copied), then
    taken off the branch, in a commit `describe` names with where the files went: the jobs
    that moved."""
    shelf = queue.archive_ref
    assert shelf is not None
    copied: dict[str, Copied] = {}
    commit = shelf.put(lambda: plan(copied), message, queue.identity or [], queue.lock)
    if not copied:
        return []
    return queue.transact(take_off(copied), message,
                          lambda result: f"{describe(result)}\n\nTheir files are in "
                                         f"{shelf.ref} {commit}.")


def _move_branch_archive(queue: Queue, limit: int | None, batch: int, who: str
                         ) -> tuple[int, int]:
    """Move what an earlier aq archived on the branch (queue/archive) to the archive's ref, at
    most `limit` jobs, `batch` a commit: the jobs moved, and the commits of the branch."""
    if queue.archive_ref is None or not os.path.isdir(queue.layout.branch_archive_dir):
        return 0, 0
    moved = commits = 0
    while limit is None or moved < limit:
        done = _move_branch_batch(queue, max(1, min(batch, sys.maxsize if limit is None
                                                    else limit - moved)), who)
        if not done:
            break  # none left, or all changed meanwhile: the next run
        moved, commits = moved + done, commits + 1
    return moved, commits


def _move_branch_batch(queue: Queue, most: int, who: str) -> int:
    """Up to `most` jobs of the branch's queue/archive copied onto the archive's ref, then
    taken off the branch: how many were."""
    return len(_copy_then_take_off(
        queue, lambda copied: branch_copy_plan(queue.layout, most, copied),
        f"aq: archive up to {most} job(s) from queue/archive, by {who}",
        lambda result: f"aq: move {len(result)} archived job(s) from queue/archive to the "
                       f"archive's own ref, by {who}"))


def _due(queue: Queue, now: datetime, older_than: float
         ) -> tuple[list[tuple[Job, datetime]], list[tuple[str, str]]]:
    """The final jobs due, oldest first, each with the time it became final; and those due but
    kept where they are, with why."""
    due, kept = [], []
    for job in queue.snapshot().jobs:
        if job.stage not in FINAL_STAGES:
            continue
        since = parse_time(job.state.moved_at) or job.added
        if (now - since).total_seconds() <= older_than:
            continue
        why = _kept_because(queue, job)
        if why:
            kept.append((job.id, why))
        else:
            due.append((job, since))
    due.sort(key=lambda item: (item[1], item[0].id))
    return due, kept


def _kept_because(queue: Queue, job: Job) -> str | None:
    if job.error:
        return f"{job.error} ('aq lint' names it)"
    if job.manifest is not None and job.manifest.tracker_item and owed_posts(
            job, queue.read_events(job.id)):
        return (f"a post to its tracker item {job.manifest.tracker_item} is still owed "
                f"('aq to-tracker {job.id}' sends it)")
    if (refused := unsafe_log(queue.layout, job.id)) is not None:
        return refused
    return None


def unarchive(tx: Tx, job_id: str, *, who: str, now: datetime) -> Stage | None:
    """In a transaction: bring an archived job's files back to its stage folder, its event log
    and logs with it (a person requeues it, say). Its stage; None when the archive does not
    hold it. The caller's move decides: if it is refused, the transaction puts all back."""
    place = tx.layout.find_archived(job_id)
    if place is None:
        return None
    part, stage = place
    bring_back(tx, part, job_id, stage)
    rel = tx.layout.relative(part)
    tx.append_event(job_id, {"ts": iso(now), "type": UNARCHIVED, "by": who, "part": rel,
                             "why": f"back from {rel}"})
    return stage
