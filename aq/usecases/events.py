"""The fleet's event stream: every job's event log merged into one, in time order.

`all_events` reads every log once; `follow` keeps yielding what is appended after, fetching
first when given a `fetch`. Both read `queue/.events/*.jsonl` directly (a line that is not a
JSON object is skipped, as `aq lint` reports it), so they never take the queue's lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aq.core.events import Event
from aq.store.layout import EVENTS_DIR
from aq.store.queue import Queue

LOG_SUFFIX = ".jsonl"
READ_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class StreamEvent:
    job_id: str
    event: Event


# --- reading logs ----------------------------------------------------------------------------

def parse_log(data: bytes) -> list[Event]:
    """The events of one log's bytes, in file order; lines that are not JSON objects skipped."""
    text = data.decode("utf-8", "replace")
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
        return []
    try:  # one parse of the whole file as an array: a third faster than a parse per line
        parsed = json.loads("[" + ",".join(lines) + "]")
    except ValueError:
        parsed = None
    if not isinstance(parsed, list) or len(parsed) != len(lines):
        parsed = []  # a torn or foreign line: parse line by line and skip the bad ones
        for line in lines:
            with contextlib.suppress(ValueError):
                parsed.append(json.loads(line))
    return [event for event in parsed if isinstance(event, dict)]


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Tens of thousands of small objects that all live on: collecting while they are made only
    costs time (a third of it, for 50,000 events)."""
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_logs(queue: Queue) -> list[tuple[str, list[Event]]]:
    """Every job's event log as (job id, events in file order), by job id."""
    folder = str(queue.qdir / EVENTS_DIR)
    logs: list[tuple[str, list[Event]]] = []
    with no_gc():
        for name in _log_names(folder):
            data = _read(os.path.join(folder, name))
            if data is not None:
                logs.append((name[: -len(LOG_SUFFIX)], parse_log(data)))
    return logs


def _read(path: str) -> bytes | None:
    """The file's bytes, or None if it is gone (a person may delete a log)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)  # a link is never read (DESIGN §5)
    except OSError:
        return None
    try:
        chunks = [os.read(fd, READ_SIZE)]
        while len(chunks[-1]) == READ_SIZE:  # a log this long is rare: read on to its end
            chunks.append(os.read(fd, READ_SIZE))
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _log_names(folder: str) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return sorted(entry.name for entry in entries
                          if entry.name.endswith(LOG_SUFFIX) and not entry.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def epoch(value: object) -> float | None:
    """Seconds since the epoch of an event's `ts`, or None when it is missing or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:  # aq writes UTC with a Z; a hand-written time without one is UTC too
        return moment.replace(tzinfo=UTC).timestamp()
    return moment.timestamp()


def in_time_order(logs: Iterable[tuple[str, list[Event]]]) -> list[StreamEvent]:
    """Events of several logs by ts, then job id, then place in the log. An event without a
    readable ts keeps its place after the event before it in its own log (file order is causal)."""
    keyed: list[tuple[float, str, int, Event]] = []
    for job_id, events in logs:
        last = float("-inf")
        for position, event in enumerate(events):
            moment = epoch(event.get("ts"))
            if moment is not None:
                last = moment
            keyed.append((last, job_id, position, event))
    keyed.sort(key=lambda item: item[:3])
    return [StreamEvent(job_id, event) for _, job_id, _, event in keyed]


def all_events(queue: Queue) -> list[StreamEvent]:
    """Every event of the queue, oldest first (ts, then job id, then place in its log)."""
    with no_gc():
        return in_time_order(read_logs(queue))


# --- following -------------------------------------------------------------------------------

@dataclass(slots=True)
class _LogCursor:
    """How much of one log was read: the bytes up to the last full line, that line, and the
    lines seen (as a multiset of hashes)."""

    offset: int = 0
    inode: int = -1
    last_line: bytes = b""  # the line ending at `offset`, newline included
    seen: Counter[int] = field(default_factory=Counter)


