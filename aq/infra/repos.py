"""Workspaces: one cache of a project repository per machine, one git worktree per attempt.

A job with `repo` runs in a worktree of its own on branch `aq/<job-id>`, made from a cache of
that repository that every worker on the machine shares, whatever queue it serves. `root` is
one queue's folder under the workspaces folder (`<top>/<queue-key>`):

    <top>/repos/<slug>-<hash>/         the cache: a bare repository, origin's branches fetched
                                       to refs/remotes/origin/*; one per repo on the machine
    <top>/repos/<slug>-<hash>.lock     its file lock: fetches and worktree bookkeeping
    <root>/worktrees/<job-id>-<n>/     the worktree of attempt n
    <root>/merges/<slug>-<hash>-<id>/  a short-lived worktree of `merge_into_base`

The cache is bare (`git init --bare` with origin's usual refspec) so that no branch is checked
out in it: a worktree may hold any branch, the base included. Pushes go to origin's URL, not
to the remote's name, so they write no ref in the cache and need no lock while the network is
slow; the remote-tracking ref is then updated under the lock. Each worktree records which
process opened it (`aq-owner` in its private git dir), so a worker starting on the machine
never rescues a worktree another live process is using, even one of another queue.

This module is git plumbing only: it knows jobs by id and nothing of the queue.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from aq.errors import GitError
from aq.infra import gitops, proc
from aq.infra.gitops import git

LOCK_TIMEOUT = 900.0  # the holder may be cloning or fetching a big repository (300 s each)
RESCUE_TRIES = 5  # another machine may take the same rescued-<n> name at the same moment
MERGE_TRIES = 3  # the base may move between our fetch and our push
_OWNER = "aq-owner"  # in a worktree's private git dir: "<host> <pid>" of the process using it


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


# --- the cache ---------------------------------------------------------------------------

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


def _normalize(repo: str) -> str:
    """A URL as given; a path made absolute (relative to the current folder)."""
    repo = repo.strip()
    if not repo:
        raise GitError("the job's repo is empty: give a git URL or the path of a repository")
    if _URL.match(repo) or _SCP.match(repo):
        return repo.rstrip("/")
    return str(Path(repo).expanduser().resolve())


def _shown(repo: str) -> str:
    """The repository as it may appear in a message: without a user or token in its URL."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1", repo)


def caches_dir(root: Path) -> Path:
    """Where the caches are: beside the queues' folders, so that the queues of a machine share
    one cache of a repository (and its disk)."""
    return root.parent / "repos"


def cache_dir_for(repo: str, root: Path) -> Path:
    """The cache folder of `repo`: a readable slug and a hash of the repository."""
    key = _normalize(repo)
    parts = [part for part in re.split(r"[/\\:]+", _URL.sub("", key)) if part]
    tail = [part.removesuffix(".git") for part in parts[-2:]]
    slug = re.sub(r"[^a-z0-9._-]+", "-", "-".join(tail).lower()).strip("-.")[:40] or "repo"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return caches_dir(root) / f"{slug}-{digest}"


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """The cache's lock, shared by every worker on the machine (worktree metadata is shared)."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    path = cache.with_name(cache.name + ".lock")
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
    with _locked(cache):
        _clone_or_fetch(repo, cache, timeout)
    return cache


def _is_cache(cache: Path) -> bool:
    return (cache / "HEAD").is_file() and (cache / "objects").is_dir()


def _clone_or_fetch(repo: str, cache: Path, timeout: float) -> None:
    """Call under the cache's lock."""
    url = _normalize(repo)
    if _is_cache(cache):
        _must(git(cache, "fetch", "-q", "--prune", "origin", check=False, timeout=timeout),
              f"cannot fetch {_shown(url)} into {cache}")
        if _commit(cache, "refs/remotes/origin/HEAD") is None:  # an empty repo when cloned
            git(cache, "remote", "set-head", "origin", "--auto", check=False, timeout=timeout)
        return
    # made aside and renamed into place: a clone killed half-way never looks like a cache
    new = cache.with_name(cache.name + ".new")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    git(new, "init", "-q", "--bare")
    git(new, "config", "core.logAllRefUpdates", "true")  # reflogs: a reset branch is recoverable
    git(new, "remote", "add", "origin", url)
    _must(git(new, "fetch", "-q", "origin", check=False, timeout=timeout),
          f"cannot clone {_shown(url)} into {cache}")
    git(new, "remote", "set-head", "origin", "--auto", check=False, timeout=timeout)
    os.replace(new, cache)


