"""How a job's files go into the archive and come back (aq.usecases.archive decides which).

In a git queue a batch is copied onto the archive's ref (`copy_plan`, given to
ArchiveRef.put) and then taken off the branch (`take_off`, a transaction), each job only if its
files on the branch are still the ones copied: a job changed between the two (requeued, a note
added) stays where it is, and the next run copies it again. Outside git, the files are moved
into queue/.archive in one transaction (`move_in`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from aq.core.events import Event, fold, iso
from aq.core.ids import is_job_id
from aq.core.lifecycle import Stage
from aq.store.eventlog import parse_time, read_events
from aq.store.layout import ARCHIVE_KEYS, EVENTS_DIR, FINAL_STAGES, LOGS_DIR, PART_SIZE, Layout
from aq.store.tx import Tx

if TYPE_CHECKING:  # a type only: the archive's ref module loads the sync machinery
    from aq.store.archive_ref import Content

ARCHIVED = "archived"  # event types: where the job's files went, and that they came back
UNARCHIVED = "unarchived"


@dataclass(frozen=True, slots=True)
class ArchivedJob:
    job_id: str
    stage: Stage
    final_since: str  # the time of the move that made it final
    part: str  # where it went (or would go): queue/.archive/<yyyy>/<mm>/<nnn>


@dataclass(frozen=True, slots=True)
class Copied:
    """A job as copied onto the archive's ref: what its files on the branch held then."""

    job: ArchivedJob
    base: Path  # where its files were: queue/, or a part of the branch's queue/archive
    digests: Mapping[Path, str]  # each of its files there -> its content's digest


def final_since(layout: Layout, job_id: str, stage: Stage) -> datetime:
    """When the job became final: its last move, else its file's time."""
    since = parse_time(fold(read_events(layout.events_path(job_id))).moved_at)
    return since or datetime.fromtimestamp(os.lstat(layout.job_path(stage, job_id)).st_mtime, UTC)


def due_at(layout: Layout, job_id: str, now: datetime, older_than: float) -> tuple[Stage, datetime] | None:
    """The job's final stage and since when, if it is still final and due at `now` and all
    its logs are plain files; else None."""
    stage = layout.stage_of(job_id)
    if stage not in FINAL_STAGES:
        return None
    since = final_since(layout, job_id, stage)
    if (now - since).total_seconds() <= older_than or unsafe_log(layout, job_id):
        return None
    return stage, since


def copy_plan(layout: Layout, job_ids: Sequence[str], now: datetime, older_than: float,
              who: str, copied: dict[str, Copied]) -> dict[Path, Content]:
    """What the archive's ref takes for `job_ids` (those still final and due), decided on the
    branch's files and the archive as checked out now; `copied` is filled with each job's."""
    copied.clear()
    parts = Parts(layout)
    changes: dict[Path, Content] = {}
    keys: dict[Path, dict[str, str]] = {}  # part -> the idempotency keys it takes
    for job_id in job_ids:
        found = due_at(layout, job_id, now, older_than)
        if found is None:
            continue
        stage, since = found
        files = job_files(layout.qdir, stage, job_id)
        events = layout.events_path(job_id)
        contents = _digests(files, keep={layout.job_path(stage, job_id), events})
        if contents is None:
            continue  # gone meanwhile, or a link: it stays ('aq lint' names a link)
        held, read = contents
        earlier = layout.find_archived(job_id)  # a copy an earlier run left: replaced where it is
        if earlier is not None and not layout.in_branch_archive(earlier[0]):
            part = earlier[0]
            against = _against_copy(layout, part, earlier[1], stage, job_id, held,
                                    read.get(events, b""))
            if against == AHEAD:
                continue  # copied by a machine that saw more of it: this clone's view is old
            if against == SAME:
                # another machine's copy (its take-off not landed yet, or lost): the same
                # files, so nothing changes on the ref, and this one's take-off may end it
                copied[job_id] = Copied(ArchivedJob(job_id, stage, iso(since),
                                                    layout.relative(part)), layout.qdir, held)
                continue
            changes.update(dict.fromkeys(job_files(part, earlier[1], job_id)))
        else:
            part = parts.take(since)
        rel = layout.relative(part)
        # the job's file and events copied as digested; its logs (up to log_max each, too many
        # to hold) read again by git: under the queue lock no aq changes them meanwhile, and a
        # change by anyone else shows at take-off, which then leaves the job where it is
        changes.update({part / path.relative_to(layout.qdir): read.get(path, path) for path in files})
        changes[part / events.relative_to(layout.qdir)] = with_event(read.get(events, b""), {
            "ts": iso(now), "type": ARCHIVED, "by": who, "part": rel,
            "why": f"final since {iso(since)[:10]}: moved to {rel}"})
        if (key := key_of(layout.job_path(stage, job_id))) is not None:
            keys.setdefault(part, {})[key] = job_id
        copied[job_id] = Copied(ArchivedJob(job_id, stage, iso(since), rel), layout.qdir, held)
    for part, taken in keys.items():
        changes[part / ARCHIVE_KEYS] = keys_json({**archived_keys(part), **taken})
    return changes


