"""The stage store: jobs as files in stage folders, events as JSON lines, moves under a lock.

A job's stage is the folder its file sits in. Every change goes through `Queue.transact`,
which holds the clone's file lock, lets the change check its precondition on what is on disk
now, applies it (renames, event lines, files) and commits the touched paths.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pickle
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aq.core.events import STALE_RESULT, Event, JobState, fold, parse_iso
from aq.core.ids import check_job_id, is_job_id
from aq.core.lifecycle import STAGES, Stage
from aq.core.manifest import Manifest, parse_manifest
from aq.core.profile import Profile
from aq.core.scheduler import JobView
from aq.errors import (
    AmbiguousJob,
    AqError,
    GitError,
    JobNotFound,
    ManifestError,
    QueueNotFound,
    UnsafePath,
)
from aq.infra.confine import check, entry_refusal, read_regular, refusal
from aq.infra.files import find_git_dir, write_atomic

if TYPE_CHECKING:
    from aq.store.config import QueueConfig
    from aq.store.sync import LocalChange, Remote

QUEUE_DIR = "queue"
EVENTS_DIR = ".events"
LOGS_DIR = ".logs"
HALT_FILE = "HALT"
PROFILES_DIR = "profiles"
CACHE_VERSION = 11
T = TypeVar("T")

Signature = tuple[int, int, int]  # mtime_ns, size, inode: a manifest is immutable, so this names it


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


@dataclass(frozen=True, slots=True)
class Profiles:
    """The queue's profiles, the files that could not be read as one, and what was read."""

    found: dict[str, Profile]
    problems: tuple[str, ...] = ()
    signatures: dict[str, Signature] = field(default_factory=dict)


def _state_key(root: Path) -> str:
    """One state folder per queue in a repo: '.' for a queue at the top, else its path's hash."""
    top = root
    for folder in (root, *root.parents):
        if (folder / ".git").exists():
            top = folder
            break
    if top == root:
        return "."
    import hashlib

    return "q-" + hashlib.sha256(str(root.relative_to(top)).encode()).hexdigest()[:12]