def default_branch(cache: Path) -> str:
    """origin's default branch (its HEAD), else `main` or `master`, whichever it has."""
    done = git(cache, "symbolic-ref", "-q", "--short", "refs/remotes/origin/HEAD", check=False)
    name = done.stdout.strip()
    if done.returncode == 0 and name.startswith("origin/"):
        return name.removeprefix("origin/")
    for name in ("main", "master"):
        if _commit(cache, f"refs/remotes/origin/{name}") is not None:
            return name
    raise GitError(f"cannot tell the default branch of the repository cached in {cache}: "
                   "set base: in the job")


# --- an attempt's worktree -------------------------------------------------------------------


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
    with _locked(cache):
        _clone_or_fetch(repo, cache, timeout)
        base = base or default_branch(cache)
        base_commit = _commit(cache, f"refs/remotes/origin/{base}")
        if base_commit is None:
            raise GitError(f"{_shown(_normalize(repo))} has no branch {base!r} to start job "
                           f"{job_id} from: push that branch or set base: to one it has")
        tip = _commit(cache, f"refs/remotes/origin/{branch}")
        start = tip if tip is not None and not from_base else base_commit
        _clear_way(cache, path, branch)
        path.parent.mkdir(parents=True, exist_ok=True)
        _must(git(cache, "worktree", "add", "-q", "--no-track", "-B", branch, str(path), start,
                  check=False), f"cannot make the worktree {path} for job {job_id}")
        _mark_owner(path)
    return Workspace(_normalize(repo), cache, path, branch, base, start, tip)


