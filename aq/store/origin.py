"""Which remote and branch a clone's queue syncs with, known without starting git while the
clone's HEAD and its repository's config are unchanged since a command last asked git.

`aq ls` says how old the clone's view of the remote is, so it must know whether there is one;
two git processes for that were a good part of its start-up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from aq.errors import GitError
from aq.infra.files import Signature, StatCache, signature
from aq.store.layout import Layout

CACHE_NAME = "origin.pickle"


@dataclass(frozen=True, slots=True)
class Origin:
    name: str  # the git remote: aq.yaml `remote:`, else origin
    branch: str  # the clone's current branch, the queue's branch on the remote


def find_origin(layout: Layout, configured: str | None) -> Origin | None:
    """The queue's remote: aq.yaml `remote:`, else `origin` if the repo has it; None for a
    local queue. A configured remote the clone does not have is an error that says the fix."""
    if layout.git_dir is None:
        return None
    names, branch = _remotes_and_branch(layout, layout.git_dir)
    name = configured or ("origin" if "origin" in names else None)
    if name is None:
        return None
    if name not in names:
        raise GitError(f"aq.yaml names remote {name!r}, which this clone does not have: "
                       f"git remote add {name} URL")
    return Origin(name, branch)


def current_branch(layout: Layout) -> str:
    """The clone's current branch ("main" when it has none yet)."""
    return "main" if layout.git_dir is None else _remotes_and_branch(layout, layout.git_dir)[1]


def _remotes_and_branch(layout: Layout, git_dir: Path) -> tuple[tuple[str, ...], str]:
    key = _key(git_dir)
    cache = StatCache(layout.state_dir / CACHE_NAME, version=1)
    if key is not None:
        hit = cache.load(key)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
    from aq.infra import gitops  # lazily: a warm command starts no git here

    names = tuple(gitops.git(layout.root, "remote", check=False).stdout.split())
    head = gitops.git(layout.root, "symbolic-ref", "--short", "-q", "HEAD", check=False)
    found = (names, head.stdout.strip() or "main")
    if key is not None:
        cache.save(key, found)
    return found


def _key(git_dir: Path) -> tuple[Signature, ...] | None:
    """The signatures of the files git answers from: the clone's HEAD and its repository's
    config (a worktree's is in the common dir). None (ask git every time) when one is missing
    or the config includes other files, whose changes these signatures would not show."""
    common = git_dir
    pointer = git_dir / "commondir"
    try:
        if pointer.is_file():
            common = (git_dir / pointer.read_text(encoding="utf-8").strip()).resolve()
        config = common / "config"
        if b"[include" in config.read_bytes().lower():
            return None
        return tuple(signature(os.stat(path)) for path in (git_dir / "HEAD", config))
    except OSError:
        return None
