"""What aq reads or writes in the queue is a regular file inside it (DESIGN §5).

Anyone who can push to the queue can put a symbolic link in it, and git checks it out as one: a
job file linked to /etc/passwd, a log folder linked elsewhere. Followed, it would make every
worker read a local file and publish it, or write outside the queue. So every path is looked
at from the queue's root down without following anything, and a link, a fifo or a device is
refused with one line naming it; what does not exist yet is fine (aq makes it a regular file
or folder). The same holds for artifacts under a job's cwd.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from aq.errors import UnsafePath

# O_NONBLOCK: opening a fifo for reading would otherwise wait for a writer
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def describe(rel: str, mode: int, folder: bool = False, where: str = "the queue") -> str | None:
    """The refusal of what `lstat` found at `rel` (one line saying what to do), or None when it
    is a regular file (a folder, with `folder`)."""
    if stat.S_ISLNK(mode):
        return (f"{rel}: a symbolic link; aq never follows a link in {where} (it reads and "
                "writes only regular files inside it): remove it, or put a regular file or "
                "folder there instead")
    if stat.S_ISDIR(mode) if folder else stat.S_ISREG(mode):
        return None
    kind = ("a folder" if stat.S_ISDIR(mode) else "a regular file" if stat.S_ISREG(mode)
            else "a fifo" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device")
    return (f"{rel}: {kind}, not a {'folder' if folder else 'regular file'}; aq reads and writes "
            f"only regular files inside {where}: remove it or put a "
            f"{'folder' if folder else 'regular file'} there")


def entry_refusal(rel: str, entry: os.DirEntry[str]) -> str | None:
    """The refusal of a folder entry that is not a regular file, from what the listing already
    knows (no extra system call); None for a regular file or a folder, which callers skip."""
    if entry.is_file(follow_symlinks=False) or entry.is_dir(follow_symlinks=False):
        return None
    try:
        return describe(rel, entry.stat(follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return None  # gone since the listing


def refusal(root: Path, path: Path, *, folder: bool = False, where: str = "the queue"
            ) -> str | None:
    """Why aq must not read or write `path` under `root`, or None. Each component below `root`
    is looked at without following it: a link anywhere on the way, a path that leaves `root`,
    or an end that is not a regular file (a folder, with `folder`) is refused."""
    parts = _below(os.fspath(root), os.fspath(path))
    if parts is None or ".." in parts:
        return (f"{path}: outside {root}; aq reads and writes only files inside it (a path "
                "through '..' or elsewhere is refused)")
    current = os.fspath(root)
    for index, part in enumerate(parts):
        current = os.path.join(current, part)  # strings, not Paths: every write of aq asks
        try:
            mode = os.lstat(current).st_mode
        except OSError:
            return None  # not there yet (aq makes it), or unreachable: the read or write says why
        last = index == len(parts) - 1
        if not last and not stat.S_ISLNK(mode):
            if not stat.S_ISDIR(mode):
                return None  # a file where a folder should be: the OS error says so
            continue
        return describe("/".join(parts[:index + 1]), mode, folder or not last, where)
    return None


def _below(root: str, path: str) -> list[str] | None:
    """The components of `path` below `root`, compared as written (as Path.relative_to does:
    nothing resolved, '.' and empty components dropped); None when it is not below it."""
    if os.path.isabs(root) != os.path.isabs(path):
        return None
    above = [part for part in root.split(os.sep) if part not in ("", ".")]
    parts = [part for part in path.split(os.sep) if part not in ("", ".")]
    return parts[len(above):] if parts[:len(above)] == above else None


def check(root: Path, path: Path, *, folder: bool = False) -> None:
    """Raise UnsafePath when `refusal` has one."""
    refused = refusal(root, path, folder=folder)
    if refused is not None:
        raise UnsafePath(refused)


def open_regular(path: Path, rel: str | None = None) -> BinaryIO:
    """`path` opened for reading, only if it is a regular file (its own name is never followed;
    callers checked the folders above it). FileNotFoundError when it is not there."""
    try:
        fd = os.open(path, _READ)
    except OSError as err:
        if err.errno == errno.ELOOP:  # a link, whatever its target
            raise UnsafePath(describe(rel or str(path), stat.S_IFLNK) or str(path)) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        refused = describe(rel or str(path), mode)
        if refused is not None:
            raise UnsafePath(refused)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path, rel: str | None = None, limit: int = -1) -> bytes:
    """The bytes of `path` if it is a regular file (see `open_regular`): its first `limit`."""
    with open_regular(path, rel) as handle:
        return handle.read(limit)


def read_file(root: Path, path: Path, where: str = "the queue") -> bytes:
    """The bytes of `path` under `root`, with every component checked, never followed."""
    refused = refusal(root, path, where=where)
    if refused is not None:
        raise UnsafePath(refused)
    return read_regular(path, _rel(root, path))


def refusals(root: Path, names: Iterable[str]) -> list[str]:
    """Every link, fifo, socket or device at or under each of `names` in `root`, one line each,
    found without following anything (a linked folder is named, not entered)."""
    found: list[str] = []
    for name in names:
        _walk(root, root / name, found)
    return found


def _walk(root: Path, path: Path, found: list[str]) -> None:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return
    if stat.S_ISDIR(mode):
        try:
            with os.scandir(path) as entries:
                names = sorted(entry.name for entry in entries)
        except OSError:
            return
        for name in names:
            _walk(root, path / name, found)
        return
    refused = describe(_rel(root, path), mode)
    if refused is not None:
        found.append(refused)


def _rel(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
