"""One transaction's changes, made at once under the queue lock and undone if its commit fails."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aq.core.events import Event, JobState, fold
from aq.core.lifecycle import Stage
from aq.errors import JobNotFound, UnsafePath
from aq.infra.confine import check
from aq.infra.files import write_atomic
from aq.store.eventlog import read_events
from aq.store.layout import Layout


@dataclass(slots=True)
class Unpushed:
    """Work the remote has not taken yet: replayed on its tip until a push of it lands."""

    replay: Callable[[Tx], object]
    message: str
    commit: str | None = None  # a commit of this clone holding the work, whose push was not confirmed


class InboxWatch:
    """The inbox folder's mtime at the last look for job files a person dropped there. While it
    is unchanged, or changed only by this process, the next sync need not ask git for them."""

    def __init__(self, inbox: Path) -> None:
        self.inbox = inbox
        self.seen = 0  # the mtime at the last look; 0: never looked

    def changed(self) -> bool:
        """Whether a file came or went since the last look; the look is noted."""
        try:
            mtime = self.inbox.stat().st_mtime_ns
        except FileNotFoundError:
            return False
        if mtime == self.seen:
            return False
        self.seen = mtime
        return True

    def unchanged(self, *paths: Path) -> bool:
        """Before this process changes `paths`: True when one is in the inbox and nobody changed
        the inbox since the last look for dropped files (see own_change)."""
        if not self.seen or (paths and not any(path.parent == self.inbox for path in paths)):
            return False
        try:
            return self.inbox.stat().st_mtime_ns == self.seen
        except FileNotFoundError:
            return False

    def own_change(self, seen: bool) -> None:
        """After this process changed an inbox it had seen unchanged: the new mtime is no sign
        of a dropped file, so the next sync need not ask git for untracked jobs. (A change by
        anyone else before ours made `seen` False, and one after moves the mtime again.)"""
        if seen:
            with contextlib.suppress(FileNotFoundError):
                self.seen = self.inbox.stat().st_mtime_ns


class Tx:
    """The changes of one transaction. Each method does its I/O at once, under the queue lock."""

    def __init__(self, layout: Layout, inbox: InboxWatch, online: bool = True) -> None:
        self.layout = layout
        self.inbox = inbox
        self.online = online  # False: the remote did not answer; this change is kept unpushed
        self.touched: list[Path] = []
        self.moves: list[tuple[str, Stage, Stage, Event]] = []  # for hooks (aq.store.hooks)
        self._undo: list[Callable[[], None]] = []  # newest last: how to put each change back

    def stage_of(self, job_id: str) -> Stage | None:
        return self.layout.stage_of(job_id)

    def state(self, job_id: str) -> JobState:
        return fold(self.events(job_id))

    def events(self, job_id: str) -> list[Event]:
        return read_events(self.layout.events_path(job_id))

    def move(self, job_id: str, source: Stage, target: Stage, event: Event) -> None:
        """Move the job's file from `source` to `target` and record `event`; the file must be in `source`."""
        src = self.layout.job_path(source, job_id)
        dst = self.layout.job_path(target, job_id)
        if not os.path.lexists(src):
            raise JobNotFound(f"{job_id} is no longer in {source}")
        check(self.layout.root, src)  # a link is refused, not moved along
        check(self.layout.root, dst.parent, folder=True)
        self.append_event(job_id, event)
        dst.parent.mkdir(parents=True, exist_ok=True)
        seen = self.inbox.unchanged(src, dst)
        os.rename(src, dst)
        self._undo.append(lambda: os.rename(dst, src))
        self.inbox.own_change(seen)
        self.touched += [src, dst]
        self.moves.append((job_id, source, target, event))

    def relocate(self, src: Path, dst: Path) -> None:
        """Move one file of the queue to a free place in it, as one rename (a job's files into
        the archive and back: its stage is the same, so no event says so here)."""
        check(self.layout.root, src)  # a link is refused, not moved along
        check(self.layout.root, dst)
        if os.path.lexists(dst):
            raise UnsafePath(f"{self.layout.relative(dst)}: already there; aq moves "
                             f"{self.layout.relative(src)} only to a free place: remove one")
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.rename(src, dst)
        self._undo.append(lambda: os.rename(dst, src))
        self.touched += [src, dst]

    def append_event(self, job_id: str, event: Event) -> None:
        path = self.layout.events_path(job_id)
        check(self.layout.root, path)
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
        check(self.layout.root, path)  # nothing is written through a link, or outside the queue
        self._remember(path)
        seen = self.inbox.unchanged(path)
        write_atomic(path, data)
        self.touched.append(path)
        self.inbox.own_change(seen)

    def remove(self, path: Path) -> None:
        check(self.layout.root, path)
        self._remember(path)
        seen = self.inbox.unchanged(path)
        path.unlink(missing_ok=True)
        self.touched.append(path)
        self.inbox.own_change(seen)

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
        self.moves.clear()
