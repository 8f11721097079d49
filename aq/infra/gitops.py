"""Git, through the CLI and the one subprocess chokepoint. Every failure becomes a sentence."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from aq.errors import GitError
from aq.infra import proc

# Every git command aq runs starts so: its own small commits and fetches never wait on an
# automatic gc or maintenance run. It also marks the command as aq's (see kill_orphaned_git).
GIT = ("git", "-c", "gc.auto=0", "-c", "maintenance.auto=0")
OWNER_VAR = "AQ_GIT_OWNER"  # in each git child's environment: the aq process that started it
# A remote that asks for a password fails at once instead of waiting for a person who is not
# there (ssh cannot prompt either: each git runs in a session of its own, with no terminal).
NO_PROMPT = {"GIT_TERMINAL_PROMPT": "0"}


def git(root: Path, *args: str, check: bool = True, input: str | None = None,
        timeout: float | None = None, env: Mapping[str, str] | None = None) -> proc.Completed:
    """Run git in `root`; `env`: variables of aq's own for it (GIT_INDEX_FILE, say)."""
    try:
        done = proc.run([*GIT, *args], cwd=root, input=input, timeout=timeout,
                        env=proc.clean_env({OWNER_VAR: str(os.getpid()), **NO_PROMPT, **(env or {})}))
    except FileNotFoundError:
        raise GitError("git is not installed or not on PATH: install git and try again") from None
    if _LOG:
        _log_call(_LOG, root, args, done)
    if check and done.returncode != 0:
        raise GitError(f"git {args[0]} failed in {root}: {reason(done)}")
    return done


_LOG = os.environ.get("AQ_GIT_LOG")  # a file: every git call aq makes is appended to it


def _log_call(path: str, root: Path, args: tuple[str, ...], done: proc.Completed) -> None:
    """For debugging a fleet: one JSON line per git call (who, where, what, how it ended)."""
    import json
    import threading
    import time

    line = json.dumps({"t": time.time(), "pid": os.getpid(), "thread": threading.current_thread().name,
                       "root": str(root), "args": list(args), "rc": done.returncode,
                       "out": done.stdout[-300:], "err": done.stderr[-300:]})
    with open(path, "a", encoding="utf-8") as log:
        log.write(line + "\n")


def reason(done: proc.Completed) -> str:
    """git's own words for a failure: its fatal:/error: line, else its last line."""
    lines = [line.strip() for line in (done.stderr.strip() or done.stdout.strip()).splitlines()]
    for line in lines:
        if line.startswith(("fatal:", "error:")):
            return line
    return lines[-1] if lines else f"exit code {done.returncode}"


def is_work_tree(path: Path) -> bool:
    try:
        done = proc.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return done.returncode == 0 and done.stdout.strip() == "true"


def init(root: Path) -> None:
    git(root, "init", "-q")


def toplevel(path: Path) -> Path:
    """The top folder of the work tree `path` is in."""
    return Path(git(path, "rev-parse", "--show-toplevel").stdout.strip())


def branch_of(path: Path) -> str:
    """The branch checked out at `path` ("HEAD" when detached)."""
    done = git(path, "symbolic-ref", "-q", "--short", "HEAD", check=False)
    return done.stdout.strip() or "HEAD"


def identity_args(root: Path) -> list[str]:
    """`-c user.name/-c user.email` for a machine with no git identity, so commits never fail on it."""
    # git var fails exactly when a commit would for want of a name or email
    done = git(root, "var", "GIT_COMMITTER_IDENT", check=False)
    if done.returncode == 0 and done.stdout.strip():
        return []
    return ["-c", "user.name=aq", "-c", f"user.email=aq@{socket.gethostname()}"]