def _clear_way(cache: Path, path: Path, branch: str) -> None:
    """Remove what is at `path` and detach any other worktree from `branch`. Under the lock."""
    if path.exists() or path.is_symlink():
        _remove(cache, path)
    else:
        git(cache, "worktree", "prune")
    for other, held in _worktrees(cache):
        if held == f"refs/heads/{branch}" and other != path and other.is_dir():
            _must(git(other, "checkout", "-q", "--detach", check=False),
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


def _mark_owner(path: Path) -> None:
    git_dir = Path(git(path, "rev-parse", "--absolute-git-dir").stdout.strip())
    temp = git_dir / f"{_OWNER}.{os.getpid()}.tmp"
    temp.write_text(f"{socket.gethostname()} {os.getpid()}\n", encoding="utf-8")
    os.replace(temp, git_dir / _OWNER)


def _used_elsewhere(path: Path, *, by_me: bool = False) -> bool:
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


def commit_leftovers(ws: Workspace, message: str, identity: Sequence[str]) -> str | None:
    """Commit everything the engine left uncommitted (untracked files too, not ignored ones).

    Returns the new commit, or None when there was nothing to commit. Hooks are not run.
    """
    _require(ws.path)
    return _commit_all(ws.path, message, identity)


def _commit_all(path: Path, message: str, identity: Sequence[str]) -> str | None:
    _must(git(path, "add", "-A", check=False), f"cannot stage the files left in {path}")
    staged = git(path, "diff", "--cached", "--quiet", check=False)
    if staged.returncode == 0:
        return None
    if staged.returncode != 1:
        raise GitError(f"cannot tell what changed in {path}: {gitops._reason(staged)}")
    _must(git(path, *identity, "commit", "-q", "--no-verify", "-m", message, check=False),
          f"cannot commit the files left in {path}")
    return _head(path)


def push_branch(ws: Workspace, *, timeout: float = 120) -> bool:
    """Push the worktree's HEAD to origin's `aq/<job>`. True once the remote has that commit.

    An ordinary push: the branch only moves forward, except when this attempt started over from
    base (`from_base` over an existing branch), which replaces exactly the tip it saw when it
    opened and nothing pushed since. False when origin's branch holds commits this attempt
    lacks (another attempt pushed more): retrying will not help. A remote that cannot be
    reached raises GitError (retrying may help); the work stays committed in the worktree.
    """
    _require(ws.path)
    head = _head(ws.path)
    url = _origin_url(ws.cache)
    ref = f"refs/heads/{ws.branch}"
    done = _push(ws.path, url, f"HEAD:{ref}", timeout)
    if _rejected(done) and ws.remote_tip is not None and ws.remote_tip != ws.start:
        done = _push(ws.path, url, f"HEAD:{ref}", timeout, f"--force-with-lease={ref}:{ws.remote_tip}")
    if done.returncode != 0:
        if _rejected(done):
            return False
        if _remote_commit(ws.cache, url, ref, timeout) != head:  # a push that timed out may have landed
            raise GitError(f"cannot push {ws.branch} to {_shown(url)}: {gitops._reason(done)}")
    with _locked(ws.cache):
        _track(ws.cache, ws.branch, head)
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
    if not _is_cache(ws.cache):
        shutil.rmtree(ws.path, ignore_errors=True)
        return
    with _locked(ws.cache):
        _remove(ws.cache, ws.path)
        tip = _commit(ws.cache, f"refs/heads/{ws.branch}")
        if tip is not None and not _unpushed(ws.cache, tip):
            git(ws.cache, "branch", "-q", "-D", ws.branch, check=False)


def _remove(cache: Path, path: Path) -> None:
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


# --- after a worker died -----------------------------------------------------------------------


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
            with _locked(cache):
                if not path.is_dir() or live(job_id) or _used_elsewhere(path):
                    continue
                message = (f"aq: work left in job {job_id} attempt {attempt or '?'} "
                           "when its worker stopped")
                branch = _rescue(cache, path, job_id, message, identity, timeout)
                if branch is None:
                    continue
                _remove(cache, path)
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
    return common if done.returncode == 0 and _is_cache(common) else None


def _rescue(cache: Path, path: Path, job_id: str, message: str, identity: Sequence[str],
            timeout: float) -> str | None:
    """Keep and push what the worktree holds; the rescued branch, "" for none, None: not now."""
    if git(cache, "fetch", "-q", "--prune", "origin", check=False, timeout=timeout).returncode:
        return None
    # its owner is gone: a lock its git left would only stop the commit that keeps the work
    git_dir = Path(_must(git(path, "rev-parse", "--absolute-git-dir", check=False),
                         f"cannot read the worktree {path}").stdout.strip())
    (git_dir / "index.lock").unlink(missing_ok=True)
    _commit_all(path, message, identity)
    head = _head(path)
    if not _unpushed(cache, head):
        return ""
    url = _origin_url(cache)
    for _ in range(RESCUE_TRIES):
        branch = f"aq/{job_id}-rescued-{_next_rescue_number(cache, job_id)}"
        git(cache, "branch", "-q", "-f", branch, head)
        done = _push(cache, url, f"{head}:refs/heads/{branch}", timeout)
        if done.returncode == 0:
            _track(cache, branch, head)
            return branch
        if not _rejected(done):
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
        with _locked(cache):
            if path.is_dir() and not _used_elsewhere(path, by_me=True):
                _remove(cache, path)


# --- reviewing and shipping ----------------------------------------------------------------------


def diff_against_base(cache: Path, branch: str, base: str, *, fetch: bool = True,
                      timeout: float = 120) -> str:
    """The patch `branch` makes against `base` since they forked (`origin/base...origin/branch`)."""
    if not _is_cache(cache):
        raise GitError(f"{cache} is no repository cache: call ensure_cache first")
    if fetch:
        with _locked(cache):
            _must(git(cache, "fetch", "-q", "--prune", "origin", check=False, timeout=timeout),
                  f"cannot fetch {_shown(_origin_url(cache))} into {cache}")
    for name in (base, branch):
        if _commit(cache, f"refs/remotes/origin/{name}") is None:
            raise GitError(f"{_shown(_origin_url(cache))} has no branch {name!r}: nothing to compare")
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
        url = _origin_url(cache)
        try:
            head = _merge(path, branch, base, message, identity)
            if head == base_commit:
                return head
            done = _push(path, url, f"HEAD:refs/heads/{base}", timeout)
            if _rejected(done):
                continue  # base moved on origin: merge again onto its new tip
            if done.returncode and _remote_commit(cache, url, f"refs/heads/{base}", timeout) != head:
                raise GitError(f"cannot push {base} to {_shown(url)}: {gitops._reason(done)}")
            with _locked(cache):
                _track(cache, base, head)
            return head
        finally:
            with _locked(cache):
                _remove(cache, path)
    raise GitError(f"{base} kept moving on {_shown(_normalize(repo))} while {branch} was merged "
                   "into it; try the ship again")


def _merge_worktree(repo: str, root: Path, cache: Path, branch: str, base: str,
                    timeout: float) -> tuple[Path, str]:
    """Fetch, then a detached worktree at origin's `base`; its path and base's commit."""
    with _locked(cache):
        _clone_or_fetch(repo, cache, timeout)
        base_commit = _commit(cache, f"refs/remotes/origin/{base}")
        if base_commit is None or _commit(cache, f"refs/remotes/origin/{branch}") is None:
            missing = base if base_commit is None else branch
            raise GitError(f"{_shown(_normalize(repo))} has no branch {missing!r}: nothing to merge")
        path = root / "merges" / f"{cache.name}-{uuid.uuid4().hex[:8]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        _must(git(cache, "worktree", "add", "-q", "--detach", str(path),
                  f"refs/remotes/origin/{base}", check=False),
              f"cannot make a worktree to merge {branch} into {base}")
        _mark_owner(path)
    return path, base_commit


