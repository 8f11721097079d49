"""After a worker died: the work its worktrees hold kept on origin, the worktrees removed."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from aq.errors import GitError
from aq.infra.gitops import git, head_of, must, origin_url, push_to, rejected, track, unpushed
from aq.infra.repocache import is_cache, locked
from aq.infra.worktree import commit_all, remove_worktree, used_elsewhere

RESCUE_TRIES = 5  # another machine may take the same rescued-<n> name at the same moment


def rescue_stale(root: Path, live: Callable[[str], bool], identity: Sequence[str], *,
                 timeout: float = 120,
                 on_error: Callable[[Path, GitError], None] | None = None) -> list[tuple[str, str]]:
    """Clean the worktrees under `root` that no live worker uses; keep the work they hold.

    For each worktree whose job is not `live` (and which no other live process on this
    machine opened), commit what was left uncommitted; when its HEAD holds commits origin has
    on no branch, keep them on a local branch `aq/<job>-rescued-<n>` (n: the next number free
    on origin) and push it; then remove the worktree. Returns (job id, rescued branch) pairs,
    the branch "" when nothing was unpushed. A worktree whose work cannot reach origin now is
    left as it is for the next start and not listed; so is a folder git cannot read as a
    worktree, and one that fails otherwise (reported to `on_error`, then the next is tried).
    Left-over worktrees of `merge_into_base` whose process is gone are removed too.
    """
    root = root.resolve()
    rescued = []
    folder = root / "worktrees"
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        job_id, attempt = _job_of(path.name)
        cache = None if live(job_id) else _cache_of(path)
        if cache is None:
            continue
        try:
            with locked(cache):
                if not path.is_dir() or live(job_id) or used_elsewhere(path):
                    continue
                message = (f"aq: work left in job {job_id} attempt {attempt or '?'} "
                           "when its worker stopped")
                branch = _rescue(cache, path, job_id, message, identity, timeout)
                if branch is None:
                    continue
                remove_worktree(cache, path)
        except GitError as err:
            if on_error is not None:
                on_error(path, err)
            continue
        rescued.append((job_id, branch))
    _clean_merges(root)
    return rescued


def _job_of(name: str) -> tuple[str, str | None]:
    found = re.fullmatch(r"(.+)-(\d+)", name)
    return (found[1], found[2]) if found else (name, None)


def _cache_of(path: Path) -> Path | None:
    """The cache a worktree belongs to, or None when `path` is no worktree git can read."""
    # without its own .git file git would look in the folders above (a dotfiles repo in ~)
    if path.is_symlink() or not (path / ".git").is_file():
        return None
    done = git(path, "rev-parse", "--git-common-dir", check=False)
    common = (path / done.stdout.strip()).resolve()  # relative to `path`, or absolute
    return common if done.returncode == 0 and is_cache(common) else None


def _rescue(cache: Path, path: Path, job_id: str, message: str, identity: Sequence[str],
            timeout: float) -> str | None:
    """Keep and push what the worktree holds; the rescued branch, "" for none, None: not now."""
    if git(cache, "fetch", "-q", "--prune", "origin", check=False, timeout=timeout).returncode:
        return None
    # its owner is gone: a lock its git left would only stop the commit that keeps the work
    git_dir = Path(must(git(path, "rev-parse", "--absolute-git-dir", check=False),
                        f"cannot read the worktree {path}").stdout.strip())
    (git_dir / "index.lock").unlink(missing_ok=True)
    commit_all(path, message, identity)
    head = head_of(path)
    if not unpushed(cache, head):
        return ""
    url = origin_url(cache)
    for _ in range(RESCUE_TRIES):
        branch = f"aq/{job_id}-rescued-{_next_rescue_number(cache, job_id)}"
        git(cache, "branch", "-q", "-f", branch, head)
        done = push_to(cache, url, f"{head}:refs/heads/{branch}", timeout)
        if done.returncode == 0:
            track(cache, branch, head)
            return branch
        if not rejected(done):
            return None  # the commits are safe on the local branch and in the worktree
        git(cache, "branch", "-q", "-D", branch, check=False)
        if git(cache, "fetch", "-q", "--prune", "origin", check=False, timeout=timeout).returncode:
            return None
    return None


def _next_rescue_number(cache: Path, job_id: str) -> int:
    prefix = f"refs/remotes/origin/aq/{job_id}-rescued-"
    done = git(cache, "for-each-ref", "--format=%(refname)", f"{prefix}*")
    taken = [int(ref[len(prefix):]) for ref in done.stdout.split() if ref[len(prefix):].isdigit()]
    return max(taken, default=0) + 1


def _clean_merges(root: Path) -> None:
    folder = root / "merges"
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        cache = _cache_of(path)
        if cache is None:
            continue
        with locked(cache):
            if path.is_dir() and not used_elsewhere(path, by_me=True):
                remove_worktree(cache, path)