def commit_paths(root: Path, paths: Sequence[str], message: str, identity: Sequence[str],
                 exact: bool = False) -> bool:
    """Stage `paths` (new, changed or deleted) and commit them. False when there was nothing to commit.

    `exact`: `paths` are files (a path that exists nowhere is skipped), and the commit holds
    those and nothing else; else each of `paths` whole (a folder: all it holds, untracked too).
    """
    if exact:
        big = _big_index(root)
        if big == WHOLE:
            _split_index(root)
        # in the index first: a commit of paths takes only those git knows (a new file is not)
        git(root, "update-index", "--add", "--remove", "--", *dict.fromkeys(paths))
        made = _commit_queue_tree(root, message, identity, paths) if big else None
        if made is not None:
            return made
    else:
        git(root, "add", "-A", "--", *paths)  # a path git cannot match fails here already
    return _commit_only(root, list(dict.fromkeys(paths)), message, identity)


def unstage(root: Path, paths: Sequence[str]) -> None:
    """Put the index back as HEAD has it for `paths` (taken out where HEAD has none)."""
    git(root, "reset", "-q", "--", *paths, check=False)


def _commit_only(root: Path, paths: list[str], message: str, identity: Sequence[str]) -> bool:
    """Commit exactly `paths` as they are on disk (there, or gone): nothing else a person
    changed, deleted or staged, under queue/ or elsewhere, goes in with them (a clone's commit
    is pushed to the whole fleet). A path git never knew and that is gone (a file dropped by
    hand that the transaction moved on) has nothing to commit: git refuses the whole commit
    for one, so it is left out on a second try."""
    for attempt in range(2):
        done = git(root, *identity, "commit", "-q", "--no-verify", "-m", message, "--", *paths,
                   check=False)
        if done.returncode == 0:
            return True
        said = done.stdout + done.stderr
        if "nothing to commit" in said or "no changes added" in said:
            return False
        if attempt == 0 and "did not match any file(s) known to git" in said:
            gone = [path for path in paths if not os.path.lexists(root / path)]
            known = set(git(root, "ls-tree", "-z", "--name-only", "HEAD", "--", *gone,
                            check=False).stdout.split("\0")) if gone else set()
            paths = [path for path in paths if path not in gone or path in known]
            if not paths:
                return False
            continue
        break
    raise GitError(f"git commit failed in {root}: {reason(done)}")


BIG_INDEX = 1 << 20  # bytes of .git/index (some 10,000 files) from which a commit is built
WHOLE, SPLIT = "whole", "split"  # a big index in one file, or split (core.splitIndex)


def _big_index(root: Path) -> str | None:
    """WHOLE or SPLIT when the index is big (its file, or with git's split index its shared
    part), else None."""
    git_dir = root / ".git"
    try:
        if (git_dir / "index").stat().st_size >= BIG_INDEX:
            return WHOLE
        with os.scandir(git_dir) as entries:
            if any(entry.name.startswith("sharedindex.") and entry.stat().st_size >= BIG_INDEX
                   for entry in entries):
                return SPLIT
    except OSError:  # a worktree's .git is a file: the usual way
        pass
    return None


def _split_index(root: Path) -> None:
    """Have git keep a big index (a year's archive: 200,000 files, 20 MiB) split, in version 4:
    each change then writes a small file, not the whole index, and every git that reads it
    reads a third less. Not where the clone's config says otherwise."""
    # one read of both (a clone that says no to either keeps a whole index: this runs at each
    # of its commits); git prints the names in lower case
    said = dict(line.split(" ", 1) for line in git(
        root, "config", "--get-regexp", r"^(core\.splitindex|index\.version)$",
        check=False).stdout.splitlines() if " " in line)
    split, version = said.get("core.splitindex"), said.get("index.version")
    if split and version:
        return
    if not split:
        git(root, "config", "core.splitIndex", "true", check=False)
    if not version:
        git(root, "config", "index.version", "4", check=False)
    git(root, "update-index", *([] if split else ["--split-index"]),
        *([] if version else ["--index-version", "4"]), check=False)


