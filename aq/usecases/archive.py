"""`aq archive`: jobs final for long enough leave the stage folders for the archive, with their
event logs and attempt logs, a batch per commit; a job requeued from the archive comes back.

The archive is queue/archive/<yyyy>/<mm>/<nnn>/ (aq.store.layout): the year and month the job
became final, then a part of at most PART_SIZE jobs, holding <stage>/<id>.md, .events/ and
.logs/ as queue/ does. A job's stage is still the folder its file sits in, so no event moves it
there; an `archived` event says where it went. Each batch is one transaction, committed and
pushed like a person's move: a batch decided again on the remote's tip moves only the jobs
still final and due there.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aq.core.events import iso
from aq.core.lifecycle import Stage
from aq.errors import AqError
from aq.store.eventlog import parse_time
from aq.store.layout import ARCHIVE_KEYS, EVENTS_DIR, FINAL_STAGES, LOGS_DIR, PART_SIZE, Layout
from aq.store.queue import Queue
from aq.store.snapshot import Job
from aq.store.tx import Tx
from aq.usecases.tracker_posts import owed_posts

BATCH = 500  # jobs per commit: a push of a few thousand renames, one of the fleet's budget
DEFAULT_AGE = 14 * 86400.0  # `aq archive` without --older-than, when aq.yaml sets no archive_after
ARCHIVED = "archived"  # event types: where the job's files went, and that they came back
UNARCHIVED = "unarchived"


@dataclass(frozen=True, slots=True)
class ArchivedJob:
    job_id: str
    stage: Stage
    final_since: str  # the time of the move that made it final
    part: str  # where it went (or would go): queue/archive/<yyyy>/<mm>/<nnn>


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    moved: tuple[ArchivedJob, ...]  # with `dry_run`: what would move
    commits: int
    left: int = 0  # due, but beyond `limit`: the next run takes them
    kept: tuple[tuple[str, str], ...] = ()  # (job id, why) due but kept where it is
    dry_run: bool = False


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
        parts = _Parts(queue.layout)
        planned = tuple(ArchivedJob(job.id, job.stage, iso(since), queue.relative(parts.take(since)))
                        for job, since in due)
        return ArchiveResult(planned, 0, left, tuple(kept), dry_run=True)
    moved: list[ArchivedJob] = []
    commits = 0
    for start in range(0, len(due), max(1, batch)):
        chunk = [job.id for job, _ in due[start:start + max(1, batch)]]
        done = queue.transact(_archive_change(chunk, now, older_than, who),
                              f"aq: archive {len(chunk)} job(s) by {who}",
                              lambda result: f"aq: archive {len(result)} job(s) final for over "
                                             f"{older_than / 86400:g} day(s), by {who}")
        if done:
            commits += 1
            moved += done
            _drop_empty_log_folders(queue.layout, [item.job_id for item in done])
            if announce is not None:
                announce(done)
    return ArchiveResult(tuple(moved), commits, left, tuple(kept))


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
    if (refused := _unsafe_log(queue.layout, job.id)) is not None:
        return refused
    return None


def _archive_change(job_ids: Sequence[str], now: datetime, older_than: float, who: str
                    ) -> Callable[[Tx], list[ArchivedJob]]:
    """The move of `job_ids` into the archive, decided on what is on disk when it runs: a job
    no longer final or due there (requeued meanwhile, archived by another machine) stays."""

    def change(tx: Tx) -> list[ArchivedJob]:
        layout = tx.layout
        parts = _Parts(layout)
        moved = []
        keys: dict[Path, dict[str, str]] = {}  # part -> the idempotency keys it takes
        for job_id in job_ids:
            stage = tx.stage_of(job_id)
            if stage not in FINAL_STAGES:
                continue
            since = parse_time(tx.state(job_id).moved_at) or datetime.fromtimestamp(
                os.lstat(layout.job_path(stage, job_id)).st_mtime, UTC)
            if (now - since).total_seconds() <= older_than or _unsafe_log(layout, job_id):
                continue
            part = parts.take(since)
            rel = layout.relative(part)
            key = _key_of(layout.job_path(stage, job_id))
            if key:
                keys.setdefault(part, {})[key] = job_id
            tx.append_event(job_id, {"ts": iso(now), "type": ARCHIVED, "by": who, "part": rel,
                                     "why": f"final since {iso(since)[:10]}: moved to {rel}"})
            _move_files(tx, layout.qdir, part, job_id, stage)
            moved.append(ArchivedJob(job_id, stage, iso(since), rel))
        for part, taken in keys.items():
            tx.write(part / ARCHIVE_KEYS, json.dumps({**archived_keys(part), **taken},
                                                     sort_keys=True, indent=0) + "\n")
        return moved

    return change


def archived_keys(part: Path) -> dict[str, str]:
    """The idempotency keys of a part of the archive (key -> job id); {} if it has none."""
    try:
        data = json.loads((part / ARCHIVE_KEYS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _key_of(path: Path) -> str | None:
    """The idempotency key of the job file at `path` (None: none, or unreadable)."""
    from aq.core.manifest import parse_manifest

    try:
        return parse_manifest(path.stem, path.read_text(encoding="utf-8"),
                              str(path)).idempotency_key
    except (OSError, ValueError, AqError):
        return None


def unarchive(tx: Tx, job_id: str, *, who: str, now: datetime) -> Stage | None:
    """In a transaction: bring an archived job's files back to its stage folder, its event log
    and logs with it (a person requeues it, say). Its stage; None when the archive does not
    hold it. The caller's move decides: if it is refused, the transaction puts all back."""
    place = tx.layout.find_archived(job_id)
    if place is None:
        return None
    part, stage = place
    _move_files(tx, part, tx.layout.qdir, job_id, stage)
    rel = tx.layout.relative(part)
    tx.append_event(job_id, {"ts": iso(now), "type": UNARCHIVED, "by": who, "part": rel,
                             "why": f"back from {rel}"})
    return stage


