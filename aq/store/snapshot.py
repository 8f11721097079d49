"""Every job of the queue at one moment, read through a cache of what each file parsed to.

A listing of 10,000 jobs must stay fast (`aq ls` is on the path of every command), so a job
file or event log is parsed again only when its stat signature changed.
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
from aq.core.manifest import Manifest, parse_manifest
from aq.core.scheduler import JobView
from aq.errors import AmbiguousJob, JobNotFound, ManifestError, UnsafePath
from aq.infra.confine import entry_refusal, read_regular
from aq.infra.files import Signature, StatCache, signature
from aq.store.eventlog import parse_time, read_events
from aq.store.layout import CACHE_VERSION, EVENTS_DIR, HALT_FILE, QUEUE_DIR, Layout


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    stage: Stage
    folder: Path  # the stage folder: shared by every job in it, so a listing builds few paths
    manifest: Manifest | None
    error: str | None
    state: JobState
    added: datetime

    @property
    def path(self) -> Path:
        return self.folder / f"{self.id}.md"

    def view(self) -> JobView:
        return JobView(self.id, self.stage, self.manifest, self.state, self.added, self.error)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every job of the queue at one moment, plus files that are not jobs."""

    jobs: tuple[Job, ...]
    problems: tuple[str, ...]  # files in stage folders that cannot be jobs, a job in two stages

    def by_id(self) -> dict[str, Job]:
        return {job.id: job for job in self.jobs}

    def views(self) -> list[JobView]:
        return [job.view() for job in self.jobs]


def read_snapshot(layout: Layout) -> Snapshot:
    """All jobs, read through the manifest/state cache (a file is parsed again only if it changed).
    A job file or event log that is a link (or no regular file) is never read: the job is
    listed with that as its error, so no worker takes it and `aq lint` names it."""
    layout.check_folders()
    cache = _JobCache.load(layout.state_dir / "cache.pickle")
    listing = _Listing(cache, layout.qdir / EVENTS_DIR)
    for stage in STAGES:
        listing.add_stage(stage, layout.qdir / stage)
    cache.save(keep=listing.seen.keys())
    return listing.snapshot()


def read_job(layout: Layout, job_id: str) -> Job | None:
    """The job `job_id` read alone (a stat per stage, its file and its event log), for a command
    that names a job by its whole id; None when anything about it needs the whole snapshot to
    be said right: no such file, a copy in two stages, a link or other non-file in the way."""
    if not is_job_id(job_id):
        return None
    layout.check_folders()
    found = []
    for stage in STAGES:
        try:
            found.append((stage, os.lstat(layout.qdir / stage / f"{job_id}.md")))
        except FileNotFoundError:
            continue
    events = layout.qdir / EVENTS_DIR / f"{job_id}.jsonl"
    try:
        events_stat: os.stat_result | None = os.lstat(events)
    except FileNotFoundError:
        events_stat = None
    if len(found) != 1 or not S_ISREG(found[0][1].st_mode) or (
            events_stat is not None and not S_ISREG(events_stat.st_mode)):
        return None
    (where, file_stat), = found
    fresh = _JobCache(StatCache(layout.state_dir / "cache.pickle", CACHE_VERSION), {})
    manifest, error = fresh.manifest(job_id, signature(file_stat), layout.qdir / where,
                                     f"{job_id}.md", f"{QUEUE_DIR}/{where}/{job_id}.md")
    state = fresh.state(job_id, None if events_stat is None else signature(events_stat),
                        layout.qdir / EVENTS_DIR)
    added = parse_time(state.added_at) or datetime.fromtimestamp(file_stat.st_mtime, UTC)
    return Job(job_id, where, layout.qdir / where, manifest, error, state, added)


def resolve(ref: str, snapshot: Snapshot) -> Job:
    """The job whose id is `ref` or the only one starting with it."""
    if not ref.strip() or "/" in ref or "\\" in ref or ".." in ref:
        check_job_id(ref.strip())  # raises: a path (or nothing) is never a job id
    ref = ref.removesuffix(".md")
    by_id = snapshot.by_id()
    if ref in by_id:
        return by_id[ref]
    matches = sorted(job_id for job_id in by_id if job_id.startswith(ref))
    if not matches:
        raise JobNotFound(f"no job {ref!r} in this queue: 'aq ls' lists the jobs")
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (" ..." if len(matches) > 5 else "")
        raise AmbiguousJob(f"{ref!r} matches {len(matches)} jobs ({shown}): give more of the id")
    return by_id[matches[0]]


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
    """The jobs found so far, stage by stage, and the files that cannot be jobs."""

    def __init__(self, cache: _JobCache, events_dir: Path) -> None:
        self.cache = cache
        self.events_dir = events_dir
        self.event_sigs, self.refused = _event_logs(events_dir)  # refused: job id -> why unread
        self.jobs: list[Job] = []
        self.problems: list[str] = []
        self.seen: dict[str, Stage] = {}

    def snapshot(self) -> Snapshot:
        # event logs refused that no listed job shows as its error
        return Snapshot(tuple(self.jobs), (*self.problems, *self.refused.values()))

    def add_stage(self, stage: Stage, folder: Path) -> None:
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return
        for entry in entries:
            if not entry.name.startswith(".") and entry.name.endswith(".md"):
                self._add(stage, folder, entry)

    def _add(self, stage: Stage, folder: Path, entry: os.DirEntry[str]) -> None:
        name = entry.name
        job_id = name[:-3]
        rel = f"{QUEUE_DIR}/{stage}/{name}"
        unread = None if entry.is_file(follow_symlinks=False) else entry_refusal(rel, entry)
        if unread is None and not entry.is_file(follow_symlinks=False):
            return  # a folder
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
        self.seen[job_id] = stage
        unread = unread or self.refused.pop(job_id, None)
        manifest, error = (None, unread) if unread else self.cache.manifest(
            job_id, signature(stat), folder, name, rel)
        state = self.cache.state(job_id, self.event_sigs.get(job_id), self.events_dir)
        added = parse_time(state.added_at) or datetime.fromtimestamp(stat.st_mtime, UTC)
        self.jobs.append(Job(job_id, stage, folder, manifest, error, state, added))

    def _twice(self, job_id: str, problem: str) -> None:
        """The first copy is not taken, nor moved, until a person removes one."""
        self.problems.append(problem)
        first = next(i for i, job in enumerate(self.jobs) if job.id == job_id)
        self.jobs[first] = replace(self.jobs[first], error=self.jobs[first].error or problem)


def _event_logs(events_dir: Path) -> tuple[dict[str, Signature], dict[str, str]]:
    """Each job's event log by its stat signature, and the logs that are not read (job id -> why)."""
    sigs: dict[str, Signature] = {}
    refused: dict[str, str] = {}
    try:
        with os.scandir(events_dir) as entries:
            for entry in entries:
                if not entry.name.endswith(".jsonl"):
                    continue
                if not entry.is_file(follow_symlinks=False):
                    line = entry_refusal(f"{QUEUE_DIR}/{EVENTS_DIR}/{entry.name}", entry)
                    if line:
                        refused[entry.name[:-6]] = line
                    continue
                sigs[entry.name[:-6]] = signature(entry.stat(follow_symlinks=False))
    except FileNotFoundError:
        pass
    return sigs, refused


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
        state = fold(read_events(events_dir / f"{job_id}.jsonl")) if sig is not None else JobState()
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
