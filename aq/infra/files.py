"""Files: what every layer needs from the filesystem (atomic writes, the git dir, a stat-keyed
cache), with no subprocess."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def find_git_dir(root: Path) -> Path | None:
    """The git dir of the work tree holding `root` (no subprocess: `ls` must stay fast).

    A `.git` folder, or a `.git` file (worktree, submodule) pointing at one, in `root` or above.
    """
    for folder in (root, *root.parents):
        dot_git = folder / ".git"
        if dot_git.is_dir():
            return dot_git
        if dot_git.is_file():
            text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
            if text.startswith("gitdir:"):
                target = Path(text[len("gitdir:"):].strip())
                return target if target.is_absolute() else (folder / target).resolve()
    return None


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write via a temp file in the same folder and `os.replace`: readers see old or new, never half."""
    import tempfile  # lazily: it loads shutil, bz2, lzma and random, which readers never need

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


Signature = tuple[int, int, int]  # mtime_ns, size, inode: a file aq only replaces, never edits


def signature(stat: os.stat_result) -> Signature:
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


@dataclass(frozen=True, slots=True)
class StatCache:
    """One value read from files, kept in a pickle with the stat signatures of those files: a
    warm run reuses it while they are unchanged.

    Local state, never committed: a cache that is missing, torn, old or foreign is simply
    rebuilt, and one that cannot be written (a read-only clone) only costs time.
    """

    path: Path
    version: int  # bumped when the kept value changes shape: an old pickle lacks the new fields

    def load(self, key: object) -> Any | None:
        """The value saved under `key` (the signatures it was read from), else None."""
        import gc
        import pickle

        enabled = gc.isenabled()
        gc.disable()  # tens of thousands of small objects: collecting mid-load only costs time
        try:
            with open(self.path, "rb") as handle:
                version, saved_key, value = pickle.load(handle)
            return value if version == self.version and saved_key == key else None
        except Exception:  # any unreadable cache is simply rebuilt
            return None
        finally:
            if enabled:
                gc.enable()

    def save(self, key: object, value: object) -> None:
        import pickle

        with contextlib.suppress(OSError):
            write_atomic(self.path, pickle.dumps((self.version, key, value),
                                                 protocol=pickle.HIGHEST_PROTOCOL))
