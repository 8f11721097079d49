"""The queue's clone on this machine, brought to the remote's tip without losing anyone's work.

Moving to the tip drops local commits the remote refused. aq's own go (their work is replayed
as unpushed work, or salvaged); a person's stay on a branch; a job file a person dropped into the inbox,
which no commit holds, is put back. Files outside what aq manages are never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aq.infra import gitops, proc
from aq.store.sync import Remote

MANAGED_PATHS = ("queue", "aq.yaml", "profiles")
# untracked files under queue/ that a person made and aq must never clean away
PERSONS_FILES = (":(exclude)queue/inbox/*.md", ":(exclude)queue/HALT")


@dataclass(frozen=True, slots=True)
class LocalChange:
    """One of aq's own commits the remote lacks: the events it appended (job id -> events) and
    the files it added or changed under queue/ (path relative to the queue root -> bytes)."""

    commit: str
    subject: str
    events: dict[str, list[dict[str, Any]]]
    files: dict[str, bytes]


@dataclass(frozen=True, slots=True)
class Clone:
    """The work tree and branch of the clone that `remote` is the remote of."""

    remote: Remote

    @property
    def root(self) -> Path:
        return self.remote.root

    def _git(self, *args: str, check: bool = True) -> proc.Completed:
        return gitops.git(self.root, *args, check=check)

    def align(self, heads: tuple[str | None, str | None] | None = None) -> str | None:
        """Make HEAD and the queue's files what the remote's tip holds.

        A fast-forward when HEAD is behind; otherwise (local commits the remote refused) HEAD
        and the index move to the tip and the files aq manages are checked out from it. Files
        outside queue/, aq.yaml and profiles/ are never touched. Commits aq did not make are
        kept on a branch first; its name is returned (None when there were none). `heads`:
        HEAD and the tip when the caller has just read them.
        """
        head, tip = heads or self.remote.heads()
        if tip is None or tip == head:
            return None
        kept = self._keep_persons_commits(tip)
        # one call in the common case (behind, or only aq's refused commits on top): --keep moves
        # HEAD, index and the files that differ, and refuses rather than lose a local change.
        # Only when no file outside what aq manages differs: a person's own work is never touched.
        outside = [f":(exclude){path}" for path in MANAGED_PATHS]
        if self._git("diff", "--quiet", tip, "HEAD", "--", ".", *outside, check=False).returncode == 0:
            done = self._git("reset", "-q", "--keep", tip, check=False)
            if done.returncode == 0:
                return kept
        dropped = self._dropped_jobs()
        self._git("reset", "-q", "--mixed", tip)
        present = [p for p in MANAGED_PATHS  # ./path: relative to the queue root, not the repo's top
                   if self._git("cat-file", "-e", f"{tip}:./{p}", check=False).returncode == 0]
        if present:
            self._git("checkout", "-q", "-f", tip, "--", *present)
        self._git("clean", "-fdq", "--", "queue", *PERSONS_FILES)
        self._restore_dropped(dropped)
        return kept

    def unpushed_aq_commits(self, tip: str, skip: Set[str] = frozenset()) -> list[LocalChange]:
        """aq's own commits in this clone that the remote lacks, oldest first, each as the events
        it appended and the files it wrote under queue/: what a worker that died left unpushed."""
        done = self._git("log", "--reverse", "--format=%H %P%x00%s", f"{tip}..HEAD", check=False)
        changes = []
        for line in filter(None, done.stdout.splitlines()):
            ids, _, subject = line.partition("\0")
            commit, *parents = ids.split()
            if not subject.startswith("aq:") or len(parents) != 1 or commit in skip:
                continue
            changes.append(self._change_of(commit, parents[0], subject))
        return changes

    def _change_of(self, commit: str, parent: str, subject: str) -> LocalChange:
        events: dict[str, list[dict[str, Any]]] = {}
        diff = self._git("diff", "--relative", "--no-renames", "-U0", parent, commit, "--",
                         "queue/.events", check=False).stdout
        job_id = None
        for line in diff.splitlines():
            if line.startswith("+++ "):
                name = line[4:].rsplit("/", 1)[-1]
                job_id = name[:-len(".jsonl")] if name.endswith(".jsonl") else None
            elif line.startswith("+") and job_id is not None:
                try:
                    event = json.loads(line[1:])
                except ValueError:
                    continue
                if isinstance(event, dict):
                    events.setdefault(job_id, []).append(event)
        files: dict[str, bytes] = {}
        names = self._git("diff", "--relative", "--no-renames", "--name-status", "-z", parent, commit,
                          "--", "queue", check=False).stdout.split("\0")
        for status, path in zip(names[::2], names[1::2], strict=False):
            if status in ("A", "M") and not path.startswith("queue/.events/"):
                shown = proc.run_bytes([*gitops.GIT, "show", f"{commit}:./{path}"], cwd=self.root)
                if shown is not None:
                    files[path] = shown
        return LocalChange(commit, subject, events, files)

    def _keep_persons_commits(self, tip: str) -> str | None:
        """Moving to the tip drops local commits the remote does not have. aq's own (refused
        claims, unpushed work it replays) may go; a person's, or an agent's that committed in the
        queue's clone, never: they stay on a local branch aq-kept/<commit>, which is returned."""
        done = self._git("log", "-n", "20", "--format=%h %s", f"{tip}..HEAD", check=False)
        theirs = [line for line in done.stdout.splitlines()
                  if line and not line.split(" ", 1)[-1].startswith("aq:")]
        if not theirs:
            return None
        branch = f"aq-kept/{theirs[0].split(' ', 1)[0]}"
        self._git("branch", "-f", branch, "HEAD")
        return branch

    def discard_uncommitted(self) -> list[str]:
        """Put queue/ back to HEAD when a process killed mid-transaction left half a move there
        (call only under the queue lock). A job file in the inbox that no commit holds is kept
        when it is a person's (no other stage has that job) and removed when it is the moved
        copy of a job HEAD has elsewhere."""
        done = self._git("status", "--porcelain=v1", "-uall", "--", *self._outside_archive(),
                         check=False)
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        dirty = [line for line in lines  # a person's files: jobs dropped in the inbox, a HALT
                 if not (line.startswith("?? queue/inbox/") and line.endswith(".md"))
                 and line != "?? queue/HALT"]
        leftovers = []
        for line in lines:
            if line.startswith("?? queue/inbox/") and line.endswith(".md"):
                name = line[3:].rsplit("/", 1)[1]
                tracked = self._git("ls-files", "--", *[f"queue/{stage}/{name}" for stage in
                                                        ("building", "review", "testing", "shipped",
                                                         "failed", "dead_letter")], check=False)
                if tracked.stdout.strip():
                    leftovers.append(line[3:])
        if not dirty and not leftovers:
            return []
        if dirty:
            self._git("reset", "-q", "HEAD", "--", "queue", check=False)  # what it staged, too
            self._git("checkout", "-q", "HEAD", "--", "queue", check=False)
            self._git("clean", "-fdq", "--", "queue", *PERSONS_FILES, check=False)
        for path in leftovers:
            (self.root / path).unlink(missing_ok=True)
        return dirty + leftovers

    def _outside_archive(self) -> list[str]:
        """queue/'s entries but the archive's (a year of jobs: a move into it half-made shows in
        the folder it left; queue/.archive is not the branch's at all), on disk or in HEAD, each
        a pathspec of its own. Named, git looks only at their part of the index; an exclusion
        has it match every path of the archive."""
        names = self._in_head("queue/") or set()
        with contextlib.suppress(OSError), os.scandir(self.root / "queue") as entries:
            names |= {f"queue/{entry.name}" for entry in entries}
        names -= {"queue/archive", "queue/.archive"}
        return sorted(f":(literal){name}" for name in names) or ["queue"]

    def _in_head(self, folder: str) -> set[str] | None:
        """The paths HEAD's tree holds directly in `folder` (given with its "/"), read from the
        tree, not the index; None when git cannot say (no HEAD yet)."""
        listed = self._git("ls-tree", "--name-only", "-z", "HEAD", folder, check=False)
        return set(filter(None, listed.stdout.split("\0"))) if listed.returncode == 0 else None

    def untracked_inbox_jobs(self) -> dict[Path, bytes]:
        """Job files in queue/inbox that git does not track: dropped there by a person."""
        return {path: data for path, (data, _mtime) in self._dropped_jobs().items()}

    def _dropped_jobs(self) -> dict[Path, tuple[bytes, float]]:
        """Job files a person dropped into the inbox that no commit holds yet."""
        inbox = self.root / "queue" / "inbox"
        with contextlib.suppress(OSError), os.scandir(inbox) as entries:
            on_disk = {entry.name for entry in entries if entry.name.endswith(".md")}
            # most of the time there are none: HEAD's inbox (a tree, not the whole index) says so
            listed = self._in_head("queue/inbox/")
            if listed is not None and not on_disk - {name.rsplit("/", 1)[-1] for name in listed}:
                return {}
        done = self._git("ls-files", "-z", "--others", "--exclude-standard", "--", "queue/inbox",
                         check=False)
        dropped = {}
        for name in filter(None, done.stdout.split("\0")):
            path = self.root / name
            if name.endswith(".md") and path.is_file() and not path.is_symlink():  # never followed
                dropped[path] = (path.read_bytes(), path.stat().st_mtime)
        return dropped

    def _restore_dropped(self, dropped: Mapping[Path, tuple[bytes, float]]) -> None:
        """Put dropped files back, unless the tip now has a job of that id in some stage."""
        queue_dir = self.root / "queue"
        for path, (data, mtime) in dropped.items():
            name = path.name
            if any((folder / name).exists() for folder in queue_dir.iterdir() if folder.is_dir()):
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            os.utime(path, (mtime, mtime))
