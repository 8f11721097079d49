"""A worktree of a repository cache: who opened it, committing all it holds, removing it.

Each worktree records which process opened it (`aq-owner` in its private git dir), so a worker
starting on the machine never rescues a worktree another live process is using, even one of
another queue.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path

from aq.errors import GitError
from aq.infra.gitops import git, head_of, must, reason

_OWNER = "aq-owner"  # in a worktree's private git dir: "<host> <pid>" of the process using it


def mark_owner(path: Path) -> None:
    """Record this process as the one using the worktree at `path`."""
    git_dir = Path(git(path, "rev-parse", "--absolute-git-dir").stdout.strip())
    temp = git_dir / f"{_OWNER}.{os.getpid()}.tmp"
    temp.write_text(f"{socket.gethostname()} {os.getpid()}\n", encoding="utf-8")
    os.replace(temp, git_dir / _OWNER)


def used_elsewhere(path: Path, *, by_me: bool = False) -> bool:
    """True when another live process (or another machine) opened the worktree at `path`;
    with `by_me`, this process counts too."""
    done = git(path, "rev-parse", "--absolute-git-dir", check=False)
    try:
        host, pid = (Path(done.stdout.strip()) / _OWNER).read_text(encoding="utf-8").split()
        owner = int(pid)
    except (OSError, ValueError):
        return False  # no mark: made by no aq process, or one killed before it could mark it
    if host != socket.gethostname():
        return True  # a shared folder: that machine's processes cannot be seen from here
    if owner == os.getpid():
        return by_me  # else the caller's `live` decides
    try:
        os.kill(owner, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def commit_all(path: Path, message: str, identity: Sequence[str]) -> str | None:
    """Commit everything in the worktree (untracked files too, no hooks run); the new commit,
    None when there was nothing to commit."""
    must(git(path, "add", "-A", check=False), f"cannot stage the files left in {path}")
    staged = git(path, "diff", "--cached", "--quiet", check=False)
    if staged.returncode == 0:
        return None
    if staged.returncode != 1:
        raise GitError(f"cannot tell what changed in {path}: {reason(staged)}")
    must(git(path, *identity, "commit", "-q", "--no-verify", "-m", message, check=False),
         f"cannot commit the files left in {path}")
    return head_of(path)


def remove_worktree(cache: Path, path: Path) -> None:
    """Remove a worktree folder and its metadata. Under the lock."""
    git(cache, "worktree", "remove", "--force", "--force", str(path), check=False)
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        try:
            shutil.rmtree(path)
        except OSError as err:
            raise GitError(f"cannot remove the worktree {path}: {err.strerror or err}; "
                           "remove it by hand") from None
    git(cache, "worktree", "prune")