def find_root(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if (folder / QUEUE_DIR / Stage.INBOX).is_dir():
            return folder
    return None


@dataclass(slots=True)
class Owed:
    """Work the remote has not taken yet: replayed on its tip until a push of it lands."""

    replay: Callable[[Tx], object]
    message: str
    commit: str | None = None  # a commit of this clone holding the work, whose push was not confirmed


class Queue:
    def __init__(self, root: Path) -> None:
        self.owed: list[Owed] = []
        self.last_sync_ok = True
        self.fetches_failed = 0  # by this process: lease figures from before one are out of date
        self.last_push_confirmed = True  # False: the last transaction's push is owed or uncertain
        self._inbox_seen = 0  # the inbox folder's mtime at the last look for dropped files
        self._tree_checked = False  # queue/ was checked against HEAD once by this process
        self._tree_checks = 0  # how many times
        self.notices: list[str] = []  # for a person: said once by the CLI or the worker
        self._salvaging: set[str] = set()  # unpushed aq commits of other processes, replayed
        self._adopting: set[str] = set()
        self._commits = 0  # commits made by this process: a transaction that made none pushes nothing
        self.root = root.resolve()
        self.qdir = self.root / QUEUE_DIR
        self.git_dir = find_git_dir(self.root)
        self.state_dir = (self.git_dir / "aq" / _state_key(self.root)) if self.git_dir else self.qdir / ".state"

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
        from aq.store.config import load_config

        return load_config(self.root, self.state_dir)

    # --- reading -------------------------------------------------------------------------

    def profiles(self) -> Profiles:
        """profiles/<name>.md parsed (README.md is not a profile), through a stat-keyed cache."""
        from aq.core.profile import parse_profile

        folder = self.root / PROFILES_DIR
        signatures: dict[str, Signature] = {}
        refused = [line] if (line := refusal(self.root, folder, folder=True)) else []
        entries: list[os.DirEntry[str]] = []
        if not refused:  # a linked folder is named, never entered
            with contextlib.suppress(FileNotFoundError, NotADirectoryError), \
                    os.scandir(folder) as listing:
                entries = list(listing)
        for entry in entries:
            stem = entry.name[:-3]
            if not entry.name.endswith(".md") or stem.lower() == "readme":
                continue
            if entry.is_file(follow_symlinks=False):
                stat = entry.stat(follow_symlinks=False)
                signatures[stem] = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            elif line := entry_refusal(f"{PROFILES_DIR}/{entry.name}", entry):
                refused.append(line)  # a link is named, never followed
        cache_path = self.state_dir / "profiles.pickle"
        try:
            version, cached = pickle.loads(cache_path.read_bytes())
            if version == CACHE_VERSION and isinstance(cached, Profiles) \
                    and cached.signatures == signatures:
                return replace(cached, problems=(*refused, *cached.problems)) if refused else cached
        except Exception:  # any unreadable cache is simply rebuilt
            pass
        found, problems = {}, []
        for name in sorted(signatures):
            source = f"{PROFILES_DIR}/{name}.md"
            try:
                text = read_regular(folder / f"{name}.md", source).decode("utf-8")
                found[name] = parse_profile(name, text, source)
            except (AqError, OSError, UnicodeDecodeError) as err:
                problems.append(str(err) if isinstance(err, AqError) else f"{source}: cannot read: {err}")
        loaded = Profiles(found, tuple(problems), signatures)
        with contextlib.suppress(OSError):
            self.state_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(cache_path, pickle.dumps((CACHE_VERSION, loaded),
                                                  protocol=pickle.HIGHEST_PROTOCOL))
        return replace(loaded, problems=(*refused, *loaded.problems)) if refused else loaded

    def halted(self) -> str | None:
        """The halt reason when queue/HALT exists, else None."""
        try:
            text = read_regular(self.qdir / HALT_FILE, f"{QUEUE_DIR}/{HALT_FILE}").decode(
                "utf-8", "replace").strip()
        except FileNotFoundError:
            return None
        except UnsafePath as err:  # there all the same: the kill switch holds, unread
            return str(err)
        return text.splitlines()[0] if text else "halted"

    def stage_of(self, job_id: str) -> Stage | None:
        """Where the job's file is now (fresh from disk, a stat per stage)."""
        for stage in STAGES:
            if os.path.lexists(self.qdir / stage / f"{job_id}.md"):  # a link too: it is refused
                return stage
        return None

    def read_events(self, job_id: str) -> list[Event]:
        return _parse_events(self.events_path(job_id))

    def state_of(self, job_id: str) -> JobState:
        return fold(self.read_events(job_id))

    def check_folders(self) -> None:
        """queue/ and its stage, event and log folders are folders of this queue, not links to
        others (DESIGN §5): else the queue is refused in one line naming the link."""
        for name in (*STAGES, EVENTS_DIR, LOGS_DIR):
            check(self.root, self.qdir / name, folder=True)

    def snapshot(self) -> Snapshot:
        """All jobs, read through the manifest/state cache (a file is parsed again only if it changed).
        A job file or event log that is a link (or no regular file) is never read: the job is
        listed with that as its error, so no worker takes it and `aq lint` names it."""
        self.check_folders()
        cache = _Cache.load(self.state_dir / "cache.pickle")
        events_dir = self.qdir / EVENTS_DIR
        event_sigs: dict[str, Signature] = {}
        refused: dict[str, str] = {}  # job id -> why a file of it is not read
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
                    stat = entry.stat(follow_symlinks=False)
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
                if name.startswith(".") or not name.endswith(".md"):
                    continue
                job_id = name[:-3]
                rel = f"{QUEUE_DIR}/{stage}/{name}"
                unread = None if entry.is_file(follow_symlinks=False) else entry_refusal(rel, entry)
                if unread is None and not entry.is_file(follow_symlinks=False):
                    continue  # a folder
                if not is_job_id(job_id):
                    problems.append(f"{rel}: the file name is not a job id (lower-case letters, digits, "
                                    f"'-', '_', '.'): rename it, e.g. to {_suggest_name(job_id)}.md")
                    continue
                if job_id in seen:
                    twice = (f"{rel}: job {job_id} is also in {seen[job_id]}: "
                             "a job must be in exactly one stage (run 'aq lint')")
                    problems.append(twice)
                    # the first copy is not taken, nor moved, until a person removes one
                    first = next(i for i, job in enumerate(jobs) if job.id == job_id)
                    jobs[first] = replace(jobs[first], error=jobs[first].error or twice)
                    continue
                try:
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # moved on since the folder was listed (a reader
                    continue  # without the lock): it is in the stage it moved to, or next time
                seen[job_id] = stage
                unread = unread or refused.pop(job_id, None)
                manifest, error = (None, unread) if unread else cache.manifest(
                    job_id, (stat.st_mtime_ns, stat.st_size, stat.st_ino), folder, name, rel)
                state = cache.state(job_id, event_sigs.get(job_id), events_dir)
                added = (_parse_time(state.added_at)
                         or datetime.fromtimestamp(stat.st_mtime, UTC))
                jobs.append(Job(job_id, stage, folder, manifest, error, state, added))
        cache.save(keep=seen.keys())
        problems += refused.values()  # event logs refused that no listed job shows as its error
        return Snapshot(tuple(jobs), tuple(problems))

    def resolve(self, ref: str, snapshot: Snapshot | None = None) -> Job:
        """The job whose id is `ref` or the only one starting with it."""
        if not ref.strip() or "/" in ref or "\\" in ref or ".." in ref:
            check_job_id(ref.strip())  # raises: a path (or nothing) is never a job id
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
        lock = FileLock(str(self.state_dir / "queue.lock"), timeout=timeout)
        try:
            lock.acquire(poll_interval=0.005)  # a waiting sibling worker gets its turn promptly
        except Timeout:
            raise AqError(f"the queue lock {self.state_dir / 'queue.lock'} is busy: another aq is "
                          "writing; try again") from None
        try:
            yield
        finally:
            lock.release()

    @cached_property
    def remote(self) -> Remote | None:
        from aq.store.sync import Remote

        return Remote.detect(self.root, self.config.remote)

    def transact(
        self,
        change: Callable[[Tx], T],
        message: str,
        describe: Callable[[T], str] | None = None,
        *,
        owe: Callable[[T], Callable[[Tx], object] | None] | None = None,
    ) -> T:
        """Apply `change` under the lock, commit what it touched and (with a remote) push it.

        `change` checks its own precondition on what is on disk, so it is simply run again on
        the remote's new tip when a push is rejected. `describe` makes the commit message from
        the result. With a remote the change counts only once pushed: unless `owe` is given, an
        unreachable remote raises RemoteUnreachable before anything changes. With `owe`, a
        change made while the remote cannot be reached is kept, and `owe(result)` is the change
        replayed on the tip when it answers again (None: nothing to replay).
        """
        with self.lock():
            if self.remote is None:
                return self._apply(change, message, describe)
            with self.changing_tree() as left_dirty:
                return self._transact_remote(self.remote, change, message, describe, owe,
                                             left_dirty)

    def _apply(self, change: Callable[[Tx], T], message: str,
               describe: Callable[[T], str] | None, online: bool = True) -> T:
        tx = Tx(self, online)
        try:
            result = change(tx)
            if tx.touched:
                text = describe(result) if describe and result is not None else message
                paths = tx.touched if self.remote is not None else None
                try:
                    self._commit(text, paths)
                except GitError as err:
                    from aq.infra.gitops import clear_stale_locks

                    # a lock file left by a git killed earlier: gone, the commit goes through
                    if ".lock" not in str(err) or not clear_stale_locks(self.git_dir, older_than=2.0):
                        raise
                    self._commit(text, paths)
        except BaseException:
            tx.rollback()  # nothing half-done stays in the clone
            raise
        return result

    def _transact_remote(
        self,
        remote: Remote,
        change: Callable[[Tx], T],
        message: str,
        describe: Callable[[T], str] | None,
        owe: Callable[[T], Callable[[Tx], object] | None] | None,
        left_dirty: bool,
    ) -> T:
        from aq.errors import PushUncertain, RemoteBusy, RemoteUnreachable
        from aq.store.sync import Push

        self.last_push_confirmed = False
        for attempt in range(PUSH_TRIES):
            replayed = bool(self.owed)
            reachable = self.sync_from_remote(remote, check_tree=left_dirty and attempt == 0)
            replayed = replayed and reachable
            if not reachable and owe is None:
                raise RemoteUnreachable(f"cannot reach the queue's remote {remote.name!r}: nothing "
                                        "changed; try again when it answers")
            commits = self._commits
            result = self._apply(change, message, describe, online=reachable)
            if self._commits == commits and not replayed:
                self.last_push_confirmed = reachable
                return result  # nothing to push
            if not reachable:
                self._owe(owe, result)
                return result
            pushed = remote.push()
            if pushed is Push.OK:
                self.owed.clear()
                self.last_push_confirmed = True
                return result
            if pushed is Push.TRANSPORT:
                landed = self._confirm(remote)
                if landed:
                    self.owed.clear()
                    self.last_push_confirmed = True
                    return result
                if landed is None:
                    head = remote.head() or ""
                    if owe is None:
                        raise PushUncertain(
                            f"the remote {remote.name!r} stopped answering during the push; it may "
                            "or may not have taken the change", result, head)
                    for owed in self.owed:  # replayed into this HEAD: landed if it lands
                        owed.commit = head
                    self._owe(owe, result, head)
                    return result
            # lost to another machine (or the push never arrived): take our refused commits off
            # HEAD now. Left there, a next try whose fetch fails would build on them and find
            # its work "already done" in a commit the remote never took.
            self._note_kept(remote.align())
            _backoff(attempt)  # then decide again on the remote's tip
        raise RemoteBusy(f"gave up after {PUSH_TRIES} tries: other machines kept pushing first; "
                         "try again")

    def _note_kept(self, branch: str | None) -> None:
        if branch and branch not in " ".join(self.notices):
            self.notices.append(
                f"commits in this clone that the remote lacks and aq did not make (a person's, or "
                f"an agent's that committed in the queue's clone) are kept on branch {branch}; "
                "the queue's branch moved on without them: push or merge them from there")

    def fetch(self, remote: Remote) -> bool:
        """Fetch from the remote (under the lock). One that fails is noted for every lease
        observer of this machine: while the remote is out of sight, no lease goes silent."""
        if remote.fetch():
            return True
        self.lost_sight()
        return False

    def lost_sight(self) -> None:
        from aq.store.sync import LeaseObserver

        self.fetches_failed += 1
        LeaseObserver(self.state_dir / "leases.json").lost_sight()

    def refresh_from_remote(self, timeout: float = 120.0) -> bool:
        """For views (board, dash, events, workers): fetch, and move this clone up to the
        remote's tip only when that is a fast-forward. Nothing is adopted, salvaged, replayed or
        committed, so a view never makes a commit that only a worker would push (which the next
        worker's align would then drop). False when there is no remote or it does not answer."""
        remote = self.remote
        if remote is None:
            return False
        with self.lock(timeout):
            if not self.fetch(remote):
                return False
            head, tip = remote.heads()
            if head and tip and head != tip and remote.is_ancestor(head, tip):
                self._note_kept(remote.align((head, tip)))
        return True

    @contextmanager
    def changing_tree(self) -> Iterator[bool]:
        """Mark, under the queue lock, that this process may leave queue/ half-changed until the
        block ends. Yields True when a process died inside such a block (its mark is still
        there): then the next sync puts queue/ back to HEAD first. Saves a `git status` on
        every sync."""
        marker = self.state_dir / "tree-changing"
        dead_left_it = marker.exists()
        left_dirty = dead_left_it or not self._tree_checked
        self.state_dir.mkdir(parents=True, exist_ok=True)
        marker.write_bytes(b"")
        checks = self._tree_checks
        try:
            yield left_dirty
        finally:
            # a dead process's mark goes only once queue/ was checked (a sync whose fetch
            # failed checks nothing): else the next transaction, of any process, checks it
            if not dead_left_it or self._tree_checks > checks:
                marker.unlink(missing_ok=True)

    def sync_from_remote(self, remote: Remote, check_tree: bool = True) -> bool:
        """Fetch, then bring this clone to the remote's tip and replay the work still owed to it.
        `check_tree`: first put back half a move a process killed mid-transaction left."""
        self.last_sync_ok = self.fetch(remote)
        if not self.last_sync_ok:
            return False
        self._drop_landed(remote)
        heads = remote.heads()  # read once: nothing below moves HEAD before the align
        salvage = self._unpushed_of_the_dead(remote, *heads)
        if check_tree:
            remote.discard_uncommitted()  # half a move a killed process left: never committed as is
            self._tree_checked = True
            self._tree_checks += 1
        self._adopt_dropped(remote)
        seen = self.inbox_unchanged()
        self._note_kept(remote.align(heads))  # git's own inbox changes are no dropped files either
        self.own_inbox_change(seen)
        self.owed += [Owed(functools.partial(self._salvage, change),
                           f"aq: salvage of {change.commit[:12]} ({change.subject[4:60]})")
                      for change in salvage]
        # owed work stays listed until a push of it lands: a replay that loses a race is replayed again
        for owed in list(self.owed):
            self._apply(owed.replay, owed.message, None)
        return True

    def _unpushed_of_the_dead(self, remote: Remote, head: str | None, tip: str | None
                              ) -> list[LocalChange]:
        """Before an align drops them: aq commits of this clone the remote lacks that this
        process does not owe itself, such as those of a sibling worker that died (or stopped)
        while the remote was away. They are replayed like owed work, each with its
        precondition checked again (a result this process also owes is recorded once)."""
        if head is None or tip is None or head == tip:
            return []
        mine = {owed.commit for owed in self.owed if owed.commit} | self._salvaging
        found = [change for change in remote.unpushed_aq_commits(tip, skip=mine)]
        self._salvaging |= {change.commit for change in found}
        return found

    def _salvage(self, change: LocalChange, tx: Tx) -> None:
        """Re-apply what a dead worker's commit did, where it still holds on the tip: a result
        for a job still in building under the same lease, or a job dropped by hand that no
        stage has. Anything else stays undone (its job moved on without it)."""
        for job_id, events in change.events.items():
            for event in events:
                kind, by = event.get("type"), event.get("by")
                stage, state = tx.stage_of(job_id), tx.state(job_id)
                if kind == "finished" and any(
                        a.token == event.get("token") and a.outcome == event.get("outcome")
                        and a.worker == by for a in state.attempts):
                    continue  # recorded already
                if kind == "finished" and stage is not None:
                    prefix = f"{QUEUE_DIR}/{LOGS_DIR}/{job_id}/"
                    for rel, data in change.files.items():
                        if rel.startswith(prefix) and not (self.root / rel).exists():
                            tx.write(self.root / rel, data)
                if kind == "finished" and stage is Stage.BUILDING \
                        and state.token == event.get("token"):
                    try:
                        target = Stage(str(event.get("to")))
                    except ValueError:
                        continue
                    tx.move(job_id, Stage.BUILDING, target, {**event, "salvaged": change.commit})
                elif kind == "finished" and stage is not None and not has_stale_result(
                        self.read_events(job_id), event.get("token")):  # fenced: kept (DESIGN §5)
                    tx.append_event(job_id, {
                        "ts": event.get("ts"), "type": STALE_RESULT, "by": by,
                        "attempt": event.get("attempt"), "token": event.get("token"),
                        "outcome": event.get("outcome"), "log": event.get("log"),
                        "salvaged": change.commit,
                        "why": f"salvaged after its worker stopped; fenced: the job is in {stage}"
                               + ("" if state.token == event.get("token") else " under another lease")})
                elif kind == "added" and by == "dropped-by-hand" and tx.stage_of(job_id) is None:
                    rel = f"{QUEUE_DIR}/{Stage.INBOX}/{job_id}.md"
                    if rel in change.files:
                        tx.write(self.root / rel, change.files[rel])
                        tx.append_event(job_id, {**event, "salvaged": change.commit})

    def _drop_landed(self, remote: Remote) -> None:
        """Owed work whose unconfirmed push did land is owed no more. Each item is checked by its
        own commit, never by HEAD: a sibling worker on this clone moves HEAD to the tip."""
        tip = remote.tip() if any(owed.commit for owed in self.owed) else None
        if tip is None:
            return
        landed: dict[str, bool] = {}
        for owed in self.owed:
            if owed.commit and owed.commit not in landed:
                landed[owed.commit] = remote.is_ancestor(owed.commit, tip)
        self.owed = [owed for owed in self.owed if not (owed.commit and landed[owed.commit])]

    def inbox_unchanged(self, *paths: Path) -> bool:
        """Before this process changes `paths`: True when one is in the inbox and nobody changed
        the inbox since the last look for dropped files (see own_inbox_change)."""
        inbox = self.qdir / Stage.INBOX
        if not self._inbox_seen or (paths and not any(path.parent == inbox for path in paths)):
            return False
        try:
            return inbox.stat().st_mtime_ns == self._inbox_seen
        except FileNotFoundError:
            return False

    def own_inbox_change(self, seen: bool) -> None:
        """After this process changed an inbox it had seen unchanged: the new mtime is no sign
        of a dropped file, so the next sync need not ask git for untracked jobs. (A change by
        anyone else before ours made `seen` False, and one after moves the mtime again.)"""
        if seen:
            with contextlib.suppress(FileNotFoundError):
                self._inbox_seen = (self.qdir / Stage.INBOX).stat().st_mtime_ns

    def _adopt_dropped(self, remote: Remote) -> None:
        """Job files a person dropped into this clone's inbox become owed adds: committed with an
        `added` event and replayed after any lost race, so a reset to the tip never loses them."""
        inbox = self.qdir / Stage.INBOX
        try:
            mtime = inbox.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if mtime == self._inbox_seen:
            return  # no file came or went since the last look
        self._inbox_seen = mtime
        for path, data in remote.untracked_inbox_jobs().items():
            if path.stem in self._adopting or not is_job_id(path.stem):
                continue
            self._adopting.add(path.stem)
            self.owed.append(Owed(functools.partial(self._adopt, path, data),
                                  f"aq: add {path.stem} (dropped into the inbox by hand)"))

    def _adopt(self, path: Path, data: bytes, tx: Tx) -> None:
        job_id = path.stem
        elsewhere = [stage for stage in STAGES if stage is not Stage.INBOX
                     and (self.qdir / stage / path.name).exists()]
        if elsewhere:  # the job is already in another stage: this copy is a leftover, not a new job
            path.unlink(missing_ok=True)
            self._adopting.discard(job_id)
            return
        if path.exists():
            tx.touched.append(path)
        else:
            tx.write(path, data)
        if not tx.state(job_id).added_at:
            tx.append_event(job_id, {"ts": _utc_iso(), "type": "added", "by": "dropped-by-hand",
                                     "to": Stage.INBOX})

    def _owe(self, owe: Callable[[T], Callable[[Tx], object] | None] | None, result: T,
             commit: str | None = None) -> None:
        replay = owe(result) if owe is not None else None
        if replay is not None:
            self.owed.append(Owed(replay, "aq: replay of work done while the remote was away", commit))

    def _confirm(self, remote: Remote) -> bool | None:
        """After a transport failure: did our HEAD land? Asks a few times while the remote is away."""
        head = remote.head() or ""
        for attempt in range(CONFIRM_TRIES):
            landed = remote.landed(head)
            if landed is not None:
                return landed
            self.lost_sight()
            _backoff(attempt)
        self.last_sync_ok = False  # the clone holds commits the remote may not have
        return None

    @property
    def workspace_key(self) -> str:
        """This queue's folder under workspaces_dir: its name and a hash of its path."""
        import hashlib

        return f"{self.root.name}-{hashlib.sha256(str(self.root).encode()).hexdigest()[:8]}"

    @property
    def identity(self) -> list[str] | None:
        """`-c user.name/-c user.email` when this machine has no git identity (None: no git)."""
        return self._git_identity

    @cached_property
    def _git_identity(self) -> list[str] | None:
        from aq.infra import gitops

        if self.git_dir is None:
            return None
        return gitops.identity_args(self.root)

    def _commit(self, message: str, touched: list[Path] | None = None) -> None:
        """Commit the queue: with a remote, exactly the paths the transaction touched (never a
        file a person dropped, which is adopted on its own); alone, everything in queue/."""
        identity = self._git_identity
        if identity is None:
            return
        from aq.infra import gitops

        paths = [QUEUE_DIR] if touched is None else [self.relative(p) for p in touched]
        if gitops.commit_paths(self.root, paths, message, identity, exact=touched is not None):
            self._commits += 1


def has_stale_result(events: Iterable[Event], token: object) -> bool:
    """Whether a stale_result of this lease token is recorded already (by its worker, or by a
    salvage of its commit)."""
    return any(e.get("type") == STALE_RESULT and e.get("token") == token for e in events)


PUSH_TRIES = 40
CONFIRM_TRIES = 4


def _backoff(attempt: int) -> None:
    """Exponential backoff with full jitter, capped at about one claim window (0.25 s): long
    enough to spread the losers of a race, short enough that they are not starved by winners."""
    import random
    import time

    time.sleep(random.uniform(0, min(0.25, 0.01 * 2 ** min(attempt, 5))))


class Tx:
    """The changes of one transaction. Each method does its I/O at once, under the queue lock."""

    def __init__(self, queue: Queue, online: bool = True) -> None:
        self.queue = queue
        self.online = online  # False: the remote did not answer; this change is kept as owed work
        self.touched: list[Path] = []
        self._undo: list[Callable[[], None]] = []  # newest last: how to put each change back

    def stage_of(self, job_id: str) -> Stage | None:
        return self.queue.stage_of(job_id)

    def state(self, job_id: str) -> JobState:
        return fold(self.queue.read_events(job_id))

    def move(self, job_id: str, source: Stage, target: Stage, event: Event) -> None:
        """Move the job's file from `source` to `target` and record `event`; the file must be in `source`."""
        src = self.queue.job_path(source, job_id)
        dst = self.queue.job_path(target, job_id)
        if not os.path.lexists(src):
            raise JobNotFound(f"{job_id} is no longer in {source}")
        check(self.queue.root, src)  # a link is refused, not moved along
        check(self.queue.root, dst.parent, folder=True)
        self.append_event(job_id, event)
        dst.parent.mkdir(parents=True, exist_ok=True)
        seen = self.queue.inbox_unchanged(src, dst)
        os.rename(src, dst)
        self._undo.append(lambda: os.rename(dst, src))
        self.queue.own_inbox_change(seen)
        self.touched += [src, dst]

    def append_event(self, job_id: str, event: Event) -> None:
        path = self.queue.events_path(job_id)
        check(self.queue.root, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(event, separators=(",", ":"), ensure_ascii=False, default=str) + "\n"
        existed = path.exists()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            size = os.fstat(fd).st_size
            self._undo.append(lambda: os.truncate(path, size) if existed else path.unlink())
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = "\n" + line  # a torn last line stays on its own line
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        self.touched.append(path)

    def write(self, path: Path, data: bytes | str) -> None:
        check(self.queue.root, path)  # nothing is written through a link, or outside the queue
        self._remember(path)
        seen = self.queue.inbox_unchanged(path)
        write_atomic(path, data)
        self.touched.append(path)
        self.queue.own_inbox_change(seen)

    def remove(self, path: Path) -> None:
        check(self.queue.root, path)
        self._remember(path)
        seen = self.queue.inbox_unchanged(path)
        path.unlink(missing_ok=True)
        self.touched.append(path)
        self.queue.own_inbox_change(seen)

    def _remember(self, path: Path) -> None:
        try:
            before: bytes | None = path.read_bytes()
        except FileNotFoundError:
            before = None
        self._undo.append(lambda: write_atomic(path, before) if before is not None
                          else path.unlink(missing_ok=True))

    def rollback(self) -> None:
        """Put every file this transaction changed back as it was (its commit failed)."""
        while self._undo:
            with contextlib.suppress(OSError):
                self._undo.pop()()
        self.touched.clear()


def _parse_events(path: Path) -> list[Event]:
    try:
        raw = read_regular(path)
    except (FileNotFoundError, UnsafePath):  # a link is never read: the snapshot names it
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


def _utc_iso() -> str:
    from aq.core.events import iso

    return iso(datetime.now(UTC))


def _parse_time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = parse_iso(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def bad_event_lines(path: Path) -> list[int]:
    """Line numbers (1-based) of lines that are not JSON objects with a readable `ts`."""
    bad: list[int] = []
    try:
        raw = read_regular(path)
    except UnsafePath:  # not an event log aq reads: `aq lint` names it as such
        return bad
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            bad.append(number)
            continue
        if not isinstance(event, dict) or _parse_time(event.get("ts")) is None:
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
        import gc

        enabled = gc.isenabled()
        gc.disable()  # tens of thousands of small objects: collecting mid-load only costs time
        try:
            with open(path, "rb") as handle:
                data = pickle.load(handle)
            if isinstance(data, dict) and data.get("v") == CACHE_VERSION:
                return cls(path, data)
        except Exception:  # any unreadable cache (torn, old, foreign) is simply rebuilt
            pass
        finally:
            if enabled:
                gc.enable()
        return cls(path, {})

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
        state = fold(_parse_events(events_dir / f"{job_id}.jsonl")) if sig is not None else JobState()
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
