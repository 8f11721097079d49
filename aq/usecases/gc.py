"""`aq gc`: free what aq keeps and no longer needs (repo caches, old logs, shipped branches)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from aq.core.events import parse_iso
from aq.core.lifecycle import Stage
from aq.infra import gitops
from aq.infra.repocache import cache_dir_for, caches_dir
from aq.store.queue import Queue
from aq.store.snapshot import Job
from aq.store.tx import Tx
from aq.usecases.ship import workspace_of


@dataclass(frozen=True, slots=True)
class Freed:
    kind: str  # cache, logs, branch
    what: str
    bytes: int


def gc(queue: Queue, *, now: datetime, older_than: float, branches: bool,
       dry_run: bool) -> tuple[Freed, ...]:
    """Free what aq keeps and no longer needs: repo caches of this machine unused for
    `older_than` seconds (none with a worktree), logs and artifacts of jobs final for longer
    than aq.yaml log_retention, and (`branches`) the aq/<job> branches of jobs shipped longer
    than `older_than` ago. With `dry_run`, only says what it would free."""
    freed = _gc_branches(queue, now, older_than, dry_run) if branches else []  # uses the caches
    freed += _gc_caches(queue, now, older_than, dry_run)
    freed += _gc_logs(queue, now, dry_run)
    return tuple(freed)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _gc_caches(queue: Queue, now: datetime, older_than: float, dry_run: bool) -> list[Freed]:
    """Repository caches not fetched for `older_than`, none that a worktree of any queue on
    the machine uses (caches are shared); also the per-queue caches of aq before they were."""
    import shutil

    root = queue.config.workspaces_root(queue.workspace_key)
    folders = [folder for folder in (caches_dir(root), root / "repos") if folder.is_dir()]
    caches = [p for folder in folders for p in folder.iterdir()
              if p.is_dir() and not p.name.endswith(".new")]
    if not caches:
        return []
    in_use = set()
    for gitfile in [*root.parent.glob("*/worktrees/*/.git"), *root.parent.glob("*/merges/*/.git")]:
        text = gitfile.read_text(encoding="utf-8", errors="replace")
        in_use |= {cache for cache in caches if str(cache) in text}
    freed = []
    for cache in sorted(caches):
        fetched = cache / "FETCH_HEAD"  # every attempt fetches its cache first
        used = (fetched if fetched.exists() else cache).stat().st_mtime
        if cache in in_use or now.timestamp() - used < older_than:
            continue
        freed.append(Freed("cache", str(cache), _size(cache)))
        if not dry_run:
            shutil.rmtree(cache, ignore_errors=True)
            cache.with_name(cache.name + ".lock").unlink(missing_ok=True)
    return freed


FINAL = (Stage.SHIPPED, Stage.FAILED, Stage.DEAD_LETTER)


def _last_event_age(queue: Queue, job: Job, now: datetime) -> float | None:
    events = queue.read_events(job.id)
    stamps = [parse_iso(str(e["ts"])) for e in events if e.get("ts")]
    return (now - max(stamps)).total_seconds() if stamps else None


def _gc_logs(queue: Queue, now: datetime, dry_run: bool) -> list[Freed]:
    retention = queue.config.log_retention
    if retention is None:
        return []
    old = []
    for job in queue.snapshot().jobs:
        logs = queue.logs_dir(job.id)
        age = _last_event_age(queue, job, now) if job.stage in FINAL and logs.is_dir() else None
        if age is not None and age > retention:
            old.append((job.id, logs))
    freed = [Freed("logs", queue.relative(logs), _size(logs)) for _, logs in old]
    if old and not dry_run:
        def change(tx: Tx) -> None:
            for _, logs in old:
                for path in sorted(p for p in logs.rglob("*") if p.is_file()):
                    tx.remove(path)

        queue.transact(change, f"aq: gc: logs of {len(old)} job(s) final for over "
                       f"{retention / 86400:.0f} day(s)")
        for _, logs in old:  # git keeps no folders: the emptied ones go too
            for folder in sorted((p for p in logs.rglob("*") if p.is_dir()), reverse=True):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            with contextlib.suppress(OSError):
                logs.rmdir()
    return freed


def _gc_branches(queue: Queue, now: datetime, older_than: float, dry_run: bool) -> list[Freed]:
    freed = []
    jobs = queue.snapshot().jobs
    # a winning sample's branch is its job's work: kept while that job is not shipped too
    unshipped = {job.state.branch for job in jobs
                 if job.state.branch and job.stage is not Stage.SHIPPED}
    for job in jobs:
        found = workspace_of(queue, job) if job.stage is Stage.SHIPPED else None
        age = _last_event_age(queue, job, now) if found else None
        if found is None or age is None or age < older_than:
            continue
        cache = cache_dir_for(found[0], found[2])  # as last fetched: a fetch would mark it used
        if not cache.is_dir():
            continue
        branch = f"aq/{job.id}"
        if branch in unshipped:
            continue
        if gitops.git(cache, "rev-parse", "-q", "--verify", f"refs/remotes/origin/{branch}",
                      check=False).returncode != 0:
            continue
        freed.append(Freed("branch", f"{found[0]} {branch}", 0))
        if not dry_run:
            gitops.git(cache, "push", "-q", "origin", "--delete", branch, timeout=120)
    return freed