def _commit_queue_tree(root: Path, message: str, identity: Sequence[str],
                       paths: Sequence[str] = ()) -> bool | None:
    """Commit on top of HEAD what the index holds under queue/ (`paths` staged), and nothing
    staged elsewhere, built from plumbing: `git commit -- queue` looks at every file under
    queue/ (a year's archive: 100,000s of them) where this writes only the trees that changed.
    None where it does not apply (no HEAD yet, the queue not at the repository's top): the
    caller commits the usual way. False when the queue is as HEAD has it."""
    done = git(root, "rev-parse", "--show-prefix", "HEAD^{commit}", "HEAD^{tree}", check=False)
    lines = done.stdout.split("\n")
    if done.returncode != 0 or len(lines) < 3 or lines[0]:
        return None
    head, head_tree = lines[1], lines[2]
    tree = _patched_tree(root, head_tree, paths) if paths else None
    if tree is None:  # from the index: it reads every entry of it, the archive's too
        queue = git(root, "write-tree", "--prefix=queue/").stdout.strip()
        entries = [f"{mode} {kind} {oid}\t{name}" for name, (mode, kind, oid)
                   in _ls_tree(root, head_tree) if name != "queue"]
        tree = git(root, "mktree", "-z", input="\0".join([*entries, f"040000 tree {queue}\tqueue"])
                   + "\0").stdout.strip()
    if tree == head_tree:
        return False
    commit = git(root, *identity, "commit-tree", tree, "-p", head, "-m", message).stdout.strip()
    # compare-and-swap on HEAD's branch, as `git commit` does: a commit made meanwhile fails it
    git(root, "update-ref", "-m", f"commit: {message.splitlines()[0] if message else ''}",
        "HEAD", commit, head)
    return True


Entry = tuple[str, str, str]  # mode, type, object id: one entry of a tree


def _patched_tree(root: Path, head_tree: str, paths: Sequence[str]) -> str | None:
    """The tree of HEAD with `paths` (files under queue/, as they are on disk: there, or gone)
    put in, without the index: only the folders on their way are read from HEAD's tree and
    written again, so a big index (a year's archive) is not read. None where a path is not a
    plain file (a link, an executable, a folder), nor was one in HEAD: the index decides then."""
    changed: dict[str, str | None] = {}  # path -> its blob, None: gone
    present = []
    for path in dict.fromkeys(paths):
        if not path.startswith("queue/") or "\n" in path or path.endswith("/"):
            return None
        try:
            st_mode = os.lstat(root / path).st_mode
        except FileNotFoundError:
            changed[path] = None
            continue
        if not stat.S_ISREG(st_mode) or st_mode & stat.S_IXUSR:
            return None
        present.append(path)
    if present:
        blobs = git(root, "hash-object", "-w", "--stdin-paths", input="\n".join(present) + "\n")
        changed.update(zip(present, blobs.stdout.split(), strict=True))
    folders = _folders_of(changed)
    held = _held(root, head_tree, folders)
    for path in changed:
        folder, _, name = path.rpartition("/")
        if held.get(folder, {}).get(name, ("100644", "blob", ""))[:2] != ("100644", "blob"):
            return None  # HEAD has a link, an executable or a folder there
    for folder in folders:
        parent, _, name = folder.rpartition("/")
        if held.get(parent, {}).get(name, ("040000", "tree", ""))[1] != "tree":
            return None  # HEAD has a file where a folder goes
    return _write_trees(root, held, changed, folders, len(head_tree))


def patch_tree(root: Path, base_tree: str, changed: Mapping[str, str | None]) -> str:
    """The tree `base_tree` with each path of `changed` (a file's, from the top) made a plain
    file of that blob, or taken out (None), written without an index: only the folders on
    their way are read and written again."""
    folders = _folders_of(changed)
    return _write_trees(root, _held(root, base_tree, folders), dict(changed), folders,
                        len(base_tree))


def _folders_of(paths: Iterable[str]) -> set[str]:
    """Every folder on the way to `paths` ('a/b/c' -> 'a', 'a/b')."""
    return {"/".join(path.split("/")[:depth]) for path in paths
            for depth in range(1, path.count("/") + 1)}


def _held(root: Path, tree: str, folders: set[str]) -> dict[str, dict[str, Entry]]:
    """What `tree` holds at its top ('') and in each of `folders` (those it has)."""
    held: dict[str, dict[str, Entry]] = {"": dict(_ls_tree(root, tree))}
    for path, entry in _ls_tree(root, tree, "--", *(f"{f}/" for f in sorted(folders))):
        folder, _, name = path.rpartition("/")
        held.setdefault(folder, {})[name] = entry
    return held


