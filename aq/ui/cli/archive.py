"""`aq archive`: move jobs final for long out of the stage folders, into the archive."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aq.infra.clock import utc_now as now
from aq.ui.cli.options import JsonOpt, QueueOpt, duration_of
from aq.ui.cli.session import emit, fetched, located

if TYPE_CHECKING:
    from aq.usecases.archive import ArchivedJob, ArchiveResult


def archive(
    older_than: Annotated[str | None, typer.Option("--older-than", help="Final (shipped, failed, "
                          "dead letter) for longer than this: 14d, 36h (default: aq.yaml "
                          "archive_after, else 14d).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would move.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Move at most this many "
                     "jobs (the oldest).")] = None,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move jobs final for long into queue/.archive/<yyyy>/<mm>/<nnn>/ with their events and
    logs, 500 per commit. In git the archive is a ref of its own (refs/aq/archive/<branch>), so
    the branch every claim pushes keeps only the live jobs; queue/archive/, where earlier aq kept
    it on the branch, moves over too. Every command still finds them by id; `aq ls --all`
    lists them."""
    from aq.usecases.archive import BATCH, DEFAULT_AGE
    from aq.usecases.archive import archive as run_archive
    from aq.usecases.setup import who_am_i

    age = duration_of("--older-than", older_than) if older_than is not None else None
    q = located(queue)
    if age is None:
        age = q.config.archive_after if q.config.archive_after is not None else DEFAULT_AGE
    fetched(q)
    result = run_archive(q, now=now(), older_than=age, limit=limit, dry_run=dry_run,
                         who=who_am_i(), batch=BATCH,
                         announce=None if as_json else _say_moved)
    if as_json:
        emit(archive_json(result))
        return
    if dry_run:
        _say_moved(result.moved, "would archive")
    for job_id, why in result.kept:
        print(f"kept {job_id}: {why}")
    verb = "would archive" if dry_run else "archived"
    if result.moved_over:
        print(f"{'would move' if dry_run else 'moved'} {result.moved_over} job(s) archived on the "
              "branch (queue/archive) to the archive's own ref")
    commits = -(-len(result.moved) // BATCH) if dry_run else result.commits
    print(f"{verb} {len(result.moved)} job(s) final for over {age / 86400:g} day(s)"
          + (f" in {commits} commit(s)" if result.moved else "")
          + (f"; {result.left} more are due: run aq archive again" if result.left else ""))


def _say_moved(moved: Sequence[ArchivedJob], verb: str = "archived") -> None:
    for item in moved:
        print(f"{verb} {item.job_id} ({item.stage}, final since {item.final_since[:10]}) "
              f"-> {item.part}/", flush=True)


def archive_json(result: ArchiveResult) -> dict[str, Any]:
    return {"dry_run": result.dry_run, "commits": result.commits, "left": result.left,
            "moved_over": result.moved_over,
            "moved": [{"id": item.job_id, "stage": str(item.stage), "final_since": item.final_since,
                       "part": item.part} for item in result.moved],
            "kept": [{"id": job_id, "why": why} for job_id, why in result.kept]}
