"""The stage store: jobs as files in stage folders, events as JSON lines, moves under a lock.

A job's stage is the folder its file sits in. Every change goes through `Queue.transact`,
which holds the clone's file lock, lets the change check its precondition on what is on disk
now, applies it (renames, event lines, files) and commits the touched paths.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aq.core.events import Event, JobState, fold, parse_iso
from aq.core.ids import check_job_id, is_job_id
from aq.core.lifecycle import STAGES, Stage
from aq.core.manifest import Manifest, parse_manifest
from aq.core.scheduler import JobView
from aq.errors import AmbiguousJob, AqError, JobNotFound, ManifestError, QueueNotFound

if TYPE_CHECKING:
    from aq.config import QueueConfig

QUEUE_DIR = "queue"
EVENTS_DIR = ".events"
LOGS_DIR = ".logs"
HALT_FILE = "HALT"
CACHE_VERSION = 4
T = TypeVar("T")

Signature = tuple[int, int, int]  # mtime_ns, size, inode: a manifest is immutable, so this names it


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    stage: Stage
    path: Path
    manifest: Manifest | None
    error: str | None
    state: JobState
    added: datetime

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


def find_root(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if (folder / QUEUE_DIR / Stage.INBOX).is_dir():
            return folder
    return None


class Queue:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.qdir = self.root / QUEUE_DIR
        git_dir = self.root / ".git"
        self.state_dir = git_dir / "aq" if git_dir.is_dir() else self.qdir / ".state"

    @classmethod
    def locate(cls, explicit: str | None = None, cwd: Path | None = None) -> Queue:
        """`--queue`/`AQ_QUEUE` if given, else the first folder up from cwd holding queue/inbox."""
        chosen = explicit or os.environ.get("AQ_QUEUE")
        if chosen:
            root = Path(chosen).expanduser()
            if not (root / QUEUE_DIR / Stage.INBOX).is_dir():
                raise QueueNotFound(f"{root} is not an aq queue (no queue/inbox): run 'aq init {root}'")
            return cls(root)
        here = cwd or Path.cwd()
        root_found = find_root(here)
        if root_found is None:
            raise QueueNotFound(
                f"no aq queue here or above {here}: run 'aq init' or pass --queue DIR"
            )
        return cls(root_found)

    # --- paths ---------------------------------------------------------------------------

    def stage_dir(self, stage: Stage) -> Path:
        return self.qdir / stage

    def job_path(self, stage: Stage, job_id: str) -> Path:
        return self.qdir / stage / f"{check_job_id(job_id)}.md"

    def events_path(self, job_id: str) -> Path:
        return self.qdir / EVENTS_DIR / f"{check_job_id(job_id)}.jsonl"

    def logs_dir(self, job_id: str) -> Path:
        return self.qdir / LOGS_DIR / check_job_id(job_id)

    def running_dir(self) -> Path:
        return self.state_dir / "running"

    def relative(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    @cached_property
    def config(self) -> QueueConfig:
        from aq.config import load_config

        return load_config(self.root)

    # --- reading -------------------------------------------------------------------------

    def halted(self) -> str | None:
        """The halt reason when queue/HALT exists, else None."""
        try:
            text = (self.qdir / HALT_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return text.splitlines()[0] if text else "halted"

    def stage_of(self, job_id: str) -> Stage | None:
        """Where the job's file is now (fresh from disk, a stat per stage)."""
        for stage in STAGES:
            if (self.qdir / stage / f"{job_id}.md").exists():
                return stage
        return None

    def read_events(self, job_id: str) -> list[Event]:
        return _parse_events(self.events_path(job_id))

    def snapshot(self) -> Snapshot:
        """All jobs, read through the manifest/state cache (a file is parsed again only if it changed)."""
        cache = _Cache.load(self.state_dir / "cache.pickle")
        events_dir = self.qdir / EVENTS_DIR
        event_sigs: dict[str, Signature] = {}
        try:
            with os.scandir(events_dir) as entries:
                for entry in entries:
                    if entry.name.endswith(".jsonl"):
                        stat = entry.stat()
                        event_sigs[entry.name[:-6]] = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except FileNotFoundError:
            pass
        jobs: list[Job] = []
        problems: list[str] = []
        seen: dict[str, Stage] = {}
        for stage in STAGES:
            folder = self.qdir / stage
            try:
                entries_list = list(os.scandir(folder))
            except FileNotFoundError:
                continue
            for entry in entries_list:
                name = entry.name
                if name.startswith(".") or not name.endswith(".md") or not entry.is_file():
                    continue
                job_id = name[:-3]
                rel = f"{QUEUE_DIR}/{stage}/{name}"
                if not is_job_id(job_id):
                    problems.append(f"{rel}: the file name is not a job id (lower-case letters, digits, "
                                    f"'-', '_', '.'): rename it, e.g. to {_suggest_name(job_id)}.md")
                    continue
                if job_id in seen:
                    problems.append(f"{rel}: job {job_id} is also in {seen[job_id]}: "
                                    "a job must be in exactly one stage (run 'aq lint')")
                    continue
                seen[job_id] = stage
                stat = entry.stat()
                manifest, error = cache.manifest(job_id, (stat.st_mtime_ns, stat.st_size, stat.st_ino),
                                                 Path(entry.path), rel)
                state = cache.state(job_id, event_sigs.get(job_id), events_dir / f"{job_id}.jsonl")
                added = (parse_iso(state.added_at) if state.added_at
                         else datetime.fromtimestamp(stat.st_mtime, UTC))
                jobs.append(Job(job_id, stage, Path(entry.path), manifest, error, state, added))
        cache.save(keep=seen.keys())
        return Snapshot(tuple(jobs), tuple(problems))

    def resolve(self, ref: str, snapshot: Snapshot | None = None) -> Job:
        """The job whose id is `ref` or the only one starting with it."""
        if "/" in ref or "\\" in ref or ".." in ref:
            check_job_id(ref)  # raises: a path is never a job id
        ref = ref.removesuffix(".md")
        snap = snapshot or self.snapshot()
        by_id = snap.by_id()
        if ref in by_id:
            return by_id[ref]
        matches = sorted(job_id for job_id in by_id if job_id.startswith(ref))
        if not matches:
            raise JobNotFound(f"no job {ref!r} in this queue: 'aq ls' lists the jobs")
        if len(matches) > 1:
            shown = ", ".join(matches[:5]) + (" ..." if len(matches) > 5 else "")
            raise AmbiguousJob(f"{ref!r} matches {len(matches)} jobs ({shown}): give more of the id")
        return by_id[matches[0]]

    # --- writing -------------------------------------------------------------------------

    @contextmanager
    def lock(self, timeout: float = 120.0) -> Iterator[None]:
        """The clone's lock: every writer of this queue on this machine takes it."""
        from filelock import FileLock, Timeout

        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(self.state_dir / "queue.lock"), timeout=timeout):
                yield
        except Timeout:
            raise AqError(f"the queue lock {self.state_dir / 'queue.lock'} is busy: another aq is "
                          "writing; try again") from None

    def transact(self, change: Callable[[Tx], T], message: str,
                 describe: Callable[[T], str] | None = None) -> T:
        """Apply `change` under the lock and commit what it touched. `change` checks its own precondition.

        `describe` makes the commit message from the result, when only the change knows what it did.
        """
        with self.lock():
            tx = Tx(self)
            result = change(tx)
            if tx.touched:
                self._commit(describe(result) if describe and result is not None else message)
            return result

    @cached_property
    def _git_identity(self) -> list[str] | None:
        from aq import gitops

        if not (self.root / ".git").exists():
            return None
        return gitops.identity_args(self.root)

    def _commit(self, message: str) -> None:
        identity = self._git_identity
        if identity is None:
            return
        from aq import gitops

        gitops.commit_paths(self.root, [QUEUE_DIR], message, identity)


