"""The machine's cache of a project repository: cloned once, then fetched, under a file lock.

One cache per repository per machine, shared by every worker whatever queue it serves
(`<top>/repos/<slug>-<hash>/`, beside the queues' folders). It is bare (`git init --bare`
with origin's usual refspec) so that no branch is checked out in it: a worktree (aq.infra.repos)
may hold any branch, the base included. Its lock, `<top>/repos/<slug>-<hash>.lock`, guards
fetches and worktree bookkeeping.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from aq.errors import GitError
from aq.infra.gitops import commit_of, git, must, shown_url

LOCK_TIMEOUT = 900.0  # the holder may be cloning or fetching a big repository (300 s each)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SCP = re.compile(r"^[^/\\]{2,}:")  # host:path or user@host:path: a colon before any slash


def resolve_repo(repo: str, queue_root: Path) -> str:
    """A job's `repo:` as this machine reaches it: a URL as given, a path relative to the
    queue's folder (so one aq.yaml works from every clone of the queue)."""
    repo = repo.strip()
    if not repo or _URL.match(repo) or _SCP.match(repo):
        return repo
    path = Path(repo).expanduser()
    return str(path if path.is_absolute() else (queue_root / path).resolve())


def normalize(repo: str) -> str:
    """A URL as given; a path made absolute (relative to the current folder)."""
    repo = repo.strip()
    if not repo:
        raise GitError("the job's repo is empty: give a git URL or the path of a repository")
    if _URL.match(repo) or _SCP.match(repo):
        return repo.rstrip("/")
    return str(Path(repo).expanduser().resolve())


def caches_dir(root: Path) -> Path:
    """Where the caches are: beside the queues' folders, so that the queues of a machine share
    one cache of a repository (and its disk)."""
    return root.parent / "repos"


def cache_dir_for(repo: str, root: Path) -> Path:
    """The cache folder of `repo`: a readable slug and a hash of the repository."""
    key = normalize(repo)
    parts = [part for part in re.split(r"[/\\:]+", _URL.sub("", key)) if part]
    tail = [part.removesuffix(".git") for part in parts[-2:]]
    slug = re.sub(r"[^a-z0-9._-]+", "-", "-".join(tail).lower()).strip("-.")[:40] or "repo"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return caches_dir(root) / f"{slug}-{digest}"


@contextlib.contextmanager
def locked(cache: Path) -> Iterator[None]:
    """The cache's lock, shared by every worker on the machine (worktree metadata is shared)."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    path = cache.with_name(cache.name + ".lock")
    from filelock import FileLock, Timeout  # lazily: `aq ls` and `aq next` route, never lock

    lock = FileLock(str(path), timeout=LOCK_TIMEOUT)
    try:
        lock.acquire(poll_interval=0.05)
    except Timeout:
        raise GitError(f"the lock {path} stayed busy for {LOCK_TIMEOUT:.0f}s: another worker "
                       "is still fetching or cloning that repository; try again") from None
    try:
        yield
    finally:
        lock.release()


def ensure_cache(repo: str, root: Path, *, timeout: float = 300) -> Path:
    """Clone `repo` into its cache once, else fetch it (pruning deleted branches); the cache."""
    cache = cache_dir_for(repo, root)
    with locked(cache):
        clone_or_fetch(repo, cache, timeout)
    return cache


def is_cache(cache: Path) -> bool:
    return (cache / "HEAD").is_file() and (cache / "objects").is_dir()


def clone_or_fetch(repo: str, cache: Path, timeout: float) -> None:
    """Call under the cache's lock."""
    url = normalize(repo)
    if is_cache(cache):
        must(git(cache, "fetch", "-q", "--prune", "origin", check=False, timeout=timeout),
             f"cannot fetch {shown_url(url)} into {cache}")
        if commit_of(cache, "refs/remotes/origin/HEAD") is None:  # an empty repo when cloned
            git(cache, "remote", "set-head", "origin", "--auto", check=False, timeout=timeout)
        return
    # made aside and renamed into place: a clone killed half-way never looks like a cache
    new = cache.with_name(cache.name + ".new")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    try:
        git(new, "init", "-q", "--bare")
        git(new, "config", "core.logAllRefUpdates", "true")  # reflogs: a reset branch is recoverable
        git(new, "remote", "add", "origin", url)
        must(git(new, "fetch", "-q", "origin", check=False, timeout=timeout),
             f"cannot clone {shown_url(url)} into {cache}")
        git(new, "remote", "set-head", "origin", "--auto", check=False, timeout=timeout)
        os.replace(new, cache)
    except BaseException:  # a clone that failed leaves nothing behind in the cache folder
        shutil.rmtree(new, ignore_errors=True)
        raise


def default_branch(cache: Path) -> str:
    """origin's default branch (its HEAD), else `main` or `master`, whichever it has."""
    done = git(cache, "symbolic-ref", "-q", "--short", "refs/remotes/origin/HEAD", check=False)
    name = done.stdout.strip()
    if done.returncode == 0 and name.startswith("origin/"):
        return name.removeprefix("origin/")
    for name in ("main", "master"):
        if commit_of(cache, f"refs/remotes/origin/{name}") is not None:
            return name
    raise GitError(f"cannot tell the default branch of the repository cached in {cache}: "
                   "set base: in the job")