def _ls_tree(root: Path, *args: str) -> list[tuple[str, Entry]]:
    """`git ls-tree -z ARGS`: each entry's path and (mode, type, object id)."""
    listed = []
    for line in git(root, "ls-tree", "-z", *args).stdout.split("\0"):
        if line:
            info, path = line.split("\t", 1)
            mode, kind, oid = info.split()
            listed.append((path, (mode, kind, oid)))
    return listed


def _write_trees(root: Path, held: dict[str, dict[str, Entry]], changed: dict[str, str | None],
                 folders: set[str], id_length: int) -> str:
    """Write the folders on the changed paths' way, deepest first, in one `git mktree --batch`
    (each tree's id is computed here first, for its parent's entry): the new root tree."""
    put: dict[str, list[tuple[str, Entry | None]]] = {}  # folder -> what goes in (None: out)
    for path, blob in changed.items():
        parent, _, name = path.rpartition("/")
        put.setdefault(parent, []).append((name, None if blob is None else ("100644", "blob", blob)))
    trees, ids = [], []
    tree: str | None = None
    for folder in sorted(folders | {""}, key=lambda f: (-f.count("/") - bool(f), f)):
        entries = dict(held.get(folder, {}))
        for name, entry in put.get(folder, ()):
            _put(entries, name, entry)
        tree = _tree_id(entries, id_length) if entries else None  # git keeps no empty folder
        if tree is not None:
            trees.append("".join(f"{mode} {kind} {oid}\t{name}\n"
                                 for name, (mode, kind, oid) in entries.items()))
            ids.append(tree)
        if folder:  # its parent comes later (it is less deep): the new tree goes in there
            parent, _, name = folder.rpartition("/")
            put.setdefault(parent, []).append((name, None if tree is None else ("040000", "tree", tree)))
    written = git(root, "mktree", "--batch", input="\n".join(trees)).stdout.split()
    if written != ids:
        raise GitError(f"git mktree wrote trees other than aq computed in {root}: "
                       f"{written} against {ids}; nothing was committed")
    assert tree is not None  # the root, last: queue/ is never the only thing that goes
    return tree


def _put(entries: dict[str, Entry], name: str, entry: Entry | None) -> None:
    if entry is None:
        entries.pop(name, None)
    else:
        entries[name] = entry


def _tree_id(entries: dict[str, Entry], id_length: int) -> str:
    """A tree's object id as git computes it: entries ordered by name (a folder's as if it
    ended with '/'), each `mode name NUL raw-id`; SHA-1, or SHA-256 in a repository of 64-digit
    ids."""
    import hashlib

    def order(item: tuple[str, Entry]) -> bytes:
        name, (_mode, kind, _oid) = item
        return name.encode() + (b"/" if kind == "tree" else b"")

    body = b"".join(f"{mode.lstrip('0')} {name}".encode() + b"\0" + bytes.fromhex(oid)
                    for name, (mode, _kind, oid) in sorted(entries.items(), key=order))
    digest = hashlib.sha256 if id_length == 64 else hashlib.sha1
    return digest(b"tree %d\0" % len(body) + body).hexdigest()


def kill_orphaned_git(root: Path) -> list[int]:
    """KILL aq's own git commands still running in this clone after the aq process that started
    them died (kill -9), so none of them writes a lock or a ref after the next worker has
    cleaned up. Each git aq starts carries its process id in AQ_GIT_OWNER; one whose owner is
    gone is an orphan (whoever adopted it: init, a subreaper). Linux only (/proc); elsewhere
    nothing is done. Call under the queue lock, before clear_stale_locks."""
    import os
    import signal

    proc_dir = Path("/proc")
    if not (proc_dir / "self").is_dir():
        return []
    mark = b"\0".join(part.encode() for part in GIT) + b"\0"
    here = str(root.resolve())
    killed = []
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "cmdline").read_bytes().startswith(mark):
                continue
            if os.readlink(entry / "cwd") != here:
                continue
            owner = _owner_of(entry)
        except (OSError, ValueError, IndexError):
            continue
        if owner is not None and not proc.pid_alive(owner):  # orphaned: its aq process is gone
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(entry.name), signal.SIGKILL)  # its own group: its helpers too
                killed.append(int(entry.name))
    return killed


