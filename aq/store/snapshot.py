"""Every job of the queue at one moment, read through a cache of what each file parsed to.

A listing of 10,000 jobs must stay fast (`aq ls` is on the path of every command), so a job
file or event log is parsed again only when its stat signature changed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
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


class _JobCache:
    """Parsed manifests and folded states, each keyed by its file's stat signature.

    Kept in the state folder (not committed). A stale or unreadable cache is simply rebuilt.
    """

    def __init__(self, store: StatCache, data: dict[str, Any]) -> None:
        self.store = store
        self.manifests: dict[str, tuple[Signature, Manifest | None, str | None]] = data.get("m", {})
        self.states: dict[str, tuple[Signature | None, JobState]] = data.get("s", {})
        self.dirty = False

    @classmethod
    def load(cls, path: Path) -> _JobCache:
        store = StatCache(path, CACHE_VERSION)
        data = store.load(None)  # no one key: each entry keeps its own signature
        return cls(store, data if isinstance(data, dict) else {})

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
        self.dirty = True
        return manifest, error

    def state(self, job_id: str, sig: Signature | None, events_dir: Path) -> JobState:
        hit = self.states.get(job_id)
        if hit is not None and hit[0] == sig:
            return hit[1]
        state = fold(read_events(events_dir / f"{job_id}.jsonl")) if sig is not None else JobState()
        self.states[job_id] = (sig, state)
        self.dirty = True
        return state

    def save(self, keep: Iterable[str]) -> None:
        keep = set(keep)
        for table in (self.manifests, self.states):
            for gone in [job_id for job_id in table if job_id not in keep]:
                del table[gone]
                self.dirty = True
        if self.dirty:  # a read-only clone still works, only slower
            self.store.save(None, {"m": self.manifests, "s": self.states})
