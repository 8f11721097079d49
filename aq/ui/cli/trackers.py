"""The trackers' side: import their items as jobs (`from-tracker`), send them the posts the
jobs' moves owe (`to-tracker`)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from aq.errors import ExitStatus, UsageError
from aq.infra.clock import utc_now as now
from aq.ui.cli.options import JsonOpt, QueueOpt, job_ids
from aq.ui.cli.session import emit, located, say_notices
from aq.ui.cli.shapes import delivery_json, imported_json

if TYPE_CHECKING:
    from aq.usecases.tracker_delivery import OwedReport
    from aq.usecases.tracker_import import Imported


def from_tracker(
    items: Annotated[list[str] | None, typer.Argument(
        help="Tracker items: github:OWNER/REPO#N, backlog:TASK-N, cmd:NAME:ID.", show_default=False)] = None,
    query: Annotated[str | None, typer.Option("--query", help="Import every item a query returns: "
                     "github:OWNER/REPO [search words] (open issues with the label), backlog[:WORDS] "
                     "(its To Do tasks), cmd:NAME[:QUERY].")] = None,
    label: Annotated[str | None, typer.Option("--label", help="The label a query looks for "
                     "(default: aq.yaml's, else agent:run for GitHub).")] = None,
    new: Annotated[bool, typer.Option("--new", help="Make a new job even if the item made one "
                   "before (linked to the same item).")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Keep importing, every --every, until "
                     "interrupted.")] = False,
    every: Annotated[str, typer.Option("--every", help="How often --watch looks (e.g. 60s, 5m).")] = "60s",
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import tracker items as jobs; importing one again changes nothing, or updates its job
    while it waits in the inbox."""
    import secrets

    from aq.core.durations import parse_positive_duration
    from aq.usecases.setup import who_am_i
    from aq.usecases.tracker_import import import_named, watch_imports

    if not items and not query:
        raise UsageError("name tracker items (github:OWNER/REPO#N, backlog:TASK-N, cmd:NAME:ID) "
                         "or give --query")
    try:
        interval = parse_positive_duration(every)  # 0: a watch that never rests
    except ValueError as err:
        raise UsageError(f"--every: {err}") from None
    q, who = located(queue), who_am_i()

    def entropy() -> int:
        return secrets.randbits(30)

    if watch:
        try:  # each look says only its news
            for news in watch_imports(q, items or [], query, label=label, every=interval,
                                      clock=now, who=who, entropy=entropy, new=new, env=os.environ):
                if news or not as_json:
                    _print_imported(news, as_json)
                say_notices()
        except KeyboardInterrupt:  # Ctrl-C ends a watch; an import it cut short was rolled back
            raise typer.Exit(130) from None
        return
    results = import_named(q, items or [], query, label=label, now=now(), who=who,
                           entropy=entropy, new=new, env=os.environ)
    _print_imported(results, as_json)
    if query and not results and not as_json:
        print(f"{query}: no items")
    if any(r.failed for r in results):
        raise SystemExit(int(ExitStatus.REFUSED))


def _print_imported(results: list[Imported], as_json: bool) -> None:
    if as_json:
        emit(imported_json(results))
        return
    for r in results:
        print(r.message if not r.failed else f"aq: {r.message}",
              file=sys.stderr if r.failed else sys.stdout, flush=True)


def to_tracker(
    jobs: Annotated[list[str] | None, typer.Argument(help="Jobs (ids or unique prefixes).",
                                                     show_default=False,
                                                     autocompletion=job_ids)] = None,
    all_jobs: Annotated[bool, typer.Option("--all", help="Every job linked to a tracker item.")] = False,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send tracker posts still owed: each move of a linked job owes its item one comment (and
    a status), sent once."""
    from aq.usecases.setup import who_am_i
    from aq.usecases.tracker_delivery import to_tracker as send_owed

    if not jobs and not all_jobs:
        raise UsageError("name jobs, or give --all")
    if jobs and all_jobs:
        raise UsageError("name jobs or give --all, not both")
    q = located(queue)
    report = send_owed(q, None if all_jobs else jobs, me=who_am_i(), now=now(), env=os.environ)
    if as_json:
        emit(delivery_json(report))
    else:
        _print_delivery(report)
    if any(not item.ok for item in report.sent):
        raise SystemExit(int(ExitStatus.REFUSED))


def _print_delivery(report: OwedReport) -> None:
    for item in report.sent:
        print(item.message if item.ok else f"aq: {item.message}; still owed",
              file=sys.stdout if item.ok else sys.stderr)
    for wait in report.waiting:
        print(f"{wait.job_id}: a post to {wait.ref} is {wait.owner}'s to send (moved at "
              f"{wait.since}); anyone sends it after trackers.takeover")
    if not report.sent and not report.waiting:
        print("nothing owed to trackers")