SAME, AHEAD, OTHER = "same", "ahead", "other"  # an archive's copy against a job's files now


def _against_copy(layout: Layout, part: Path, stage_there: Stage, stage: Stage, job_id: str,
                  digests: Mapping[Path, str], log: bytes) -> str:
    """How the archive's copy of a job in `part` compares with its files in queue/ now (their
    `digests`, its event log `log`): SAME (those files, the log with one `archived` event more),
    AHEAD (the copy's log holds all of this one and more: this clone is behind the machine
    that copied it), else OTHER (the job changed since: copied again)."""
    there = _digests(job_files(part, stage_there, job_id),
                     keep={part / EVENTS_DIR / f"{job_id}.jsonl"})
    if there is None:
        return OTHER
    found, kept = there
    head, _, last = kept.get(part / EVENTS_DIR / f"{job_id}.jsonl", b"").rstrip(b"\n") \
        .rpartition(b"\n")
    try:
        if json.loads(last).get("type") != ARCHIVED:
            return OTHER
    except (ValueError, AttributeError):
        return OTHER
    before = head + b"\n" if head else b""  # the copy's log before its `archived` event
    mine = log + (b"\n" if log and not log.endswith(b"\n") else b"")  # as with_event leaves it
    if mine and before != mine and before.startswith(mine):
        return AHEAD
    if stage_there is not stage or before != mine:
        return OTHER
    events = layout.events_path(job_id)
    ours = {path.relative_to(layout.qdir): value for path, value in digests.items() if path != events}
    theirs = {path.relative_to(part): value for path, value in found.items()
              if path.parent.name != EVENTS_DIR or path.name != f"{job_id}.jsonl"}
    return SAME if ours == theirs else OTHER


def branch_copy_plan(layout: Layout, most: int, copied: dict[str, Copied]) -> dict[Path, Content]:
    """What the archive's ref takes of the archive an earlier aq kept on the branch
    (queue/archive): up to `most` jobs, oldest part first, each into the part of the same name
    in queue/.archive, as they are (the parts of its kind are numbered after those: no clash)."""
    copied.clear()
    changes: dict[Path, Content] = {}
    for part in layout.archive_parts():
        if len(copied) >= most or not layout.in_branch_archive(part):
            break  # the branch's parts come first
        target = layout.archive_dir / part.relative_to(layout.branch_archive_dir)
        for stage, job_id in _jobs_of(part):
            files = job_files(part, stage, job_id)
            found = _digests(files)
            if found is None:
                continue  # a link or other non-file: it stays ('aq lint' names it)
            digests = found[0]
            changes.update({target / path.relative_to(part): path for path in files})
            since = fold(read_events(part / EVENTS_DIR / f"{job_id}.jsonl")).moved_at or ""
            copied[job_id] = Copied(ArchivedJob(job_id, stage, since, layout.relative(target)),
                                    part, digests)
            if len(copied) >= most:
                break
        if keys := archived_keys(part):
            changes[target / ARCHIVE_KEYS] = keys_json({**archived_keys(target), **keys})
    return changes