class Tx:
    """The changes of one transaction. Each method does its I/O at once, under the queue lock."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.touched: list[Path] = []

    def stage_of(self, job_id: str) -> Stage | None:
        return self.queue.stage_of(job_id)

    def events(self, job_id: str) -> list[Event]:
        return self.queue.read_events(job_id)

    def state(self, job_id: str) -> JobState:
        return fold(self.queue.read_events(job_id))

    def move(self, job_id: str, source: Stage, target: Stage, event: Event) -> None:
        """Move the job's file from `source` to `target` and record `event`; the file must be in `source`."""
        src = self.queue.job_path(source, job_id)
        dst = self.queue.job_path(target, job_id)
        if not src.exists():
            raise JobNotFound(f"{job_id} is no longer in {source}")
        self.append_event(job_id, event)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.rename(src, dst)
        self.touched += [src, dst]

    def append_event(self, job_id: str, event: Event) -> None:
        path = self.queue.events_path(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(event, separators=(",", ":"), ensure_ascii=False, default=str) + "\n"
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = "\n" + line  # a torn last line stays on its own line
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        self.touched.append(path)

    def write(self, path: Path, data: bytes | str) -> None:
        write_atomic(path, data)
        self.touched.append(path)

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.touched.append(path)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write via a temp file in the same folder and `os.replace`: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def _parse_events(path: Path) -> list[Event]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    events: list[Event] = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a torn line from a crash; `aq lint` reports it
        if isinstance(event, dict):
            events.append(event)
    return events  # file order is causal order; timestamps of different machines may disagree


def bad_event_lines(path: Path) -> list[int]:
    """Line numbers (1-based) of lines that are not JSON objects."""
    bad = []
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            if not isinstance(json.loads(line), dict):
                bad.append(number)
        except ValueError:
            bad.append(number)
    return bad


def _suggest_name(stem: str) -> str:
    from aq.core.ids import slugify

    return slugify(stem) or "job"


class _Cache:
    """Parsed manifests and folded states, keyed by the file's stat signature.

    Kept in the state folder (not committed). A stale or unreadable cache is simply rebuilt.
    """

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.manifests: dict[str, tuple[Signature, Manifest | None, str | None]] = data.get("m", {})
        self.states: dict[str, tuple[Signature | None, JobState]] = data.get("s", {})
        self.dirty = False

    @classmethod
    def load(cls, path: Path) -> _Cache:
        try:
            with open(path, "rb") as handle:
                data = pickle.load(handle)
            if isinstance(data, dict) and data.get("v") == CACHE_VERSION:
                return cls(path, data)
        except Exception:
            pass
        return cls(path, {})

    def manifest(self, job_id: str, sig: Signature, path: Path, rel: str
                 ) -> tuple[Manifest | None, str | None]:
        hit = self.manifests.get(job_id)
        if hit is not None and hit[0] == sig:
            return hit[1], hit[2]
        try:
            manifest: Manifest | None = parse_manifest(job_id, path.read_text(encoding="utf-8"), rel)
            error = None
        except ManifestError as err:
            manifest, error = None, str(err)
        except (OSError, UnicodeDecodeError) as err:
            manifest, error = None, f"{rel}: cannot read: {err}"
        self.manifests[job_id] = (sig, manifest, error)
        self.dirty = True
        return manifest, error

    def state(self, job_id: str, sig: Signature | None, path: Path) -> JobState:
        hit = self.states.get(job_id)
        if hit is not None and hit[0] == sig:
            return hit[1]
        state = fold(_parse_events(path)) if sig is not None else JobState()
        self.states[job_id] = (sig, state)
        self.dirty = True
        return state

    def save(self, keep: Iterable[str]) -> None:
        keep = set(keep)
        for table in (self.manifests, self.states):
            for gone in [job_id for job_id in table if job_id not in keep]:
                del table[gone]
                self.dirty = True
        if not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = {"v": CACHE_VERSION, "m": self.manifests, "s": self.states}
            write_atomic(self.path, pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            pass  # a read-only clone still works, only slower
