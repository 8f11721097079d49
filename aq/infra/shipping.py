"""Reviewing and shipping a job's branch: its diff against base, and its merge into base."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
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
)
from aq.infra.repocache import cache_dir_for, clone_or_fetch, is_cache, locked, normalize
from aq.infra.worktree import mark_owner, remove_worktree

MERGE_TRIES = 3  # the base may move between our fetch and our push


def diff_against_base(cache: Path, branch: str, base: str, *, fetch: bool = True,
                      timeout: float = 120) -> str:
    """The patch `branch` makes against `base` since they forked (`origin/base...origin/branch`)."""
    if not is_cache(cache):
        raise GitError(f"{cache} is no repository cache: call ensure_cache first")
    if fetch:
        with locked(cache):
            must(git(cache, "fetch", "-q", "--prune", "origin", check=False, timeout=timeout),
                 f"cannot fetch {shown_url(origin_url(cache))} into {cache}")
    for name in (base, branch):
        if commit_of(cache, f"refs/remotes/origin/{name}") is None:
            raise GitError(f"{shown_url(origin_url(cache))} has no branch {name!r}: nothing to compare")
    done = git(cache, "diff", "--no-color", "--no-ext-diff",
               f"refs/remotes/origin/{base}...refs/remotes/origin/{branch}")
    return done.stdout


def merge_into_base(repo: str, root: Path, branch: str, base: str, message: str,
                    identity: Sequence[str], *, timeout: float = 120) -> str:
    """Merge origin's `branch` into `base` (always a merge commit) and push base; the new tip.

    Done in a temporary worktree, so no one's files change. A conflict is aborted and raises
    GitError naming the conflicting files; base is then unchanged on origin. When base moves
    on origin meanwhile the merge is made again on its new tip. A branch already in base
    returns base's tip and pushes nothing.
    """
    root = root.resolve()
    cache = cache_dir_for(repo, root)
    for _ in range(MERGE_TRIES):
        path, base_commit = _merge_worktree(repo, root, cache, branch, base, timeout)
        url = origin_url(cache)
        try:
            head = _merge(path, branch, base, message, identity)
            if head == base_commit:
                return head
            done = push_to(path, url, f"HEAD:refs/heads/{base}", timeout)
            if rejected(done):
                continue  # base moved on origin: merge again onto its new tip
            if done.returncode and remote_commit(cache, url, f"refs/heads/{base}", timeout) != head:
                raise GitError(f"cannot push {base} to {shown_url(url)}: {reason(done)}")
            with locked(cache):
                track(cache, base, head)
            return head
        finally:
            with locked(cache):
                remove_worktree(cache, path)
    raise GitError(f"{base} kept moving on {shown_url(normalize(repo))} while {branch} was merged "
                   "into it; try the ship again")


def _merge_worktree(repo: str, root: Path, cache: Path, branch: str, base: str,
                    timeout: float) -> tuple[Path, str]:
    """Fetch, then a detached worktree at origin's `base`; its path and base's commit."""
    with locked(cache):
        clone_or_fetch(repo, cache, timeout)
        base_commit = commit_of(cache, f"refs/remotes/origin/{base}")
        if base_commit is None or commit_of(cache, f"refs/remotes/origin/{branch}") is None:
            missing = base if base_commit is None else branch
            raise GitError(f"{shown_url(normalize(repo))} has no branch {missing!r}: nothing to merge")
        path = root / "merges" / f"{cache.name}-{uuid.uuid4().hex[:8]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        must(git(cache, "worktree", "add", "-q", "--detach", str(path),
                 f"refs/remotes/origin/{base}", check=False),
             f"cannot make a worktree to merge {branch} into {base}")
        mark_owner(path)
    return path, base_commit


def _merge(path: Path, branch: str, base: str, message: str, identity: Sequence[str]) -> str:
    done = git(path, *identity, "merge", "-q", "--no-ff", "--no-verify", "--no-edit", "-m",
               message, f"refs/remotes/origin/{branch}", check=False)
    if done.returncode == 0:
        return head_of(path)
    unmerged = git(path, "diff", "--name-only", "-z", "--diff-filter=U", check=False).stdout
    conflicts = sorted({name for name in unmerged.split("\0") if name})
    git(path, "merge", "--abort", check=False)
    if conflicts:
        raise GitError(f"{branch} does not merge cleanly into {base} (conflicts in "
                       f"{', '.join(conflicts)}): merge {base} into {branch} and resolve them, "
                       "or retry the job from base")
    raise GitError(f"cannot merge {branch} into {base}: {reason(done)}")