def _jobs_of(part: Path) -> list[tuple[Stage, str]]:
    """The jobs a part of the archive holds, by stage and id."""
    found = []
    for stage in FINAL_STAGES:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            found += [(stage, name[:-3]) for name in sorted(os.listdir(part / stage))
                      if name.endswith(".md") and is_job_id(name[:-3])]
    return found


def take_off(copied: Mapping[str, Copied]) -> Callable[[Tx], list[ArchivedJob]]:
    """The branch's side of a batch: each copied job's files removed, if they are still what
    was copied (a job requeued or written to meanwhile stays; the next run copies it again).
    A part of the branch's queue/archive left with no job loses its keys too."""

    def change(tx: Tx) -> list[ArchivedJob]:
        done = []
        emptied = set()
        for job_id, copy in copied.items():
            files = job_files(copy.base, copy.job.stage, job_id)
            found = _digests(files)
            if found is None or found[0] != copy.digests:
                continue
            for path in files:
                tx.remove(path)
            done.append(copy.job)
            if copy.base != tx.layout.qdir:
                emptied.add(copy.base)
        for part in emptied:
            leftovers = [part / ARCHIVE_KEYS, *(part / stage / ".gitkeep" for stage in FINAL_STAGES)]
            if not _jobs_of(part):
                for path in leftovers:
                    if os.path.isfile(path):
                        tx.remove(path)
        return done

    return change


def _digests(files: Sequence[Path], keep: Container[Path] = ()
             ) -> tuple[dict[Path, str], dict[Path, bytes]] | None:
    """Each file's content digest, and the bytes of those in `keep` (read once: what is copied
    is what was digested); None when one is gone or is not a plain file (never read through a
    link)."""
    from aq.errors import UnsafePath
    from aq.infra.confine import read_regular

    digests, kept = {}, {}
    try:
        for path in files:
            data = read_regular(path)
            digests[path] = digest(data)
            if path in keep:
                kept[path] = data
    except (OSError, UnsafePath):
        return None
    return digests, kept


def move_in(job_ids: Sequence[str], now: datetime, older_than: float, who: str
            ) -> Callable[[Tx], list[ArchivedJob]]:
    """Outside git: the move of `job_ids` into queue/.archive in one transaction, decided on
    what is on disk when it runs (a job no longer final or due there stays)."""

    def change(tx: Tx) -> list[ArchivedJob]:
        layout = tx.layout
        parts = Parts(layout)
        moved = []
        keys: dict[Path, dict[str, str]] = {}
        for job_id in job_ids:
            found = due_at(layout, job_id, now, older_than)
            if found is None:
                continue
            stage, since = found
            part = parts.take(since)
            rel = layout.relative(part)
            if (key := key_of(layout.job_path(stage, job_id))) is not None:
                keys.setdefault(part, {})[key] = job_id
            tx.append_event(job_id, {"ts": iso(now), "type": ARCHIVED, "by": who, "part": rel,
                                     "why": f"final since {iso(since)[:10]}: moved to {rel}"})
            move_files(tx, layout.qdir, part, job_id, stage)
            moved.append(ArchivedJob(job_id, stage, iso(since), rel))
        for part, taken in keys.items():
            tx.write(part / ARCHIVE_KEYS, keys_json({**archived_keys(part), **taken}))
        return moved

    return change


def bring_back(tx: Tx, part: Path, job_id: str, stage: Stage) -> None:
    """A job's files from a part of the archive to queue/: moved from one on the branch or
    outside git, copied from the archive's ref (whose copy the stage folder's then outranks)."""
    if tx.layout.git_dir is None or tx.layout.in_branch_archive(part):
        move_files(tx, part, tx.layout.qdir, job_id, stage)
        return
    for path in job_files(part, stage, job_id):
        tx.write(tx.layout.qdir / path.relative_to(part), path.read_bytes())


