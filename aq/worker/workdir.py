"""What an attempt's engine did in the job's cwd: the files it changed outside `allowed-scope`,
and the artifacts it made."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aq.core.manifest import Manifest
from aq.errors import AqError
from aq.infra.confine import refusal
from aq.infra.scope import TreeMark, changed_against, changed_since, mark_tree, outside_scope


class ScopeWatch:
    """`allowed-scope`: which files the engine changed outside the job's globs, judged on the
    git work tree holding cwd (aq's own queue files are never counted)."""

    def __init__(self, globs: tuple[str, ...] | None, cwd: Path, queue_root: Path) -> None:
        self.globs, self.cwd, self.queue_root = globs, cwd, queue_root
        self.mark: TreeMark | None = None
        self.outside: tuple[str, ...] = ()
        self.against: str | None = None  # the base the files were judged against, if any

    def start(self) -> None:
        if self.globs is not None:
            self.mark = mark_tree(self.cwd)

    def check(self, against: str | None = None) -> list[str]:
        """Notes for the log; sets `outside`. With `against` (a job branch's base) the files
        are those the tree changes against it, else those the run changed."""
        if self.globs is None:
            return []
        if self.mark is None:
            return [f"allowed-scope not checked: {self.cwd} is not in a git work tree"]
        try:
            changed = changed_against(self.mark.root, against) if against else changed_since(self.mark)
            self.against = against
        except AqError as err:
            return [f"allowed-scope not checked: {err}"]
        top = self.mark.root
        base = _relative_posix(self.cwd.resolve(), top)
        queue = _relative_posix(self.queue_root.resolve(), top)
        if queue is not None:  # the queue lives in this tree: its own files change under aq
            managed = tuple(f"{queue}/{p}".lstrip("/") for p in ("queue/", "aq.yaml", "profiles/"))
            changed = [path for path in changed
                       if not any(path == m.rstrip("/") or path.startswith(m) for m in managed)]
        self.outside = tuple(outside_scope(changed, self.globs, base or ""))
        if not self.outside:
            return [f"allowed-scope: {len(changed)} changed file(s), all in scope"]
        shown = ", ".join(self.outside[:10]) + (" …" if len(self.outside) > 10 else "")
        return [f"allowed-scope: {len(self.outside)} file(s) changed outside "
                f"{', '.join(self.globs) or '(nothing allowed)'}: {shown}"]


def _relative_posix(path: Path, top: Path) -> str | None:
    """`path` under `top` as a/b ("" for top itself), or None when it is not under it."""
    try:
        rel = path.relative_to(top).as_posix()
    except ValueError:
        return None
    return "" if rel == "." else rel


def collect_artifacts(manifest: Manifest, cwd: Path,
                      note: Callable[[str], None] = lambda _line: None) -> tuple[Path, ...]:
    """The regular files under cwd that the artifact globs match. A link, a file reached
    through a linked folder, or one outside cwd is never kept: `note` says which (a line for
    the attempt's log)."""
    found: dict[Path, None] = {}
    for pattern in manifest.artifacts:
        for path in sorted(cwd.glob(pattern)):
            if path in found or (path.is_dir() and not path.is_symlink()):
                continue
            refused = refusal(cwd, path, where="the job's cwd")
            if refused is not None:
                note(f"artifact not kept: {refused}")
            elif path.is_file():
                found[path] = None
    return tuple(found)
