"""Every job of the queue at one moment, read through a cache of what each file parsed to.

A listing of 10,000 jobs must stay fast (`aq ls` is on the path of every command), so a job
file or event log is parsed again only when its stat signature changed.

A snapshot holds the jobs of the stage folders: the archive (queue/.archive/, see
aq.store.layout) is never listed by it, so `aq ls`, `aq next` and a worker's claim cost the same
however many jobs were archived. It is searched only for an id no stage folder holds: a job
named by a command, an inbox job's dep. `read_everything` lists the archive too (`aq ls --all`),
through a cache of its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISREG
from typing import Any

from aq.core.events import JobState, fold
from aq.core.ids import check_job_id, is_job_id, slugify
from aq.core.lifecycle import STAGES, Stage
from aq.core.manifest import MAX_JOB_BYTES, Manifest, parse_manifest, too_big
from aq.core.scheduler import JobView
from aq.errors import AmbiguousJob, JobNotFound, ManifestError, UnsafePath
from aq.infra.confine import entry_refusal, read_regular
from aq.infra.files import Signature, StatCache, signature
from aq.store.eventlog import parse_time, read_events
from aq.store.layout import (
    ARCHIVE_KEYS,
    CACHE_VERSION,
    EVENTS_DIR,
    FINAL_STAGES,
    HALT_FILE,
    LOGS_DIR,
    QUEUE_DIR,
    Layout,
)

# The state of every job with no event log (dropped by hand, not yet adopted): one frozen
# object, so the cache pickles it once and a reader makes it once, not once per job.
NO_EVENTS = JobState()


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    stage: Stage
    folder: Path  # the stage folder: shared by every job in it, so a listing builds few paths
    manifest: Manifest | None
    error: str | None
    state: JobState
    added: datetime
    archived: bool = False  # in a part of the archive (folder: queue/.archive/<y>/<m>/<n>/<stage>)

    @property
    def path(self) -> Path:
        return self.folder / f"{self.id}.md"

    @property
    def events_path(self) -> Path:
        """Its event log, beside its stage folder: in queue/.events/, or in its archive part's."""
        return self.folder.parent / EVENTS_DIR / f"{self.id}.jsonl"

    @property
    def logs_dir(self) -> Path:
        """Its attempt logs, beside its stage folder, like its event log."""
        return self.folder.parent / LOGS_DIR / self.id

    def view(self) -> JobView:
        return JobView(self.id, self.stage, self.manifest, self.state, self.added, self.error)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every job of the queue at one moment, plus files that are not jobs."""

    jobs: tuple[Job, ...]
    problems: tuple[str, ...]  # files in stage folders that cannot be jobs, a job in two stages
    # inbox jobs' deps found in the archive, by stage alone (nothing of them is read): the
    # scheduler sees a dep shipped long ago as shipped; listings never show them
    archived_deps: tuple[Job, ...] = ()
    layout: Layout | None = None  # where `resolve` looks for an id no job here has

    def by_id(self) -> dict[str, Job]:
        return {job.id: job for job in self.jobs}

    def views(self) -> list[JobView]:
        return [job.view() for job in (*self.jobs, *self.archived_deps)]


def read_snapshot(layout: Layout) -> Snapshot:
    """All jobs of the stage folders, read through the manifest/state cache (a file is parsed
    again only if it changed). A job file or event log that is a link (or no regular file) is
    never read: the job is listed with that as its error, so no worker takes it and `aq lint`
    names it. The archive is not listed (see the module's note)."""
    layout.check_folders()
    cache = _JobCache.load(layout.state_dir / "cache.pickle")
    listing = _Listing(cache)
    listing.add_folder(layout.qdir, QUEUE_DIR, STAGES)
    cache.save(keep=listing.seen.keys())
    return listing.snapshot(_archived_deps(layout, listing), layout)


def read_everything(layout: Layout, live: Snapshot | None = None) -> Snapshot:
    """The jobs of the stage folders (`live`, if just read), then every archived one
    (`archived`), read through a cache of the archive's own (`aq ls --all`). A job in two parts
    of the archive's ref, or in two of the branch's queue/archive, or in a stage folder and
    the branch's queue/archive, is a problem, and its first copy carries it as its error. Half
    a move leaves a job in two places, which is no problem: the ref may still hold a copy of a
    job that came back to a stage folder (the stage folder's is the job), and the branch's
    queue/archive one of a job moved over to the ref (the ref's is)."""
    live = live or read_snapshot(layout)
    cache = _JobCache.load(layout.state_dir / "archive-cache.pickle")
    listing = _Listing(cache)
    listing.jobs, listing.seen = list(live.jobs), {job.id: str(job.stage) for job in live.jobs}
    live_ids = frozenset(listing.seen)
    parts = layout.archive_parts()
    on_branch = [part for part in parts if layout.in_branch_archive(part)]
    for part in [part for part in parts if part not in on_branch]:  # the ref's parts first
        rel = layout.relative(part)
        listing.add_folder(part, rel, _stage_folders(part, rel, listing.problems), archived=True,
                           outranked=live_ids)
    in_ref = frozenset(listing.seen) - live_ids
    for part in on_branch:
        rel = layout.relative(part)
        listing.add_folder(part, rel, _stage_folders(part, rel, listing.problems), archived=True,
                           outranked=in_ref)
    cache.save(keep=[job.id for job in listing.jobs[len(live.jobs):]])
    return Snapshot(tuple(listing.jobs), (*live.problems, *listing.snapshot().problems),
                    live.archived_deps, layout)


def _stage_folders(part: Path, rel: str, problems: list[str]) -> list[Stage]:
    """The final stages a part has a folder for; anything else in it is named as a problem."""
    stages = []
    try:
        with os.scandir(part) as entries:
            found = list(entries)
    except OSError:
        return []
    for entry in found:
        if entry.name in FINAL_STAGES and entry.is_dir(follow_symlinks=False):
            stages.append(Stage(entry.name))
        elif entry.name == ARCHIVE_KEYS and entry.is_file(follow_symlinks=False):
            continue  # the part's idempotency keys
        elif entry.name not in (EVENTS_DIR, LOGS_DIR) or not entry.is_dir(follow_symlinks=False):
            problems.append(f"{rel}/{entry.name}: not a part of the archive (it holds only "
                            f"{', '.join(FINAL_STAGES)}, {EVENTS_DIR} and {LOGS_DIR} folders "
                            f"and {ARCHIVE_KEYS}): move it out of the archive")
    return sorted(stages, key=FINAL_STAGES.index)


def _archived_deps(layout: Layout, listing: _Listing) -> tuple[Job, ...]:
    """The deps of inbox jobs that no stage folder holds but the archive does, known by their
    stage alone: the archive is searched (a stat per part) only for those, and read not at all."""
    missing = {dep for job in listing.jobs if job.stage is Stage.INBOX and job.manifest
               for dep in job.manifest.deps if dep not in listing.seen and is_job_id(dep)}
    found = []
    for dep in sorted(missing):
        place = layout.find_archived(dep)
        if place is not None:
            part, stage = place
            found.append(Job(dep, stage, part / stage, None, None, NO_EVENTS,
                             datetime.fromtimestamp(0, UTC), archived=True))
    return tuple(found)


def read_job(layout: Layout, job_id: str) -> Job | None:
    """The job `job_id` read alone (a stat per stage, its file and its event log), for a command
    that names a job by its whole id; None when anything about it needs the whole snapshot to
    be said right: no such file, a copy in two stages, a link or other non-file in the way. An
    id that no stage folder holds is looked for in the archive."""
    if not is_job_id(job_id):
        return None
    layout.check_folders()
    found = []
    for stage in STAGES:
        try:
            found.append((stage, os.lstat(layout.qdir / stage / f"{job_id}.md")))
        except FileNotFoundError:
            continue
    if not found:
        return read_archived(layout, job_id)
    if len(found) != 1:
        return None
    (where, file_stat), = found
    return _read_alone(layout, job_id, layout.qdir, where, file_stat)


def read_archived(layout: Layout, job_id: str) -> Job | None:
    """The archived job `job_id` read alone; None when the archive does not hold it (or holds
    a link or other non-file in its place, which `read_everything` names)."""
    place = layout.find_archived(job_id)
    if place is None:
        return None
    part, stage = place
    try:
        file_stat = os.lstat(part / stage / f"{job_id}.md")
    except FileNotFoundError:
        return None
    return _read_alone(layout, job_id, part, stage, file_stat, archived=True)


def _read_alone(layout: Layout, job_id: str, base: Path, stage: Stage, file_stat: os.stat_result,
                archived: bool = False) -> Job | None:
    """The job whose file is `base`/`stage`/<id>.md, its event log in `base`/.events/."""
    events = base / EVENTS_DIR / f"{job_id}.jsonl"
    try:
        events_stat: os.stat_result | None = os.lstat(events)
    except FileNotFoundError:
        events_stat = None
    if not S_ISREG(file_stat.st_mode) or (
            events_stat is not None and not S_ISREG(events_stat.st_mode)):
        return None
    rel = layout.relative(base)
    fresh = _JobCache(StatCache(layout.state_dir / "cache.pickle", CACHE_VERSION), {})
    manifest, error = fresh.manifest(job_id, signature(file_stat), base / stage,
                                     f"{job_id}.md", f"{rel}/{stage}/{job_id}.md")
    state = fresh.state(job_id, None if events_stat is None else signature(events_stat),
                        base / EVENTS_DIR)
    added = parse_time(state.added_at) or datetime.fromtimestamp(file_stat.st_mtime, UTC)
    return Job(job_id, stage, base / stage, manifest, error, state, added, archived)


def resolve(ref: str, snapshot: Snapshot) -> Job:
    """The job whose id is `ref` or the only one starting with it. One the snapshot does not
    have is looked for in the archive (when the snapshot knows where the queue is): by its
    whole id, then as a prefix of the archived ids (which lists the archive's job folders)."""
    if not ref.strip() or "/" in ref or "\\" in ref or ".." in ref:
        check_job_id(ref.strip())  # raises: a path (or nothing) is never a job id
    ref = ref.removesuffix(".md")
    by_id = snapshot.by_id()
    if ref in by_id:
        return by_id[ref]
    matches = sorted(job_id for job_id in by_id if job_id.startswith(ref))
    if not matches and snapshot.layout is not None and snapshot.layout.archive_parts():
        return _resolve_archived(ref, snapshot.layout)
    if not matches:
        raise JobNotFound(f"no job {ref!r} in this queue: 'aq ls' lists the jobs")
    if len(matches) > 1:
        raise _ambiguous(ref, matches)
    return by_id[matches[0]]


def _resolve_archived(ref: str, layout: Layout) -> Job:
    if is_job_id(ref):
        job = read_archived(layout, ref)
        if job is not None:
            return job
    matches = sorted(job_id for job_id in archived_ids(layout) if job_id.startswith(ref))
    if not matches:
        raise JobNotFound(f"no job {ref!r} in this queue, nor in its archive: 'aq ls --all' "
                          "lists the jobs")
    if len(matches) > 1:
        raise _ambiguous(ref, matches)
    job = read_archived(layout, matches[0])
    if job is None:
        raise JobNotFound(f"{matches[0]} left the archive while it was read: try again")
    return job


def _ambiguous(ref: str, matches: list[str]) -> AmbiguousJob:
    shown = ", ".join(matches[:5]) + (" ..." if len(matches) > 5 else "")
    return AmbiguousJob(f"{ref!r} matches {len(matches)} jobs ({shown}): give more of the id")


def archived_ids(layout: Layout) -> set[str]:
    """The id of every archived job: a listing of each part's stage folders, nothing read."""
    ids: set[str] = set()
    for part in layout.archive_parts():
        for stage in FINAL_STAGES:
            try:
                with os.scandir(part / stage) as entries:
                    ids.update(entry.name[:-3] for entry in entries if entry.name.endswith(".md"))
            except (FileNotFoundError, NotADirectoryError):
                continue
    return ids


def halted(layout: Layout) -> str | None:
    """The halt reason when queue/HALT exists, else None."""
    try:
        text = read_regular(layout.qdir / HALT_FILE, f"{QUEUE_DIR}/{HALT_FILE}").decode(
            "utf-8", "replace").strip()
    except FileNotFoundError:
        return None
    except UnsafePath as err:  # there all the same: the kill switch holds, unread
        return str(err)
    return text.splitlines()[0] if text else "halted"


class _Listing:
    """The jobs found so far, folder by folder, and the files that cannot be jobs."""

    def __init__(self, cache: _JobCache) -> None:
        self.cache = cache
        self.jobs: list[Job] = []
        self.problems: list[str] = []
        self.seen: dict[str, str] = {}  # job id -> where it is: its stage, or its archive place
        self.unread: list[str] = []  # event logs that are not read (links...) of no listed job

    def snapshot(self, archived_deps: tuple[Job, ...] = (), layout: Layout | None = None
                 ) -> Snapshot:
        return Snapshot(tuple(self.jobs), (*self.problems, *self.unread), archived_deps, layout)

    def add_folder(self, base: Path, rel: str, stages: Iterable[Stage],
                   archived: bool = False, outranked: frozenset[str] = frozenset()) -> None:
        """The jobs of `base` (queue/, or a part of the archive; `rel` names it in problems):
        its stage folders' files, their event logs in its .events/; not those of `outranked`
        (jobs whose copy elsewhere is the job)."""
        events = _Events(base / EVENTS_DIR, f"{rel}/{EVENTS_DIR}")
        for stage in stages:
            folder = base / stage
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                continue
            for entry in entries:
                if (not entry.name.startswith(".") and entry.name.endswith(".md")
                        and entry.name[:-3] not in outranked):
                    self._add(stage, folder, f"{rel}/{stage}", entry, events, archived)
        self.unread += events.refused.values()

    def _add(self, stage: Stage, folder: Path, rel_folder: str, entry: os.DirEntry[str],
             events: _Events, archived: bool) -> None:
        name = entry.name
        job_id = name[:-3]
        rel = f"{rel_folder}/{name}"
        unread = None if entry.is_file(follow_symlinks=False) else entry_refusal(rel, entry)
        if unread is None and entry.is_dir(follow_symlinks=False):
            self.problems.append(f"{rel}: a folder where a job file belongs; aq reads no folders "
                                 f"in {rel_folder}/: move it out of queue/")
            return
        if not is_job_id(job_id):
            self.problems.append(f"{rel}: the file name is not a job id (lower-case letters, digits, "
                                 f"'-', '_', '.'): rename it, e.g. to {_suggest_name(job_id)}.md")
            return
        if job_id in self.seen:
            self._twice(job_id, f"{rel}: job {job_id} is also in {self.seen[job_id]}: "
                                "a job must be in exactly one stage (run 'aq lint')")
            return
        try:
            stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # moved on since the folder was listed (a reader
            return  # without the lock): it is in the stage it moved to, or next time
        self.seen[job_id] = rel_folder if archived else str(stage)
        unread = unread or events.refused.pop(job_id, None)
        manifest, error = (None, unread) if unread else self.cache.manifest(
            job_id, signature(stat), folder, name, rel)
        state = self.cache.state(job_id, events.sigs.get(job_id), events.folder)
        added = parse_time(state.added_at) or datetime.fromtimestamp(stat.st_mtime, UTC)
        self.jobs.append(Job(job_id, stage, folder, manifest, error, state, added, archived))

    def _twice(self, job_id: str, problem: str) -> None:
        """The first copy is not taken, nor moved, until a person removes one."""
        self.problems.append(problem)
        first = next(i for i, job in enumerate(self.jobs) if job.id == job_id)
        self.jobs[first] = replace(self.jobs[first], error=self.jobs[first].error or problem)


class _Events:
    """One .events folder: each job's event log by its stat signature, and the logs that are
    not read (job id -> why)."""

    def __init__(self, folder: Path, rel: str) -> None:
        self.folder = folder
        self.sigs: dict[str, Signature] = {}
        self.refused: dict[str, str] = {}
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if not entry.name.endswith(".jsonl"):
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        line = entry_refusal(f"{rel}/{entry.name}", entry)
                        if line:
                            self.refused[entry.name[:-6]] = line
                        continue
                    self.sigs[entry.name[:-6]] = signature(entry.stat(follow_symlinks=False))
        except FileNotFoundError:
            pass


def _suggest_name(stem: str) -> str:
    return slugify(stem) or "job"


# A cache changed in fewer entries than this is not rewritten: the next reader parses those few
# files again (about a millisecond each), where rewriting the cache of 10,000 jobs takes 0.4 s.
SAVE_AFTER = 32

# What this process last loaded or saved, by cache file: a long-lived process (aq web, aq dash,
# a worker) reuses it while the file is unchanged rather than unpickling it on every read; with
# how many of its entries the file lacks, so that they count towards the next rewrite.
_MEMO: dict[Path, tuple[Signature, dict[str, Any], int]] = {}
_MEMO_LOCK = threading.Lock()


class _JobCache:
    """Parsed manifests and folded states, each keyed by its file's stat signature.

    Kept in the state folder (not committed). A stale or unreadable cache is simply rebuilt.
    """

    def __init__(self, store: StatCache, data: dict[str, Any]) -> None:
        self.store = store
        self.manifests: dict[str, tuple[Signature, Manifest | None, str | None]] = data.get("m", {})
        self.states: dict[str, tuple[Signature | None, JobState]] = data.get("s", {})
        self.changed = 0  # entries parsed again or dropped that the file does not have

    @classmethod
    def load(cls, path: Path) -> _JobCache:
        store = StatCache(path, CACHE_VERSION)
        held = _file_signature(path)
        with _MEMO_LOCK:
            memo = _MEMO.get(path)
        if held is not None and memo is not None and memo[0] == held:
            data = memo[1]  # copied: each reader changes its own
            cache = cls(store, {"m": dict(data["m"]), "s": dict(data["s"])})
            cache.changed = memo[2]
            return cache
        loaded = store.load(None)  # no one key: each entry keeps its own signature
        cache = cls(store, loaded if isinstance(loaded, dict) else {})
        if held is not None and isinstance(loaded, dict):
            cache._remember(held)
        return cache

    def manifest(self, job_id: str, sig: Signature, folder: Path, name: str, rel: str
                 ) -> tuple[Manifest | None, str | None]:
        hit = self.manifests.get(job_id)
        if hit is not None and hit[0] == sig and (hit[2] is None or hit[2].startswith(rel + ":")):
            return hit[1], hit[2]  # an error names the file's path: it must be where it was
        try:
            if sig[1] > MAX_JOB_BYTES:  # refused unread
                raise too_big(rel, sig[1])
            text = read_regular(folder / name, rel).decode("utf-8")
            manifest: Manifest | None = parse_manifest(job_id, text, rel)
            error = None
        except (ManifestError, UnsafePath) as err:
            manifest, error = None, str(err)
        except (OSError, UnicodeDecodeError) as err:
            manifest, error = None, f"{rel}: cannot read: {err}"
        self.manifests[job_id] = (sig, manifest, error)
        self.changed += 1
        return manifest, error

    def state(self, job_id: str, sig: Signature | None, events_dir: Path) -> JobState:
        hit = self.states.get(job_id)
        if hit is not None and hit[0] == sig:
            return hit[1]
        state = fold(read_events(events_dir / f"{job_id}.jsonl")) if sig is not None else NO_EVENTS
        self.states[job_id] = (sig, state)
        self.changed += 1
        return state

    def save(self, keep: Iterable[str]) -> None:
        """Drop the entries of jobs gone; write the cache when enough changed to be worth it
        (a read-only clone still works, only slower)."""
        keep = set(keep)
        for table in (self.manifests, self.states):
            for gone in [job_id for job_id in table if job_id not in keep]:
                del table[gone]
                self.changed += 1
        held = _file_signature(self.store.path)
        if held is None or self.changed >= max(1, min(SAVE_AFTER, len(self.manifests) // 100)):
            self.store.save(None, {"m": self.manifests, "s": self.states})
            held = _file_signature(self.store.path)
            self.changed = 0
        if held is not None:
            self._remember(held)

    def _remember(self, held: Signature) -> None:
        with _MEMO_LOCK:
            _MEMO[self.store.path] = (held, {"m": dict(self.manifests), "s": dict(self.states)},
                                      self.changed)


def _file_signature(path: Path) -> Signature | None:
    """The cache file's signature; None when there is no regular file to trust."""
    try:
        found = os.lstat(path)
    except OSError:
        return None
    return signature(found) if S_ISREG(found.st_mode) else None
