"""Working the queue here (`aq run`) and reading what an attempt printed (`aq logs`)."""

from __future__ import annotations

import re
import sys
from typing import Annotated

import typer

from aq.errors import UsageError
from aq.ui.cli import status
from aq.ui.cli.options import CapOpt, JobArg, QueueOpt
from aq.ui.cli.session import all_caps, located


def run(
    once: Annotated[bool, typer.Option("--once", help="Run one job, then exit.")] = False,
    drain: Annotated[bool, typer.Option("--drain", help="Run until nothing it could take is left.")] = False,
    poll: Annotated[str | None, typer.Option("--poll", help="Idle wait between looks, e.g. 5s.")] = None,
    max_jobs: Annotated[int, typer.Option("--max", "-j", min=1, help="Jobs at once.")] = 1,
    worker: Annotated[str | None, typer.Option("--worker", "-w", help="Worker name (default host-pid).")] = None,
    cap: CapOpt = None,
    offline: Annotated[bool, typer.Option("--offline", help="Claim even while the remote is "
                       "unreachable; reconcile when it answers.")] = False,
    lease_ttl: Annotated[str | None, typer.Option("--lease-ttl", help="Lease TTL (default aq.yaml, 10m).")] = None,
    heartbeat: Annotated[str | None, typer.Option("--heartbeat", help="Heartbeat interval "
                         "(default half the TTL).")] = None,
    queue: QueueOpt = None,
) -> None:
    """Work the queue: claim, run the engine, verify, move. Forever unless --once or --drain.
    On a terminal its last line says what it runs, for how long, and each log's last line."""
    from aq.core.durations import format_duration
    from aq.worker.runner import Worker

    if once and drain:
        raise UsageError("--once and --drain do not go together: choose one")
    poll_s = _seconds("--poll", poll)
    ttl_s, beat_s = _seconds("--lease-ttl", lease_ttl), _seconds("--heartbeat", heartbeat)
    q = located(queue)
    ttl, beat = ttl_s or q.config.lease_ttl, beat_s or q.config.heartbeat_interval  # a broken
    # aq.yaml stops here, before any claim; a heartbeat over half the TTL renews after the
    # holder's own deadline (3/4 of it) or not at all: every attempt would stop as lease lost
    if beat is not None and beat > ttl / 2:
        raise UsageError(f"a heartbeat every {format_duration(beat)} does not renew a lease of "
                         f"{format_duration(ttl)} in time: make it half the lease TTL or less "
                         "(--heartbeat, or heartbeat_interval in aq.yaml)")
    mode = "once" if once else "drain" if drain else "forever"
    if worker is not None and (problem := _worker_name_problem(worker)):
        raise UsageError(f"--worker {worker!r}: {problem} (it names a git ref)")
    runner = Worker(q, worker_id=worker, max_jobs=max_jobs, poll=poll_s, mode=mode,
                    capabilities=all_caps(q, cap), offline=offline, lease_ttl=ttl_s,
                    heartbeat=beat_s)
    if status.wanted():  # on a terminal: what it holds, for how long, its log's last line
        with status.status_line(runner):
            result = runner.run()
    else:
        result = runner.run()
    print(f"{result.claimed} claimed, {len(result.finished)} finished, {len(result.stale)} stale",
          file=sys.stderr)
    if result.signal == "SIGINT":  # Ctrl-C: stopped in good order, and said so to the shell
        raise typer.Exit(130)


def _worker_name_problem(name: str) -> str | None:
    """What rule of a worker's name `name` breaks, or None."""
    if not re.fullmatch(r"[A-Za-z0-9._-]*", name):
        return "use only letters, digits, '.', '_' and '-'"
    if not name[:1].isalnum():
        return "start it with a letter or a digit"
    if len(name) > 64:
        return f"make it at most 64 characters (it has {len(name)})"
    if ".." in name or name.endswith((".", ".lock")):
        return "it may not hold '..', nor end in '.' or '.lock'"
    return None


def _seconds(flag: str, value: str | None) -> float | None:
    """A duration option in seconds (None: not given); 0 or less is refused."""
    from aq.core.durations import parse_duration

    if value is None:
        return None
    try:
        parsed = parse_duration(value)
    except ValueError as err:
        raise UsageError(f"{flag}: {err}") from None
    if parsed <= 0:
        raise UsageError(f"{flag}: must be more than 0")
    return parsed


def logs(
    job: JobArg,
    attempt: Annotated[int | None, typer.Option("--attempt", "-n", min=1, help="Attempt number (default: the latest).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing while the attempt "
                      "runs (a job not started yet: wait for its first attempt).")] = False,
    queue: QueueOpt = None,
) -> None:
    """Print an attempt's log (scrubbed of secrets)."""
    from aq.errors import LogNotFound
    from aq.usecases.logs import find_log, first_log, read_log

    q = located(queue)
    try:
        ref = find_log(q, job, attempt)
    except LogNotFound:
        if not follow or attempt is not None or q.resolve(job).state.attempt_count:
            raise
        ref = first_log(q, job, say=lambda line: print(f"aq: {line}", file=sys.stderr,
                                                       flush=True))
    for chunk in read_log(q, ref, follow=follow):
        sys.stdout.write(chunk.decode("utf-8", errors="replace"))
        sys.stdout.flush()