def _merge(path: Path, branch: str, base: str, message: str, identity: Sequence[str]) -> str:
    done = git(path, *identity, "merge", "-q", "--no-ff", "--no-verify", "--no-edit", "-m",
               message, f"refs/remotes/origin/{branch}", check=False)
    if done.returncode == 0:
        return _head(path)
    unmerged = git(path, "diff", "--name-only", "-z", "--diff-filter=U", check=False).stdout
    conflicts = sorted({name for name in unmerged.split("\0") if name})
    git(path, "merge", "--abort", check=False)
    if conflicts:
        raise GitError(f"{branch} does not merge cleanly into {base} (conflicts in "
                       f"{', '.join(conflicts)}): merge {base} into {branch} and resolve them, "
                       "or retry the job from base")
    raise GitError(f"cannot merge {branch} into {base}: {gitops._reason(done)}")


# --- small git helpers -------------------------------------------------------------------------------


def _must(done: proc.Completed, what: str) -> proc.Completed:
    if done.returncode != 0:
        raise GitError(f"{what}: {gitops._reason(done)}")
    return done


def _require(path: Path) -> None:
    # git run in a missing folder would report that git is not installed
    if not (path / ".git").exists():
        raise GitError(f"the worktree {path} is gone: the attempt's uncommitted work cannot be kept")


def _commit(repo: Path, ref: str) -> str | None:
    done = git(repo, "rev-parse", "-q", "--verify", f"{ref}^{{commit}}", check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def _head(path: Path) -> str:
    done = _must(git(path, "rev-parse", "HEAD", check=False), f"{path} has no commit checked out")
    return done.stdout.strip()


def _origin_url(cache: Path) -> str:
    done = git(cache, "config", "--get", "remote.origin.url", check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise GitError(f"the repository cache {cache} has no origin: remove it and it is cloned again")
    return done.stdout.strip()


def _push(cwd: Path, url: str, refspec: str, timeout: float, *flags: str) -> proc.Completed:
    # to the URL, not to `origin`: no remote-tracking ref is written, so no lock is needed
    return git(cwd, "push", "--porcelain", "--no-verify", *flags, url, refspec, check=False,
               timeout=timeout)


def _rejected(done: proc.Completed) -> bool:
    """The remote refused the update as not a fast-forward (or a lease no longer held)."""
    return done.returncode != 0 and any(line.startswith("!") and "[rejected]" in line
                                        for line in done.stdout.splitlines())


def _remote_commit(cache: Path, url: str, ref: str, timeout: float) -> str | None:
    done = git(cache, "ls-remote", url, ref, check=False, timeout=timeout)
    if done.returncode != 0:
        raise GitError(f"cannot reach {_shown(url)} to check a push: {gitops._reason(done)}")
    return done.stdout.split()[0] if done.stdout.strip() else None


def _track(cache: Path, branch: str, commit: str) -> None:
    """Note in the cache what was just pushed, as a fetch would. Under the lock (a fetch writes
    the same refs)."""
    git(cache, "update-ref", f"refs/remotes/origin/{branch}", commit, check=False)


def _unpushed(cache: Path, commit: str) -> bool:
    """True when `commit` holds work that is on none of origin's branches (as last fetched)."""
    done = git(cache, "rev-list", "-n", "1", commit, "--not", "--remotes=origin")
    return bool(done.stdout.strip())