def _owner_of(entry: Path) -> int | None:
    """The aq process that started this git (its environment says), or None."""
    prefix = f"{OWNER_VAR}=".encode()
    for item in (entry / "environ").read_bytes().split(b"\0"):
        if item.startswith(prefix):
            return int(item[len(prefix):])
    return None


def clear_stale_locks(git_dir: Path | None, older_than: float = 5.0) -> list[str]:
    """Remove git lock files a killed process left behind. Call only while holding the queue lock,
    so that no aq process of this clone is running git at the time."""
    import time

    if git_dir is None or not git_dir.is_dir():
        return []
    candidates = [git_dir / "index.lock", git_dir / "HEAD.lock", git_dir / "packed-refs.lock",
                  *git_dir.glob("refs/heads/**/*.lock"), *git_dir.glob("refs/remotes/**/*.lock"),
                  *git_dir.glob("refs/aq/**/*.lock")]
    removed = []
    now = time.time()
    for path in candidates:
        try:
            if now - path.stat().st_mtime >= older_than:
                path.unlink()
                removed.append(str(path))
        except FileNotFoundError:
            continue
    return removed


# --- a repository cache's refs and pushes (aq.infra.repos) ------------------------------------


def must(done: proc.Completed, what: str) -> proc.Completed:
    """`done` if git succeeded; else GitError "<what>: <git's reason>"."""
    if done.returncode != 0:
        raise GitError(f"{what}: {reason(done)}")
    return done


def commit_of(repo: Path, ref: str) -> str | None:
    """The commit `ref` names in `repo`; None when there is none."""
    done = git(repo, "rev-parse", "-q", "--verify", f"{ref}^{{commit}}", check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def head_of(path: Path) -> str:
    """The commit checked out in the worktree at `path`."""
    done = must(git(path, "rev-parse", "HEAD", check=False), f"{path} has no commit checked out")
    return done.stdout.strip()


def origin_url(cache: Path) -> str:
    """The URL a repository cache was cloned from."""
    done = git(cache, "config", "--get", "remote.origin.url", check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise GitError(f"the repository cache {cache} has no origin: remove it and it is cloned again")
    return done.stdout.strip()


def push_to(cwd: Path, url: str, refspec: str, timeout: float, *flags: str) -> proc.Completed:
    # to the URL, not to `origin`: no remote-tracking ref is written, so no lock is needed
    return git(cwd, "push", "--porcelain", "--no-verify", *flags, url, refspec, check=False,
               timeout=timeout)


def rejected(done: proc.Completed) -> bool:
    """The remote refused the update as not a fast-forward (or a lease no longer held)."""
    return done.returncode != 0 and any(line.startswith("!") and "[rejected]" in line
                                        for line in done.stdout.splitlines())


def remote_commit(cache: Path, url: str, ref: str, timeout: float) -> str | None:
    """Where `ref` points on the remote at `url` now; None when it has no such ref."""
    done = git(cache, "ls-remote", url, ref, check=False, timeout=timeout)
    if done.returncode != 0:
        raise GitError(f"cannot reach {shown_url(url)} to check a push: {reason(done)}")
    return done.stdout.split()[0] if done.stdout.strip() else None


def track(cache: Path, branch: str, commit: str) -> None:
    """Note in the cache what was just pushed, as a fetch would. Under the lock (a fetch writes
    the same refs)."""
    git(cache, "update-ref", f"refs/remotes/origin/{branch}", commit, check=False)


def unpushed(cache: Path, commit: str) -> bool:
    """True when `commit` holds work that is on none of origin's branches (as last fetched)."""
    done = git(cache, "rev-list", "-n", "1", commit, "--not", "--remotes=origin")
    return bool(done.stdout.strip())


def shown_url(repo: str) -> str:
    """The repository as it may appear in a message: without a user or token in its URL."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1", repo)