def _move_files(tx: Tx, source: Path, target: Path, job_id: str, stage: Stage) -> None:
    """A job's file, event log and attempt logs from `source` (queue/ or a part of the archive)
    to the same places under `target`."""
    tx.relocate(source / stage / f"{job_id}.md", target / stage / f"{job_id}.md")
    events = source / EVENTS_DIR / f"{job_id}.jsonl"
    if os.path.lexists(events):
        tx.relocate(events, target / EVENTS_DIR / f"{job_id}.jsonl")
    logs = source / LOGS_DIR / job_id
    for path in sorted(_files(logs)):
        tx.relocate(path, target / LOGS_DIR / job_id / path.relative_to(logs))


def _files(folder: Path) -> Iterator[Path]:
    """Every file under `folder`, never entering a link."""
    for top, _dirs, names in os.walk(folder, followlinks=False):
        for name in names:
            yield Path(top) / name


def _unsafe_log(layout: Layout, job_id: str) -> str | None:
    """Why the job's logs cannot move: one is a link, a fifo...; None when all are files."""
    for top, dirs, names in os.walk(layout.logs_dir(job_id), followlinks=False):
        for name in [*names, *dirs]:
            path = Path(top) / name
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                return (f"{layout.relative(path)} is not a regular file or folder: aq moves "
                        "none of its job's files ('aq lint' names it)")
    return None


def _drop_empty_log_folders(layout: Layout, job_ids: Sequence[str]) -> None:
    """git keeps no folders: those the moved logs left empty go too."""
    for job_id in job_ids:
        logs = layout.logs_dir(job_id)
        if not os.path.isdir(logs) or os.path.islink(logs):
            continue
        for top, _dirs, _names in sorted(os.walk(logs, followlinks=False), reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(top)


class _Parts:
    """Where the next job final in a month goes: that month's last part while it holds fewer
    than PART_SIZE jobs, else a new part after it. Counted on disk once per month."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.filling: dict[tuple[int, int], list[int]] = {}  # (year, month) -> [part, jobs in it]

    def take(self, since: datetime) -> Path:
        moment = since.astimezone(UTC)
        key = (moment.year, moment.month)
        if key not in self.filling:
            parts = self.layout.month_parts(*key)
            self.filling[key] = [int(parts[-1].name), _jobs_in(parts[-1])] if parts else [1, 0]
        filling = self.filling[key]
        if filling[1] >= PART_SIZE:
            filling[0], filling[1] = filling[0] + 1, 0
        filling[1] += 1
        return self.layout.part_dir(*key, filling[0])


def _jobs_in(part: Path) -> int:
    count = 0
    for stage in FINAL_STAGES:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(part / stage) as entries:
            count += sum(1 for entry in entries if entry.name.endswith(".md"))
    return count
