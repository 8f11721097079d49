"""Making and keeping a queue: `init`, the profiles it holds, a job's `diff`, freeing disk
(`gc`) and checking its history (`fsck`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from aq.errors import ExitStatus, UsageError
from aq.infra.clock import utc_now as now
from aq.ui.cli.detail import fmt
from aq.ui.cli.options import JobArg, JsonOpt, QueueOpt, duration_of
from aq.ui.cli.session import emit, located
from aq.ui.cli.shapes import diff_json, fsck_json, gc_json, profile_json

if TYPE_CHECKING:
    from aq.store.queue import Queue


def init(
    directory: Annotated[Path, typer.Argument(help="Where to make the queue.")] = Path("."),
    here: Annotated[bool, typer.Option(
        "--here", help="Inside an existing git repository: commit the queue into its history.")] = False,
) -> None:
    """Make a queue: stage folders, aq.yaml, .gitattributes, and a git repo if there is none.
    Inside an existing repository it asks for --here first."""
    from aq.usecases.setup import init_queue

    result = init_queue(directory, here=here)
    if not result.created:
        print(f"{result.root} is already an aq queue; nothing changed")
        return
    made = ", ".join(result.created)
    if result.git_initialized:
        print(f"made a queue in {result.root}: {made} (a new git repository)")
    else:
        print(f"made a queue in {result.root}: {made}; committed \"aq: init queue\" to the "
              f"repository at {result.repository} (branch {result.branch})")
    print("next: aq add --title 'Say hello' --engine shell --body 'echo hello'; then aq run --drain")


def profiles(
    action: Annotated[str | None, typer.Argument(help="'show' to print one profile.")] = None,
    name: Annotated[str | None, typer.Argument(help="The profile to show.")] = None,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the queue's profiles (profiles/*.md), or `aq profiles show NAME` for one."""
    from aq.usecases.profiles import get_profile

    q = located(queue)
    if action is None:
        _list_profiles(q, as_json)
        return
    if action != "show" or not name:
        raise UsageError("usage: aq profiles [--json] | aq profiles show NAME [--json]")
    profile = get_profile(q, name)
    if as_json:
        emit(profile_json(profile) | {"persona": profile.persona})
        return
    print(f"{profile.name} (version {profile.version}, hash {profile.content_hash})")
    for key, value in profile_json(profile).items():
        if key not in ("name", "version", "hash") and value not in (None, [], False):
            print(f"  {key + ':':<16}{fmt(value)}")
    print()
    print(profile.persona)


def _list_profiles(q: Queue, as_json: bool) -> None:
    from aq.usecases.profiles import list_profiles

    listing = list_profiles(q)
    if as_json:
        emit({"profiles": [profile_json(p) | {"jobs": listing.jobs.get(p.name, 0)}
                           for p in listing.profiles], "problems": list(listing.problems)})
        return
    if not listing.profiles:
        print("no profiles: add profiles/<name>.md (aq init copies a starter catalog)")
    for p in listing.profiles:
        engine = p.engine or (f"class {p.engine_class}" if p.engine_class else "queue default")
        used = listing.jobs.get(p.name, 0)
        print(f"{p.name:<20} v{p.version:<4} {engine:<22} {', '.join(p.capabilities) or '-':<24} "
              f"{used} job(s)")
    for problem in listing.problems:
        print(f"problem: {problem}", file=sys.stderr)


def diff(job: JobArg, queue: QueueOpt = None, as_json: JsonOpt = False) -> None:
    """What a job with a repo changed: its branch aq/<job> against its base, from the remote."""
    from aq.usecases.ship import job_diff

    result = job_diff(located(queue), job)
    if as_json:
        emit(diff_json(result))
        return
    sys.stdout.write(result.patch or f"{result.branch} makes no change against {result.base}\n")


def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be freed.")] = False,
    older_than: Annotated[str, typer.Option("--older-than", help="Unused (or shipped) for longer "
                          "than this: 14d, 36h.")] = "14d",
    branches: Annotated[bool, typer.Option("--branches", help="Also delete the aq/<job> branches "
                        "of jobs shipped longer ago, on the repos' remotes.")] = False,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Free disk: unused repo caches, old jobs' logs (aq.yaml log_retention), old branches."""
    from aq.usecases.gc import gc as run_gc

    freed = run_gc(located(queue), now=now(), older_than=duration_of("--older-than", older_than), branches=branches, dry_run=dry_run)
    if as_json:
        emit(gc_json(freed, dry_run))
        return
    verb = "would free" if dry_run else "freed"
    for f in freed:
        print(f"{verb} {f.kind:<7} {f.what}  ({f.bytes / 1048576:.1f} MiB)")
    total = sum(f.bytes for f in freed)
    print(f"{verb} {len(freed)} item(s), {total / 1048576:.1f} MiB" if freed else "nothing to free")


def fsck(
    history: Annotated[bool, typer.Option("--history", help="Check every commit of the branch too.")] = False,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check that every job is in exactly one stage and every building job holds a lease."""
    from aq.usecases.checks import fsck as run_fsck

    result = run_fsck(located(queue), history=history)
    if as_json:
        emit(fsck_json(result))
    else:
        for problem in result.problems:
            print(problem)
        print(f"{result.jobs} jobs, {result.commits} commit(s) checked, "
              f"{len(result.problems)} problem(s)", file=sys.stderr)
    if result.problems:
        raise typer.Exit(int(ExitStatus.REFUSED))
