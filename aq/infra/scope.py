"""Allowed scope: which files a run changed in the job's work tree, and which of them its globs allow.

`mark_tree` notes where the work tree stood before the engine ran; `changed_since` lists every
path the run changed since then (commits, staged, unstaged, untracked, deleted), and
`outside_scope` keeps those that none of the job's globs allow. Ignored files are never changes.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aq.errors import GitError
from aq.infra.gitops import git

# status and diff take no index.lock: the job's cwd may be the queue's own clone, where a
# worker commits at the same moment, and a refresh of the index is not worth failing that
_READ_ONLY = ("--no-optional-locks",)


@dataclass(frozen=True, slots=True)
class TreeMark:
    """Where a work tree stood before the engine ran."""

    root: Path  # the work tree's top level, as git reports it (symlinks resolved)
    head: str | None  # HEAD's commit; None in a repository with no commits yet
    dirty: frozenset[str]  # paths (relative to root) already changed, staged or untracked
    fingerprints: Mapping[str, str]  # dirty path -> content hash ("" for a missing file)


def mark_tree(cwd: Path) -> TreeMark | None:
    """Where the work tree holding `cwd` stands now; None when `cwd` is in no git work tree."""
    if not cwd.is_dir():
        return None
    found = git(cwd, "rev-parse", "--show-toplevel", "--verify", "-q", "HEAD", check=False)
    lines = found.stdout.splitlines()
    # exit 1 with the top level printed: a work tree whose HEAD has no commit yet
    if found.returncode not in (0, 1) or not lines or not lines[0]:
        return None
    root = Path(lines[0])
    head = lines[1] if found.returncode == 0 and len(lines) > 1 else None
    dirty = frozenset(_status(root))
    return TreeMark(root, head, dirty, {path: _fingerprint(root, path) for path in dirty})


def changed_since(mark: TreeMark) -> list[str]:
    """Every path (relative to `mark.root`, sorted) the run changed since `mark` was taken.

    That is: paths changed between the marked HEAD and the current one (compared as trees, so a
    reset to an older or unrelated commit counts too; a rename counts as both paths), paths
    changed, staged, deleted or untracked now that were clean before, and paths that were
    already dirty whose content is no longer what it was (changed again, reverted, stashed).
    Raises GitError when the work tree can no longer be read.
    """
    root = mark.root
    now = git(root, "rev-parse", "--verify", "-q", "HEAD", check=False) if root.is_dir() else None
    if now is None or now.returncode not in (0, 1):
        raise GitError(f"{root} is no longer a git work tree: cannot tell which files the run changed")
    head = (now.stdout.strip() or None) if now.returncode == 0 else None
    changed = set(_committed(root, mark.head, head))
    changed.update(path for path in _status(root) if path not in mark.dirty)
    changed.update(path for path, before in mark.fingerprints.items()
                   if _fingerprint(root, path) != before)
    return sorted(changed)


def changed_against(root: Path, base: str) -> list[str]:
    """Every path the work tree at `root` changes against `base` since they forked (what the
    job's branch would merge into base), its uncommitted changes included. Raises GitError when
    `base` is unknown there."""
    fork = git(root, *_READ_ONLY, "merge-base", base, "HEAD", check=False)
    head = git(root, "rev-parse", "--verify", "-q", "HEAD", check=False)
    if fork.returncode != 0 or head.returncode != 0:
        raise GitError(f"cannot compare {root} with {base}: no common commit")
    return sorted({*_committed(root, fork.stdout.strip(), head.stdout.strip()), *_status(root)})


def _status(root: Path) -> list[str]:
    """Paths that differ from HEAD: in the index, in the work tree, or untracked (not ignored)."""
    done = git(root, *_READ_ONLY, "status", "--porcelain=v1", "-z", "--untracked-files=all",
               "--no-renames")
    fields = done.stdout.split("\0")
    paths = []
    index = 0
    while index < len(fields):
        entry = fields[index]
        index += 1
        if len(entry) < 4:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":  # only without --no-renames; the old path follows as its own field
            paths.append(fields[index])
            index += 1
    return paths


def _committed(root: Path, old: str | None, new: str | None) -> list[str]:
    """Paths that differ between two commits' trees; a missing commit is an empty tree."""
    if old == new:
        return []
    if old is None or new is None:  # HEAD was born, or left for an unborn branch: all its files
        done = git(root, *_READ_ONLY, "ls-tree", "-r", "-z", "--name-only", "--full-tree",
                   new if new is not None else str(old))
    else:
        done = git(root, *_READ_ONLY, "diff", "--name-only", "-z", "--no-renames", old, new)
    return [path for path in done.stdout.split("\0") if path]


def _fingerprint(root: Path, path: str) -> str:
    """A hash of what `path` holds now: "" when nothing is there."""
    full = root / path
    try:
        info = os.lstat(full)
    except FileNotFoundError:
        return ""
    except OSError as err:
        return f"unreadable:{err.errno}"
    if stat.S_ISLNK(info.st_mode):
        return "link:" + os.readlink(full)
    if not stat.S_ISREG(info.st_mode):
        # a submodule or nested repository: what changed inside it is its own repository's story
        return f"special:{stat.S_IFMT(info.st_mode)}"
    try:
        with open(full, "rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()
    except OSError:
        return f"unreadable:{info.st_size}:{info.st_mtime_ns}"


def outside_scope(paths: Iterable[str], globs: Sequence[str], base: str = "") -> list[str]:
    """The paths (relative to the work tree root) that none of `globs` allows, in input order.

    `base` is the job's cwd relative to the work tree root ("" for the root itself); the globs
    are relative to it, so a path outside `base` is always outside scope. No globs at all allow
    nothing. A glob is matched against a path's whole remainder under `base`, case-sensitively:

    - `*` matches any run of characters within one segment (never a `/`; dot-files too),
      `?` one character other than `/`; every other character is literal (no `[...]` classes);
    - `**` as a whole segment matches any number of segments, zero included: `**` allows
      everything, `**/x` allows `x` at any depth, `dir/**` everything under `dir/`,
      `a/**/b` allows `a/b`, `a/x/b`, `a/x/y/b`; a `**` inside a segment is a plain `*`;
    - so `*.md` allows only `.md` files directly in cwd; write `**/*.md` for any depth;
    - a glob ending in `/` means everything under it (`docs/` is `docs/**`);
      `.` and empty segments are dropped (`./src/*.py` is `src/*.py`; `.` alone allows all).
    """
    if isinstance(globs, str):  # a single glob given where a list was meant
        globs = [globs]
    patterns = [_compile(glob) for glob in globs]
    prefix = base.strip("/")
    prefix = "" if prefix in ("", ".") else prefix + "/"
    outside = []
    for path in paths:
        inside = path.startswith(prefix)
        rest = path[len(prefix):]
        if not (inside and any(pattern.fullmatch(rest) for pattern in patterns)):
            outside.append(path)
    return outside


@functools.lru_cache(maxsize=1024)
def _compile(glob: str) -> re.Pattern[str]:
    if not glob:
        return re.compile(r"(?!)")  # matches nothing
    segments = [segment for segment in glob.split("/") if segment not in ("", ".")]
    if glob.endswith("/") or not segments:
        segments.append("**")
    parts = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            parts.append(".*" if last else "(?:.*/)?")
        else:
            parts.append(_segment(segment) + ("" if last else "/"))
    return re.compile("".join(parts), re.DOTALL)


def _segment(segment: str) -> str:
    out: list[str] = []
    for char in segment:
        if char == "*":
            if not out or out[-1] != "[^/]*":
                out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(char))
    return "".join(out)


def check_globs(globs: Iterable[object]) -> str | None:
    """One line saying what is wrong with the first malformed glob, or None when all are usable."""
    if isinstance(globs, str):
        globs = [globs]
    for glob in globs:
        if not isinstance(glob, str):
            return f"{glob!r} is not a glob; write a quoted path pattern such as 'src/**'"
        if not glob.strip():
            return "an empty glob allows nothing; remove it, or write '**' to allow everything"
        if glob != glob.strip():
            return f"{glob!r} has spaces at its ends; remove them"
        if glob.startswith(("/", "~")) or re.match(r"[A-Za-z]:[\\/]", glob):
            return f"{glob!r} is an absolute path; globs are relative to the job's cwd, such as 'src/**'"
        if ".." in glob.split("/"):
            return f"{glob!r} steps out of the job's cwd with '..'; globs only reach files under it"
    return None