class _Tail:
    """New complete lines of every log since the last look.

    An append (the same file, larger, still holding the last line read where it was) is read
    from the offset. A log git replaced (a pull; a union merge that put another clone's lines
    in the middle) is read whole, and only lines not seen before, counted as a multiset, are new.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.cursors: dict[str, _LogCursor] = {}

    def read_new(self) -> list[tuple[str, list[bytes]]]:
        """(job id, new complete lines) of each log that has some."""
        found: list[tuple[str, list[bytes]]] = []
        try:
            entries = list(os.scandir(self.folder))
        except (FileNotFoundError, NotADirectoryError):
            return found
        for entry in entries:
            name = entry.name
            if not name.endswith(LOG_SUFFIX) or name.startswith(".") or entry.is_symlink():
                continue  # a link is never read (DESIGN §5)
            try:
                stat = entry.stat()
            except OSError:
                continue
            cursor = self.cursors.setdefault(name, _LogCursor())
            if stat.st_ino == cursor.inode and stat.st_size == cursor.offset:
                continue  # unchanged (a torn last line keeps the size above the offset: read again)
            lines = _new_lines(entry.path, cursor, stat.st_ino, stat.st_size)
            if lines:
                found.append((name[: -len(LOG_SUFFIX)], lines))
        return found


def _new_lines(path: str, cursor: _LogCursor, inode: int, size: int) -> list[bytes]:
    appended = inode == cursor.inode and size >= cursor.offset
    back = len(cursor.last_line)
    try:
        with open(path, "rb") as handle:
            if appended:  # only if the last line read is still where it was
                handle.seek(cursor.offset - back)
                data = handle.read()
                appended = data[:back] == cursor.last_line
                data = data[back:]
            if not appended:
                handle.seek(0)
                data = handle.read()
    except OSError:
        return []
    end = data.rfind(b"\n") + 1  # a line still being written waits for its newline
    complete = data[:end]
    before = Counter[int]() if appended else cursor.seen
    if not appended:
        cursor.seen = Counter()
        cursor.offset = 0
    cursor.inode = inode
    cursor.offset += end
    if end:
        cursor.last_line = complete[complete.rfind(b"\n", 0, end - 1) + 1:]
    new: list[bytes] = []
    for line in complete.split(b"\n"):
        line = line.strip()
        if not line:
            continue
        key = hash(line)
        cursor.seen[key] += 1
        if cursor.seen[key] > before[key]:
            new.append(line)
    return new


def follow(
    queue: Queue,
    *,
    poll: float,
    fetch: Callable[[], None] | None,
    stop: Callable[[], bool],
    since_now: bool = False,
) -> Iterator[StreamEvent]:
    """Events as they are appended, until `stop()` is true: first every event there is (none
    with `since_now`), then every `poll` seconds what is new, each batch in time order.

    `fetch` (for a queue with a remote: fetch and align the clone) is called before each look;
    what it raises reaches the caller.
    """
    tail = _Tail(queue.qdir / EVENTS_DIR)
    first = tail.read_new()
    if not since_now:
        yield from _batch(first)
    while not stop():
        _sleep(poll, stop)
        if stop():
            return
        if fetch is not None:
            fetch()
        yield from _batch(tail.read_new())


def _batch(found: list[tuple[str, list[bytes]]]) -> list[StreamEvent]:
    return in_time_order((job_id, parse_log(b"\n".join(lines))) for job_id, lines in found)


def _sleep(seconds: float, stop: Callable[[], bool]) -> None:
    """Wait `seconds`, looking at `stop` every tenth of a second."""
    deadline = time.monotonic() + seconds
    while not stop():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.1))


# --- rendering -------------------------------------------------------------------------------

def event_line(se: StreamEvent) -> str:
    """One line a person reads: `ts job type by from->to outcome: why` (absent parts left out)."""
    event = se.event
    ts = event.get("ts")
    parts = [_short_ts(ts) if isinstance(ts, str) else "-", se.job_id, str(event.get("type", "?"))]
    if event.get("by"):
        parts.append(str(event["by"]))
    source, target = event.get("from"), event.get("to")
    if source or target:
        parts.append(f"{source or ''}->{target or ''}")
    if event.get("type") == "claimed" and event.get("attempt") is not None:
        parts.append(f"attempt {event['attempt']}")
    outcome, why = event.get("outcome"), event.get("why")
    if outcome and why:
        parts.append(f"{outcome}: {why}")
    elif outcome or why:
        parts.append(str(outcome or why))
    return " ".join(parts).replace("\r", " ").replace("\n", " ")


def _short_ts(ts: str) -> str:
    """`2026-01-01T12:00:00.123456Z` -> `2026-01-01T12:00:00Z`; any other form as it is."""
    if len(ts) == 27 and ts.endswith("Z") and ts[19] == ".":
        return ts[:19] + "Z"
    return ts


def event_json(se: StreamEvent) -> dict[str, Any]:
    """The event with its job's id first: {"job": id, **event}."""
    out: dict[str, Any] = {"job": se.job_id}
    out.update((key, value) for key, value in se.event.items() if key != "job")
    return out