def move_files(tx: Tx, source: Path, target: Path, job_id: str, stage: Stage) -> None:
    """A job's file, event log and attempt logs from `source` (queue/ or a part of the archive)
    to the same places under `target`."""
    for path in job_files(source, stage, job_id):
        tx.relocate(path, target / path.relative_to(source))


def job_files(base: Path, stage: Stage, job_id: str) -> list[Path]:
    """A job's files under `base` (queue/ or a part of the archive): its file, its event log
    if it has one, its attempt logs."""
    files = [base / stage / f"{job_id}.md"]
    if os.path.lexists(events := base / EVENTS_DIR / f"{job_id}.jsonl"):
        files.append(events)
    return files + sorted(_files(base / LOGS_DIR / job_id))


def _files(folder: Path) -> Iterator[Path]:
    """Every file under `folder`, never entering a link."""
    for top, _dirs, names in os.walk(folder, followlinks=False):
        for name in names:
            yield Path(top) / name


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def with_event(log: bytes, event: Event) -> bytes:
    """An event log with `event` appended (on a line of its own after a torn last line)."""
    line = json.dumps(event, separators=(",", ":"), ensure_ascii=False, default=str) + "\n"
    return log + (b"\n" if log and not log.endswith(b"\n") else b"") + line.encode()


def keys_json(keys: Mapping[str, str]) -> bytes:
    return (json.dumps(dict(keys), sort_keys=True, indent=0) + "\n").encode()


def archived_keys(part: Path) -> dict[str, str]:
    """The idempotency keys of a part of the archive (key -> job id); {} if it has none."""
    try:
        data = json.loads((part / ARCHIVE_KEYS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def key_of(path: Path) -> str | None:
    """The idempotency key of the job file at `path` (None: none, or unreadable)."""
    from aq.core.manifest import parse_manifest
    from aq.errors import AqError

    try:
        return parse_manifest(path.stem, path.read_text(encoding="utf-8"),
                              str(path)).idempotency_key
    except (OSError, ValueError, AqError):
        return None


def unsafe_log(layout: Layout, job_id: str) -> str | None:
    """Why the job's logs cannot move: one is a link, a fifo...; None when all are files."""
    import stat

    for top, dirs, names in os.walk(layout.logs_dir(job_id), followlinks=False):
        for name in [*names, *dirs]:
            path = Path(top) / name
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                return (f"{layout.relative(path)} is not a regular file or folder: aq moves "
                        "none of its job's files ('aq lint' names it)")
    return None


def drop_empty_folders(layout: Layout, job_ids: Sequence[str]) -> None:
    """git keeps no folders: those the moved jobs' logs left empty go too, and those of the
    branch's queue/archive once it is all moved over."""
    for folder in [*(layout.logs_dir(job_id) for job_id in job_ids), layout.branch_archive_dir]:
        if not os.path.isdir(folder) or os.path.islink(folder):
            continue
        for top, _dirs, _names in sorted(os.walk(folder, followlinks=False), reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(top)  # only an empty one


class Parts:
    """Where the next job final in a month goes: that month's last part while it holds fewer
    than PART_SIZE jobs (and is not one the branch kept), else a new part after it. Counted on
    disk once per month."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.filling: dict[tuple[int, int], list[int]] = {}  # (year, month) -> [part, jobs in it]

    def take(self, since: datetime) -> Path:
        moment = since.astimezone(UTC)
        key = (moment.year, moment.month)
        if key not in self.filling:
            parts = self.layout.month_parts(*key)
            if not parts:
                self.filling[key] = [1, 0]
            elif self.layout.in_branch_archive(parts[-1]):
                self.filling[key] = [int(parts[-1].name), PART_SIZE]  # a new part after it
            else:
                self.filling[key] = [int(parts[-1].name), len(_jobs_of(parts[-1]))]
        filling = self.filling[key]
        if filling[1] >= PART_SIZE:
            filling[0], filling[1] = filling[0] + 1, 0
        filling[1] += 1
        return self.layout.part_dir(*key, filling[0])
