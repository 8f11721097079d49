"""Workspaces: one git worktree per attempt, made from the machine's cache of the repository.

A job with `repo` runs in a worktree of its own on branch `aq/<job-id>`, made from a cache of
that repository that every worker on the machine shares, whatever queue it serves
(aq.infra.repocache). `root` is one queue's folder under the workspaces folder
(`<top>/<queue-key>`):

    <top>/repos/<slug>-<hash>/         the cache: a bare repository, origin's branches fetched
                                       to refs/remotes/origin/*; one per repo on the machine
    <top>/repos/<slug>-<hash>.lock     its file lock: fetches and worktree bookkeeping
    <root>/worktrees/<job-id>-<n>/     the worktree of attempt n
    <root>/merges/<slug>-<hash>-<id>/  a short-lived worktree of `merge_into_base`
                                       (aq.infra.shipping)

Pushes go to origin's URL, not to the remote's name, so they write no ref in the cache and
need no lock while the network is slow; the remote-tracking ref is then updated under the lock.
A worktree whose worker died is rescued by aq.infra.rescue.

This module is git plumbing only: it knows jobs by id and nothing of the queue.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aq.errors import GitError
from aq.infra.gitops import (
    commit_of,
    git,
    head_of,
    must,
    origin_url,
    push_to,
    reason,
    rejected,
    remote_commit,
    shown_url,
    track,
    unpushed,
)
from aq.infra.repocache import (
    cache_dir_for,
    clone_or_fetch,
    default_branch,
    is_cache,
    locked,
    normalize,
)
from aq.infra.worktree import commit_all, mark_owner, remove_worktree


@dataclass(frozen=True, slots=True)
class Workspace:
    """One attempt's worktree of a project repository."""

    repo: str  # the repository as cloned: a URL, or an absolute path
    cache: Path  # the machine's cache of that repository (bare)
    path: Path  # the worktree the engine and verify run in
    branch: str  # aq/<job-id>
    base: str  # the branch the job started from (for diff and merge)
    start: str  # the commit this attempt started from
    remote_tip: str | None = None  # origin's aq/<job-id> when the attempt opened (None: none yet)


def default_root() -> Path:
    """Where workspaces live when aq.yaml names no `workspaces_dir`: the user's cache folder."""
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "aq" / "workspaces"


def open_workspace(repo: str, job_id: str, attempt: int, *, root: Path, base: str | None,
                   from_base: bool, timeout: float = 300) -> Workspace:
    """Fetch the cache and make attempt `attempt`'s worktree on branch `aq/<job_id>`.

    It starts from origin's `aq/<job_id>` when that exists (a retry sees what the previous
    attempt pushed), else, or with `from_base`, from origin's `base` (default: its default
    branch). A worktree left at the same path is removed first; another worktree still holding
    the branch (an earlier attempt on this machine) is detached from it, keeping its files for
    `rescue_stale`.
    """
    root = root.resolve()
    cache = cache_dir_for(repo, root)
    branch = f"aq/{job_id}"
    path = root / "worktrees" / f"{job_id}-{attempt}"
    with locked(cache):
        clone_or_fetch(repo, cache, timeout)
        base = base or default_branch(cache)
        base_commit = commit_of(cache, f"refs/remotes/origin/{base}")
        if base_commit is None:
            raise GitError(f"{shown_url(normalize(repo))} has no branch {base!r} to start job "
                           f"{job_id} from: push that branch or set base: to one it has")
        tip = commit_of(cache, f"refs/remotes/origin/{branch}")
        start = tip if tip is not None and not from_base else base_commit
        _clear_way(cache, path, branch)
        path.parent.mkdir(parents=True, exist_ok=True)
        must(git(cache, "worktree", "add", "-q", "--no-track", "-B", branch, str(path), start,
                 check=False), f"cannot make the worktree {path} for job {job_id}")
        mark_owner(path)
    return Workspace(normalize(repo), cache, path, branch, base, start, tip)


