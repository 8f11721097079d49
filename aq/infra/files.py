"""Files: the two things every layer needs from the filesystem, with no subprocess."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


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
