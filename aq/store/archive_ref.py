"""The archive's own ref: finished jobs kept off the queue's branch.

Every claim pushes the queue's branch, and git's work for a push or a fetch grows with the
tree the branch holds: with a year of finished jobs on it, a claim took 1.7 times as long as on
a fresh queue (benchmarks/bench_archive.py). So the archive (aq.usecases.archive) is a ref of
its own: refs/aq/archive/<branch> on the remote, fetched with the branch into
refs/aq/fetched/archive/<branch> (a queue with no remote keeps refs/aq/archive/<branch> itself).
Its tree holds <queue>/.archive/<yyyy>/<mm>/<nnn>/..., the very paths of the work tree, where it
is checked out through an index of its own (<git dir>/aq/archive/index). git ignores
queue/.archive/ (info/exclude), so the branch's index and status never see it, and readers read
plain files as they always did.

A batch is archived by two compare-and-swaps: the jobs' files are added to the archive's ref
(`put`: a lost race decides again on the new tip), then taken off the branch, each job only if
its files there are still the ones copied. A crash between leaves a job in both places: the
copy in its stage folder wins (readers look in the archive only for what no stage folder
holds), and the next `aq archive` copies it again over the old copy and takes it off.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from aq.errors import GitError, QueueBusy, RemoteBusy, RemoteRefused, RemoteUnreachable
from aq.infra import gitops
from aq.infra.files import write_atomic
from aq.store.layout import ARCHIVE_DIR, QUEUE_DIR, Layout
from aq.store.sync import ARCHIVE_REFS, EMPTY_TREE, Push, Remote

if TYPE_CHECKING:
    from filelock import FileLock

PUT_TRIES = 20
LOCK_WAIT = 300.0  # seconds: a first checkout of a year's archive writes 100,000s of files
Content = Path | bytes | None  # a file of the queue to copy, new content, or None: taken out


class ArchiveRef:
    """The archive's ref of one queue's branch, and its checkout in queue/.archive.

    Lock order: the clone's queue lock, then this one (a sync catches up holding the first;
    `put` takes both), so the two never wait on each other in turn."""

    def __init__(self, layout: Layout, remote: Remote | None, branch: str) -> None:
        if layout.git_dir is None:
            raise GitError(f"{layout.root} is not in a git repository: its archive has no ref")
        self.layout = layout
        self.remote = remote
        self.home = layout.git_dir / "aq" / "archive"  # the checkout's index, what it shows, lock
        self.own = f"{ARCHIVE_REFS}/{branch}"  # a queue's with no remote (or before it had one)
        self.ref = remote.archive_tracking if remote is not None else self.own
        self._lock: FileLock | None = None

    def _git(self, *args: str, check: bool = True, input: str | None = None,
             env: Mapping[str, str] | None = None) -> str:
        return gitops.git(self.layout.root, *args, check=check, input=input, env=env).stdout

    @contextmanager
    def lock(self, wait: bool = True) -> Iterator[bool]:
        """This clone's lock on the checkout: whether it is held (not `wait`ing, False when
        another has it; `wait`ing, QueueBusy after LOCK_WAIT seconds)."""
        from filelock import FileLock, Timeout

        if self._lock is None:
            self.home.mkdir(parents=True, exist_ok=True)
            self._lock = FileLock(str(self.home / "lock"))
        try:
            self._lock.acquire(timeout=LOCK_WAIT if wait else 0)
        except Timeout:
            if not wait:
                yield False
                return
            raise QueueBusy(f"the archive's lock {self.home / 'lock'} is busy: another aq is "
                            "archiving or checking the archive out; try again") from None
        try:
            yield True
        finally:
            self._lock.release()

    def tip(self) -> str | None:
        """The archive's commit: as last fetched; else the one this clone keeps, its own ref
        (a queue with no remote; with one, the last commit checked out, kept there so that no
        gc takes it): a remote that lost its archive ref, or never had one, gets it back with
        the next `put`."""
        found = gitops.commit_of(self.layout.root, self.ref)
        if found is None and self.ref != self.own:
            found = gitops.commit_of(self.layout.root, self.own)
        return found

    def shown(self) -> str | None:
        """The commit queue/.archive shows ('' or None: nothing checked out yet)."""
        try:
            return (self.home / "shown").read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    def tree_path(self, path: Path) -> str:
        """A file of the queue's path in the archive's tree (and the work tree's)."""
        return self.layout.prefix + path.relative_to(self.layout.root).as_posix()

    def catch_up(self, tip: str | None, wait: bool = True) -> bool:
        """Make queue/.archive what the archive's commit `tip` holds, changing only the files
        that differ from what it shows (all of them when queue/.archive is gone). No `tip` (no
        archive on the remote yet, a ref gone) changes nothing: the checkout is never emptied
        for want of a ref. False when nothing changed (not `wait`ing: or the lock was busy)."""
        if tip is None or (tip == self.shown() and self.layout.archive_dir.is_dir()):
            return False
        with self.lock(wait) as held:
            shown = self.shown()
            whole = not self.layout.archive_dir.is_dir()  # a `git clean -x`, say: all anew
            if not held or (tip == shown and not whole):
                return False
            self._ignore()
            env = self._index()
            merged = not whole and shown is not None and (self.home / "index").is_file() \
                and gitops.git(self.layout.root, "read-tree", "-m", "-u", shown, tip, env=env,
                               check=False).returncode == 0
            if not merged:  # a first checkout, or a file of it changed by hand: all of it anew
                self._git("read-tree", "--reset", "-u", tip, env=env)
            self.layout.archive_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.home / "shown", tip)
            if self.ref != self.own:  # the commit shown stays reachable here (see `tip`)
                self._git("update-ref", self.own, tip)
            return True

    def _index(self) -> dict[str, str]:
        """The environment that has git use the checkout's own index (call under the lock)."""
        # only aq writes this index, under this lock: a lock file of it is a killed git's
        (self.home / "index.lock").unlink(missing_ok=True)
        return {"GIT_INDEX_FILE": str(self.home / "index")}

    def _repair(self, tip: str) -> None:
        """Put back what was removed or changed by hand in queue/.archive, which `put` plans on
        (the parts' keys, how full they are): a stat of each of its files."""
        env = self._index()
        changed = self._git("ls-files", "-d", "-m", "-z", "--", f"{QUEUE_DIR}/{ARCHIVE_DIR}",
                            env=env)
        if changed.strip("\0"):
            self._git("read-tree", "--reset", "-u", tip, env=env)

    def _ignore(self) -> None:
        """Have git ignore queue/.archive in the work tree: a person's `git add -A` or aq's own
        commits of queue/ never take the archive onto the branch."""
        line = f"/{self.layout.prefix}{QUEUE_DIR}/{ARCHIVE_DIR}/"
        exclude = Path(self._git("rev-parse", "--path-format=absolute", "--git-path",
                                 "info/exclude").strip())
        try:
            text = exclude.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        if line not in text.splitlines():
            write_atomic(exclude, text + ("" if not text or text.endswith("\n") else "\n")
                         + f"# aq: the archive's checkout (its own ref, {ARCHIVE_REFS}/...)\n"
                         + line + "\n")

    def put(self, plan: Callable[[], Mapping[Path, Content]], message: str,
            identity: Sequence[str], queue_lock: Callable[[], AbstractContextManager[object]]
            ) -> str | None:
        """Commit what `plan` says onto the archive's tip and push it as a compare-and-swap;
        `plan` runs on queue/.archive as of the tip each try, under the clone's `queue_lock`
        (no sibling moves a file meanwhile), so a try that lost a race decides again. The
        commit that landed (the tip when there was nothing to change; None: no archive yet and
        nothing to put in it)."""
        for attempt in range(PUT_TRIES):
            with queue_lock(), self.lock():
                if self.remote is not None and not self.remote.fetch():
                    raise RemoteUnreachable(f"cannot reach the queue's remote {self.remote.name!r}:"
                                            " nothing was archived; try again when it answers")
                tip = self.tip()
                if tip is not None:
                    self.catch_up(tip)
                    self._repair(tip)
                base = self._git("rev-parse", f"{tip}^{{tree}}").strip() if tip else EMPTY_TREE
                changes = plan()
                tree = gitops.patch_tree(self.layout.root, base, self._blobs(changes)) \
                    if changes else base
                if tree == base:
                    return tip
                commit = self._git(*identity, "commit-tree", tree, *(["-p", tip] if tip else []),
                                   "-m", message).strip()
                if self._land(commit, tip):
                    self.catch_up(self.tip())
                    return commit
            _backoff(attempt)
        raise RemoteBusy(f"gave up after {PUT_TRIES} tries: other machines kept changing the "
                         "archive first; try again")

    def _blobs(self, changes: Mapping[Path, Content]) -> dict[str, str | None]:
        """Each change's path in the tree and its blob (written), or None: taken out."""
        blobs: dict[str, str | None] = {}
        sources: list[tuple[str, Path]] = []
        with tempfile.TemporaryDirectory(prefix="aq-archive-") as scratch:
            for index, (path, content) in enumerate(changes.items()):
                if content is None:
                    blobs[self.tree_path(path)] = None
                    continue
                if isinstance(content, bytes):
                    written = Path(scratch) / str(index)
                    written.write_bytes(content)
                    content = written
                sources.append((self.tree_path(path), content))
            if sources:
                ids = self._git("hash-object", "-w", "--no-filters", "--stdin-paths",
                                input="".join(f"{source}\n" for _, source in sources)).split()
                blobs.update(zip((name for name, _ in sources), ids, strict=True))
        return blobs

    def _land(self, commit: str, tip: str | None) -> bool:
        """Move the archive's ref from `tip` to `commit`: on the remote by a push that fails if
        another moved it first, then here. False when another did."""
        if self.remote is None:
            return gitops.git(self.layout.root, "update-ref", self.ref, commit, tip or "",
                              check=False).returncode == 0
        outcome, said = self.remote.push(f"{commit}:{self.remote.archive_ref}")
        if outcome is Push.REFUSED:
            raise RemoteRefused(f"the remote {self.remote.name!r} refused the archive's push "
                                f"({said or 'no reason given'}): nothing was archived; try again later")
        if outcome is Push.TRANSPORT:  # it may have landed: the remote says
            if not self.remote.fetch():
                return False
            landed = self.tip()
            return landed is not None and self.remote.is_ancestor(commit, landed)
        if outcome is Push.OK:  # as a fetch would (none runs meanwhile: the queue lock is held)
            self._git("update-ref", self.ref, commit)
            return True
        return False


def _backoff(attempt: int) -> None:
    import random
    import time

    time.sleep(random.uniform(0, min(1.0, 0.02 * 2 ** min(attempt, 6))))

