"""The options and arguments many commands share, spelled once so their help reads the same."""

from __future__ import annotations

from typing import Annotated

import typer

QueueOpt = Annotated[str | None, typer.Option("--queue", "-q", help="Queue folder (default: "
                     "walk up from here to the first folder holding queue/inbox; or AQ_QUEUE).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts and agents.")]


def job_ids(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """Shell completion of a job id: the ids (and stages) of the queue of `--queue`, or found
    from here, that begin with what is typed. Cheap (file names only), and silent on any
    trouble: a completion cannot say what is wrong."""
    from aq.core.lifecycle import STAGES
    from aq.store.layout import QUEUE_DIR
    from aq.store.queue import Queue

    try:
        root = Queue.locate(ctx.params.get("queue")).root
        return sorted((entry.stem, stage.value) for stage in STAGES
                      for entry in (root / QUEUE_DIR / stage).glob(f"{incomplete}*.md"))
    except Exception:
        return []


JobArg = Annotated[str, typer.Argument(help="Job id or a unique prefix of one.",
                                       autocompletion=job_ids)]
CapOpt = Annotated[list[str] | None, typer.Option("--cap", help="Extra capability tag "
                   "(repeatable, or comma-separated).")]


def duration_of(flag: str, value: str) -> float:
    """The seconds of a duration option (45m, 14d); a value that is none is one line naming the
    flag and the value (exit 2)."""
    from aq.core.durations import parse_duration
    from aq.errors import UsageError

    try:
        return parse_duration(value)
    except ValueError as err:
        raise UsageError(f"{flag} {value!r}: {err}") from None


def interval(value: float, flag: str = "--every") -> float:
    """Seconds between a live view's refreshes or looks: more than 0 and at most a day; any other
    value (NaN and infinity too) is one line naming the flag (exit 2)."""
    from aq.errors import UsageError

    if not 0 < value <= 86400:
        raise UsageError(f"{flag} {value:g}: give more than 0 seconds and at most a day (86400)")
    return value
