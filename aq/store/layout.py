"""Where a queue's things are: the queue root, its stage and log folders, its archive, its
state folder.

A job's stage is the folder its file sits in: queue/<stage>/<id>.md, its events in
queue/.events/<id>.jsonl, its attempt logs under queue/.logs/<id>/. A final job archived
(`aq archive`) keeps that shape one part of the archive down: queue/.archive/<yyyy>/<mm>/<nnn>/
holds <stage>/<id>.md, .events/<id>.jsonl and .logs/<id>/ of at most PART_SIZE jobs that became
final in that month, so no folder of the queue nears a forge's limit on entries (GitHub: 3,000),
and keys.json, the idempotency keys of its jobs (key -> id), so that `aq add` finds them unread.

In a git queue the archive is not on the queue's branch: it is the checkout of a ref of its own
(aq.store.archive_ref), which git ignores in the work tree, so the branch every claim pushes
stays as small as the live queue. queue/archive/ is where earlier versions of aq kept it, on
the branch: it is read as parts of the archive too, and `aq archive` moves it over.
What only this machine needs (the lock, caches, running attempts) is in a state folder inside
the git dir.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from aq.core.ids import check_job_id, is_job_id
from aq.core.lifecycle import STAGES, Stage
from aq.errors import QueueNotFound
from aq.infra.confine import check
from aq.infra.files import find_git_dir

QUEUE_DIR = "queue"
EVENTS_DIR = ".events"
LOGS_DIR = ".logs"
HALT_FILE = "HALT"
PROFILES_DIR = "profiles"
ARCHIVE_DIR = ".archive"  # the archive's checkout: ignored by git, on a ref of its own
BRANCH_ARCHIVE_DIR = "archive"  # where earlier aq kept the archive: on the queue's branch
ARCHIVE_KEYS = "keys.json"  # in each part of the archive: its jobs' idempotency keys
CACHE_VERSION = 19  # of the cached manifests, states and profiles: bumped when one changes shape,
# or when the same file would now parse otherwise (a cached parse would outlive the change)

FINAL_STAGES = (Stage.SHIPPED, Stage.FAILED, Stage.DEAD_LETTER)  # what the archive holds
# Jobs in one part of a month's archive: its stage folders, .events/ and .logs/ each hold at
# most this many entries, a third of GitHub's 3,000, and a part still lists in a millisecond.
PART_SIZE = 1000


def find_root(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if (folder / QUEUE_DIR / Stage.INBOX).is_dir():
            return folder
    return None


def locate_root(explicit: str | None = None, cwd: Path | None = None) -> Path:
    """`--queue`/`AQ_QUEUE` if given, else the first folder up from cwd holding queue/inbox."""
    chosen = explicit or os.environ.get("AQ_QUEUE")
    if chosen:
        root = Path(chosen).expanduser()
        if not (root / QUEUE_DIR / Stage.INBOX).is_dir():
            raise QueueNotFound(f"{root} is not an aq queue (no queue/inbox): run 'aq init {root}'")
        return root
    here = cwd or Path.cwd()
    found = find_root(here)
    if found is None:
        raise QueueNotFound(f"no aq queue here or above {here}: run 'aq init' or pass --queue DIR")
    return found


def _top(root: Path) -> Path:
    """The top of the work tree holding `root` (`root` itself when none does)."""
    for folder in (root, *root.parents):
        if (folder / ".git").exists():
            return folder
    return root


def _state_key(root: Path) -> str:
    """One state folder per queue in a repo: '.' for a queue at the top, else its path's hash."""
    top = _top(root)
    if top == root:
        return "."
    import hashlib

    return "q-" + hashlib.sha256(str(root.relative_to(top)).encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Layout:
    """The paths of one queue, found once (`at`); and where a job's file is now."""

    root: Path
    qdir: Path
    git_dir: Path | None
    state_dir: Path  # this machine's own: lock, caches, running attempts; never committed

    @classmethod
    def at(cls, root: Path) -> Layout:
        root = root.resolve()
        qdir = root / QUEUE_DIR
        git_dir = find_git_dir(root)
        state_dir = (git_dir / "aq" / _state_key(root)) if git_dir else qdir / ".state"
        return cls(root, qdir, git_dir, state_dir)

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

    @property
    def workspace_key(self) -> str:
        """This queue's folder under workspaces_dir: its name and a hash of its path."""
        import hashlib

        return f"{self.root.name}-{hashlib.sha256(str(self.root).encode()).hexdigest()[:8]}"

    def stage_of(self, job_id: str) -> Stage | None:
        """Where the job's file is now (fresh from disk, a stat per stage)."""
        for stage in STAGES:
            if os.path.lexists(self.qdir / stage / f"{job_id}.md"):  # a link too: it is refused
                return stage
        return None

    def has_job(self, job_id: str) -> bool:
        """Whether the job's file is in a stage folder or the archive (fresh from disk)."""
        return is_job_id(job_id) and (self.stage_of(job_id) is not None
                                      or self.find_archived(job_id) is not None)

    def check_folders(self) -> None:
        """queue/ and its stage, event, log and archive folders are folders of this queue, not
        links to others (DESIGN §5): else the queue is refused in one line naming the link."""
        for name in (*STAGES, EVENTS_DIR, LOGS_DIR, ARCHIVE_DIR, BRANCH_ARCHIVE_DIR):
            check(self.root, self.qdir / name, folder=True)

    @property
    def prefix(self) -> str:
        """The queue root's path in its repository ('' at the top, else 'sub/dir/')."""
        top = _top(self.root)
        return "" if top == self.root else f"{self.root.relative_to(top).as_posix()}/"

    # --- the archive --------------------------------------------------------------------------

    @property
    def archive_dir(self) -> Path:
        """queue/.archive: where `aq archive` puts jobs (in git, the checkout of its own ref)."""
        return self.qdir / ARCHIVE_DIR

    @property
    def branch_archive_dir(self) -> Path:
        """queue/archive: the archive earlier aq kept on the queue's branch."""
        return self.qdir / BRANCH_ARCHIVE_DIR

    def part_dir(self, year: int, month: int, number: int) -> Path:
        """queue/.archive/<yyyy>/<mm>/<nnn>: the month's `number`th part (from 1)."""
        return self.archive_dir / f"{year:04d}" / f"{month:02d}" / f"{number:03d}"

    def month_parts(self, year: int, month: int) -> list[Path]:
        """The parts of one month of the archive, in both places, by number (a part on the
        branch first where both have one of that number)."""
        month_dirs = (base / f"{year:04d}" / f"{month:02d}"
                      for base in (self.branch_archive_dir, self.archive_dir))
        return sorted((part for folder in month_dirs for part in _numbered(folder)),
                      key=lambda part: int(part.name))

    def archive_parts(self) -> list[Path]:
        """Every part of the archive, oldest first (the branch's before the ref's): a listing of
        its year and month folders, never of the jobs in them. A folder that is a link is never
        entered."""
        return [part for base in (self.branch_archive_dir, self.archive_dir)
                for year in _numbered(base) for month in _numbered(year) for part in _numbered(month)]

    def in_branch_archive(self, part: Path) -> bool:
        """Whether `part` is one of the archive kept on the queue's branch (queue/archive)."""
        return part.is_relative_to(self.branch_archive_dir)

    def find_archived(self, job_id: str) -> tuple[Path, Stage] | None:
        """The part and final stage an archived job's file is in; None when it is in none. A
        stat per final stage of each part, newest part first (0.3 ms for 100 parts): the
        archive is searched only for an id that no stage folder holds."""
        name = f"{check_job_id(job_id)}.md"
        key = (self.qdir, job_id)
        known = _FOUND.get(key)
        if known is not None and os.path.lexists(known[0] / known[1] / name):
            return known
        for part in reversed(self.archive_parts()):
            for stage in FINAL_STAGES:
                if os.path.lexists(part / stage / name):
                    _FOUND[key] = (part, stage)
                    return part, stage
        return None


# Where this process last found an archived job: a job looked up again (a dep of an inbox job
# at every snapshot) costs one stat while it stays there.
_FOUND: dict[tuple[Path, str], tuple[Path, Stage]] = {}


def _numbered(folder: Path) -> list[Path]:
    """The subfolders of `folder` named by digits (years, months, parts), in order; links and
    anything else are left out (`aq fsck` names them)."""
    try:
        with os.scandir(folder) as entries:
            found = [entry.name for entry in entries
                     if entry.name.isdigit() and entry.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [folder / name for name in sorted(found, key=int)]
