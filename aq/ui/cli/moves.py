"""The moves a person makes: promote, ship, reject, requeue, cancel. Each fetches first, so it
is judged on the fleet's state, and says what the job's tracker answered."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from aq.infra.clock import utc_now as now
from aq.ui.cli.options import JobArg, JsonOpt, QueueOpt
from aq.ui.cli.session import emit, fetched, located
from aq.ui.cli.shapes import move_json


def _move(ref: str, action: str, queue: str | None, reason: str | None, as_json: bool,
          allow_out_of_scope: bool = False) -> None:
    from aq.core.lifecycle import Action
    from aq.usecases.moves import MoveResult, move_job
    from aq.usecases.setup import who_am_i

    def announce(moved: MoveResult) -> None:
        if not as_json:  # said before the tracker is: the move stands whatever it answers
            print(f"{moved.job_id}: {moved.source} -> {moved.target}", flush=True)

    q = located(queue)
    fetched(q)
    result = move_job(q, ref, Action(action), who=who_am_i(), now=now(), env=os.environ,
                      reason=reason, allow_out_of_scope=allow_out_of_scope, announce=announce)
    if as_json:
        emit(move_json(result))
    elif result.children_canceled:
        print(f"also canceled, as its children: {', '.join(result.children_canceled)}")
    for item in result.tracker:
        if not item.ok:
            owed = "" if "not recorded" in item.message else \
                f"; it stays owed: 'aq to-tracker {result.job_id}' sends it"
            print(f"aq: {item.message}{owed}", file=sys.stderr)


def promote(job: JobArg, queue: QueueOpt = None, as_json: JsonOpt = False) -> None:
    """Move a reviewed job on to testing (review -> testing)."""
    _move(job, "promote", queue, None, as_json)


def ship(
    job: JobArg,
    allow_out_of_scope: Annotated[bool, typer.Option(
        "--allow-out-of-scope", help="Ship although the job changed files outside its "
        "allowed-scope (recorded with your name).")] = False,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The human gate: review or testing -> shipped."""
    _move(job, "ship", queue, None, as_json, allow_out_of_scope)


def reject(
    job: JobArg,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the event log).")],
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a job in review or testing to failed, saying why."""
    _move(job, "reject", queue, reason, as_json)


def requeue(job: JobArg, queue: QueueOpt = None, as_json: JsonOpt = False) -> None:
    """Put a failed or dead-lettered job back in the inbox (its attempts stay in the log)."""
    _move(job, "requeue", queue, None, as_json)


def cancel(
    job: JobArg,
    reason: Annotated[str | None, typer.Option("--reason", "-r")] = None,
    queue: QueueOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop an unfinished job (a running attempt here is stopped) and move it to failed."""
    _move(job, "cancel", queue, f"canceled: {reason}" if reason else "canceled", as_json)
