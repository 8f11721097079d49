"""This clone's side of a change: take the lock, apply the change, commit what it touched."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TypeVar

from aq.errors import GitError, QueueBusy
from aq.store.layout import QUEUE_DIR, Layout
from aq.store.tx import InboxWatch, Tx

T = TypeVar("T")


class Local:
    """The clone's lock, and changes applied and committed under it (nothing pushed here)."""

    def __init__(self, layout: Layout, inbox: InboxWatch) -> None:
        self.layout = layout
        self.inbox = inbox
        self.commits = 0  # made by this process: a transaction that made none pushes nothing
        # a worker's: the line its commits end with to renew its machine's leases, and those
        self.trailer: Callable[[], tuple[str, frozenset[str]]] | None = None
        self.carried: set[str] = set()  # leases named by the commits made since `carry_anew`
        self.signed = False  # a commit made since `carry_anew` carries the trailer

    @contextmanager
    def lock(self, timeout: float = 120.0) -> Iterator[None]:
        """The clone's lock: every writer of this queue on this machine takes it."""
        from filelock import FileLock, Timeout

        path = self.layout.state_dir / "queue.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path), timeout=timeout)
        try:
            lock.acquire(poll_interval=0.005)  # a waiting sibling worker gets its turn promptly
        except Timeout:
            raise QueueBusy(f"the queue lock {path} is busy: another aq is writing; try again") from None
        try:
            yield
        finally:
            lock.release()

    def apply(self, change: Callable[[Tx], T], message: str, describe: Callable[[T], str] | None,
              *, exact: bool, online: bool = True) -> T:
        """Run `change` (under the lock) and commit what it touched; on any failure every file
        it changed is put back. `exact`: commit exactly the touched paths, else all of queue/."""
        tx = Tx(self.layout, self.inbox, online)
        paths: list[Path] | None = None
        staging = False  # once the commit has begun, its paths may be staged
        try:
            result = change(tx)
            if tx.touched:
                text = describe(result) if describe and result is not None else message
                paths = list(tx.touched) if exact else None
                staging = True
                try:
                    self.commit(text, paths)
                except GitError as err:
                    from aq.infra.gitops import clear_stale_locks  # lazily: see `commit`

                    # a lock file left by a git killed earlier: gone, the commit goes through
                    if ".lock" not in str(err) or not clear_stale_locks(self.layout.git_dir,
                                                                        older_than=2.0):
                        raise
                    self.commit(text, paths)
        except BaseException:
            tx.rollback()  # nothing half-done stays in the clone: its files, nor the index
            if staging:
                self._unstage(paths)
            raise
        return result

    def _unstage(self, touched: list[Path] | None) -> None:
        """The index as HEAD has it for the paths a failed commit staged (None: all of queue/),
        so that a person's next `git commit` does not take half a transaction."""
        if self.layout.git_dir is None:
            return
        from aq.infra import gitops

        with contextlib.suppress(GitError, OSError):
            gitops.unstage(self.layout.root, self._git_paths(touched))

    def _git_paths(self, touched: list[Path] | None) -> list[str]:
        """What a commit of `touched` names to git (None: all of queue/)."""
        return [QUEUE_DIR] if touched is None else [self.layout.relative(p) for p in touched]

    def commit(self, message: str, touched: list[Path] | None = None) -> None:
        """Commit the queue: with a remote, exactly the paths the transaction touched (never a
        file a person dropped, which is adopted on its own); alone, everything in queue/."""
        identity = self.identity
        if identity is None:
            return
        from aq.infra import gitops  # lazily: `aq next` writes nothing and loads no git plumbing

        paths = self._git_paths(touched)
        line, tokens = self.trailer() if self.trailer is not None else ("", frozenset())
        if line:  # naming no lease, it still shows the machine alive
            message = f"{message}\n\n{line}"
        if gitops.commit_paths(self.layout.root, paths, message, identity, exact=touched is not None):
            self.commits += 1
            self.carried |= tokens
            self.signed = self.signed or bool(line)

    def carry_anew(self) -> None:
        """Forget the leases named so far: the commits that named them are gone or pushed."""
        self.carried.clear()
        self.signed = False

    @cached_property
    def identity(self) -> list[str] | None:
        """`-c user.name/-c user.email` when this machine has no git identity (None: no git)."""
        from aq.infra import gitops  # lazily: see `commit`

        if self.layout.git_dir is None:
            return None
        return gitops.identity_args(self.layout.root)
