"""What every command shares: the queue it works on, its notices, a fresh view of the remote,
JSON on stdout, and this machine's capabilities. Nothing here needs Typer: the quick path
(`aq.ui.cli.quick`) runs without it."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from aq.errors import AqError

if TYPE_CHECKING:
    from collections.abc import Callable

    from aq.store.queue import Queue

_LOCATED: list[Queue] = []  # what this process worked on: its notices are said at the end

FETCH_WAIT = 30.0  # seconds a person's command waits for the queue lock to fetch first
STALE_VIEW = 60.0  # a listing older than this says how old it is


def located(path: str | None) -> Queue:
    """The queue of `--queue`, `AQ_QUEUE` or the folders up from here; its notices are said
    when the command ends."""
    from aq.store.queue import Queue

    queue = Queue.locate(path)
    _LOCATED.append(queue)
    return queue


def say_notices() -> None:
    """Say, once, what the queues this command worked on have to tell."""
    while _LOCATED:
        queue = _LOCATED.pop(0)
        for notice in queue.take_notices():
            print(f"aq: {notice}", file=sys.stderr)


def fetched(q: Queue) -> None:
    """Before acting on a job: bring this clone up to the remote, so that a job that is there
    is found and a move is judged on the fleet's state."""
    if q.remote is None:
        return
    # a remote that does not answer is said by the move itself, which then changes nothing
    with contextlib.suppress(AqError):
        q.refresh_from_remote(FETCH_WAIT)


def _fetch_age(q: Queue) -> float | None:
    """Seconds since this clone last fetched: git's FETCH_HEAD, else (a clone that never
    fetched after `git clone`) when its remote refs were written; None: unknown."""
    for name in ("FETCH_HEAD", "packed-refs"):
        try:
            return time.time() - (q.git_dir / name).stat().st_mtime if q.git_dir else None
        except OSError:
            continue
    return None


def _fetched_text(age: float | None) -> str:
    from aq.core.durations import format_duration

    return "never fetched" if age is None else f"last fetched {format_duration(age)} ago"


def say_view_age(q: Queue) -> None:
    """A listing in a clone of a fleet's queue says how old its view of the remote is."""
    if q.origin is None:
        return
    age = _fetch_age(q)
    if age is None or age > STALE_VIEW:
        print(f"aq: this clone was {_fetched_text(age)} from {q.origin.name!r}; --fetch looks at "
              "the remote now", file=sys.stderr)


def emit(data: Any) -> None:
    """JSON on stdout: indented for a person at a terminal, compact (and faster) for a program."""
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(data, indent=indent, default=str, ensure_ascii=False) + "\n")


def cap_tags(given: list[str] | None) -> tuple[str, ...]:
    """The tags of `--cap`, each given alone or several joined by commas (`--cap gpu,docker`)."""
    return tuple(tag.strip() for each in given or () for tag in each.split(",") if tag.strip())


def caps(queue: Queue, tags: list[str] | None = None) -> Callable[[frozenset[str]], frozenset[str]]:
    """This machine's capabilities, probed when a command needs them: with the versions of only
    the tools some job compares (`node>=20`), since asking every tool takes a few hundred ms.
    A malformed `--cap` is refused now, whether or not a job then asks."""
    from aq.core.requirements import cli_tags

    given = cli_tags(cap_tags(tags))

    def probed(compared: frozenset[str]) -> frozenset[str]:
        from aq.infra.probe import probe  # only when some job asks for a capability

        return probe(queue.config.engines, given, versions=compared)

    return probed


def all_caps(queue: Queue, tags: list[str] | None = None) -> frozenset[str]:
    from aq.infra.probe import probe

    return probe(queue.config.engines, cap_tags(tags))
