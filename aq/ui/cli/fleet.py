"""The fleet as a whole: stop every worker claiming (`halt`), let them again (`resume`), and
see who is out there (`workers`)."""

from __future__ import annotations

from typing import Annotated

import typer

from aq.infra.clock import utc_now as now
from aq.ui.cli.options import JsonOpt, QueueOpt
from aq.ui.cli.session import emit, located
from aq.ui.cli.shapes import workers_json


def halt(
    reason: Annotated[str, typer.Option("--reason", "-r", help="Shown to everyone who looks.")] = "halted",
    queue: QueueOpt = None,
) -> None:
    """Kill switch: no worker claims anything until 'aq resume'; running jobs finish."""
    from aq.usecases.fleet import halt as do_halt
    from aq.usecases.setup import who_am_i

    changed = do_halt(located(queue), reason=reason, who=who_am_i(), now=now())
    print("halted: no worker will claim a job" if changed else "already halted")


def resume(queue: QueueOpt = None) -> None:
    """Lift a halt: workers claim again."""
    from aq.usecases.fleet import resume as do_resume
    from aq.usecases.setup import who_am_i

    changed = do_resume(located(queue), who=who_am_i())
    print("resumed: workers claim again" if changed else "not halted")


def workers(queue: QueueOpt = None, as_json: JsonOpt = False) -> None:
    """Workers seen on the remote: how long ago each was last seen alive (its heartbeat
    changing, or a commit of its machine landing) on this machine's clock (on the worker's own
    clock until this machine has seen it beat or its machine's commit land), the jobs they
    hold."""
    import time

    from aq.core.durations import format_duration
    from aq.usecases.fleet import list_workers

    rows = list_workers(located(queue), monotonic=time.monotonic(), now=now())
    if as_json:
        emit(workers_json(rows))
        return
    if not rows:
        print("no worker has published a heartbeat to the remote")
    for r in rows:
        age = "first seen now" if not r.silent_for else f"seen {format_duration(r.silent_for)} ago"
        age += " (its clock)" if r.age_from == "its clock" else ""
        held = ", ".join(r.jobs) or "no jobs"
        print(f"{r.worker:<24} {r.host or '?':<16} {age:<24} {held}{'  (stopped)' if r.retiring else ''}")
