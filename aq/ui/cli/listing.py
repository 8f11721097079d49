"""`aq ls` and `aq next` as plain functions: the Typer commands and the quick path
(`aq.ui.cli.quick`) both run these, so a listing reads the same whichever parsed it."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aq.errors import UsageError
from aq.infra.clock import utc_now as now
from aq.ui.cli.session import caps, emit, fetched, located, say_view_age
from aq.ui.cli.shapes import job_json, next_json

if TYPE_CHECKING:
    from aq.usecases.listing import Listing, NextResult


def list_command(stage: Sequence[str], ready: bool, blocked: bool, fetch: bool,
                 queue: str | None, as_json: bool, everything: bool = False) -> None:
    """List jobs by stage, with the reason an inbox job waits."""
    from aq.core.lifecycle import Stage
    from aq.usecases.listing import list_jobs

    q = located(queue)
    if fetch:
        fetched(q)
    else:
        say_view_age(q)
    stages = []
    for name in (part.strip() for given in stage for part in given.split(",") if part.strip()):
        try:  # repeated, or comma-separated: -s inbox,failed
            stages.append(Stage(name))
        except ValueError:
            raise UsageError(f"--stage {name!r} is not a stage: {', '.join(Stage)}") from None
    listing = list_jobs(q, now=now(), capabilities=caps(q), stages=stages, ready=ready,
                        blocked=blocked, archived=everything)
    if as_json:
        emit([job_json(job, listing.verdicts.get(job.id)) for job in listing.jobs])
        return
    _print_listing(listing)


def _print_listing(listing: Listing) -> None:
    for problem in listing.problems:
        print(f"aq: {problem}", file=sys.stderr)
    if not listing.jobs:
        print("no jobs")
        return
    width = max(len(job.id) for job in listing.jobs)
    current = None
    for job in listing.jobs:
        if (job.stage, job.archived) != current:
            current = (job.stage, job.archived)
            print(f"{job.stage} (archived):" if job.archived else f"{job.stage}:")
        verdict = listing.verdicts.get(job.id)
        title = job.manifest.title if job.manifest else "(invalid)"
        prio = job.manifest.priority if job.manifest else "-"
        note = ""
        if verdict is not None:
            note = "  [ready]" if verdict.ready else f"  [{verdict.reason}]"
        elif job.state.holder:
            note = f"  [{job.state.holder}, attempt {job.state.attempt_count}]"
        print(f"  {job.id:<{width}}  {prio:<8}  {_cut(title, 60)}{note}")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def next_command(explain: bool, cap: list[str] | None, queue: str | None, as_json: bool) -> None:
    """What `aq run` would take next here, and (with --explain) why."""
    from aq.usecases.listing import next_job

    q = located(queue)
    result = next_job(q, now=now(), capabilities=caps(q, cap))
    if as_json:
        emit(next_json(result))
        return
    _print_next(result, explain)


def _print_next(result: NextResult, explain: bool) -> None:
    if result.chosen is None:
        why = (f": queue halted: {result.halted}" if result.halted
               else "" if result.verdicts else ": the inbox is empty")
        print(f"nothing to take{why}")
    else:
        m = result.chosen.manifest
        assert m is not None
        print(f"{result.chosen.id}  ({m.priority}) {m.title}")
    if explain:
        _print_ranked(result)
        for verdict in result.verdicts:
            if not verdict.ready:
                print(f"  skip  {verdict.job.id}: {verdict.reason}")


def _print_ranked(result: NextResult) -> None:
    """The ready jobs in the router's order, each with its priority and score."""
    for place, ranked in enumerate(result.ranked):
        m = ranked.job.manifest
        said = f"{m.priority if m else '-'}, {ranked.score.said()}"
        if place == 0:
            print(f"  take  {ranked.job.id}: first in order (priority, score, age, id): {said}")
        else:
            print(f"  later {ranked.job.id}: ready, but after {result.ranked[0].job.id} in "
                  f"order: {said}")