def _clear_way(cache: Path, path: Path, branch: str) -> None:
    """Remove what is at `path` and detach any other worktree from `branch`. Under the lock."""
    if path.exists() or path.is_symlink():
        remove_worktree(cache, path)
    else:
        git(cache, "worktree", "prune")
    for other, held in _worktrees(cache):
        if held == f"refs/heads/{branch}" and other != path and other.is_dir():
            must(git(other, "checkout", "-q", "--detach", check=False),
                 f"cannot detach the old worktree {other} from {branch}")


def _worktrees(cache: Path) -> list[tuple[Path, str | None]]:
    """(path, branch ref or None when detached) of each linked worktree of the cache."""
    done = git(cache, "worktree", "list", "--porcelain")
    found: list[tuple[Path, str | None]] = []
    for block in done.stdout.strip().split("\n\n"):
        fields = dict(line.partition(" ")[::2] for line in block.splitlines())
        if "worktree" in fields and "bare" not in fields:
            found.append((Path(fields["worktree"]).resolve(), fields.get("branch")))
    return found


def commit_leftovers(ws: Workspace, message: str, identity: Sequence[str]) -> str | None:
    """Commit everything the engine left uncommitted (untracked files too, not ignored ones).

    Returns the new commit, or None when there was nothing to commit. Hooks are not run.
    """
    _require(ws.path)
    return commit_all(ws.path, message, identity)


def push_branch(ws: Workspace, *, timeout: float = 120) -> bool:
    """Push the worktree's HEAD to origin's `aq/<job>`. True once the remote has that commit.

    An ordinary push: the branch only moves forward, except when this attempt started over from
    base (`from_base` over an existing branch), which replaces exactly the tip it saw when it
    opened and nothing pushed since. False when origin's branch holds commits this attempt
    lacks (another attempt pushed more): retrying will not help. A remote that cannot be
    reached raises GitError (retrying may help); the work stays committed in the worktree.
    """
    _require(ws.path)
    head = head_of(ws.path)
    url = origin_url(ws.cache)
    ref = f"refs/heads/{ws.branch}"
    done = push_to(ws.path, url, f"HEAD:{ref}", timeout)
    if rejected(done) and ws.remote_tip is not None and ws.remote_tip != ws.start:
        done = push_to(ws.path, url, f"HEAD:{ref}", timeout, f"--force-with-lease={ref}:{ws.remote_tip}")
    if done.returncode != 0:
        if rejected(done):
            return False
        if remote_commit(ws.cache, url, ref, timeout) != head:  # a push that timed out may have landed
            raise GitError(f"cannot push {ws.branch} to {shown_url(url)}: {reason(done)}")
    with locked(ws.cache):
        track(ws.cache, ws.branch, head)
    return True


def commits_since_start(ws: Workspace) -> list[str]:
    """The commits on the worktree's HEAD since the attempt started, oldest first."""
    _require(ws.path)
    done = git(ws.path, "rev-list", "--reverse", f"{ws.start}..HEAD")
    return done.stdout.split()


def changed_files(ws: Workspace) -> list[str]:
    """Paths (sorted) that differ from the attempt's start: committed, uncommitted or untracked."""
    _require(ws.path)
    tracked = git(ws.path, "diff", "--name-only", "-z", "--no-renames", ws.start).stdout
    untracked = git(ws.path, "ls-files", "-z", "--others", "--exclude-standard").stdout
    return sorted({path for path in (tracked + "\0" + untracked).split("\0") if path})


def remove_workspace(ws: Workspace) -> None:
    """Remove the worktree (uncommitted changes in it are dropped) and its git bookkeeping.

    The local branch goes too once origin has it; an unpushed branch stays in the cache.
    """
    if not is_cache(ws.cache):
        shutil.rmtree(ws.path, ignore_errors=True)
        return
    with locked(ws.cache):
        remove_worktree(ws.cache, ws.path)
        tip = commit_of(ws.cache, f"refs/heads/{ws.branch}")
        if tip is not None and not unpushed(ws.cache, tip):
            git(ws.cache, "branch", "-q", "-D", ws.branch, check=False)


def _require(path: Path) -> None:
    # git run in a missing folder would report that git is not installed
    if not (path / ".git").exists():
        raise GitError(f"the worktree {path} is gone: the attempt's uncommitted work cannot be kept")

