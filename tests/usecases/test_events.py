"""`aq.usecases.events`: every job's log merged in time order, followed as lines are appended."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from aq.core.events import iso
from aq.store.queue import Queue
from aq.usecases.events import StreamEvent, all_events, event_json, event_line, follow
from tests.helpers.queue import T0

WAIT = 20.0  # seconds a test waits for the follower before it gives up (never asserted on)


def ev(seconds: float, kind: str = "note", **fields: object) -> dict[str, object]:
    return {"ts": iso(T0 + timedelta(seconds=seconds)), "type": kind, **fields}


def log_path(root: Path, job_id: str) -> Path:
    return root / "queue" / ".events" / f"{job_id}.jsonl"


def append(root: Path, job_id: str, *events: dict[str, object], raw: str = "") -> None:
    path = log_path(root, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(e) + "\n" for e in events) + raw)


def seen(events: list[StreamEvent]) -> list[tuple[str, object]]:
    return [(se.job_id, se.event.get("n")) for se in events]


class Follower:
    """`follow` run in a thread with a stop flag; what it yields is collected."""

    def __init__(self, queue: Queue, *, fetch: Callable[[], None] | None = None,
                 since_now: bool = False) -> None:
        self.events: list[StreamEvent] = []
        self.stop = threading.Event()
        self.looks = 0  # fetches so far: each is followed by a look at the logs
        self.changed = threading.Condition()

        def fetching() -> None:
            if fetch is not None:
                fetch()
            with self.changed:
                self.looks += 1
                self.changed.notify_all()

        def run() -> None:
            for se in follow(queue, poll=0.02, fetch=fetching, stop=self.stop.is_set,
                             since_now=since_now):
                with self.changed:
                    self.events.append(se)
                    self.changed.notify_all()

        self.thread = threading.Thread(target=run, daemon=True)

    def wait_for(self, count: int) -> list[StreamEvent]:
        with self.changed:
            self.changed.wait_for(lambda: len(self.events) >= count, timeout=WAIT)
            return list(self.events)

    def settle(self) -> None:
        """Let the follower finish a whole look begun after now, so what it would yield is yielded."""
        with self.changed:
            target = self.looks + 2  # the fetch after the next one comes after the next look ended
            self.changed.wait_for(lambda: self.looks >= target, timeout=WAIT)


@contextmanager
def following(queue: Queue, *, fetch: Callable[[], None] | None = None,
              since_now: bool = False) -> Iterator[Follower]:
    follower = Follower(queue, fetch=fetch, since_now=since_now)
    follower.thread.start()
    try:
        yield follower
    finally:
        follower.stop.set()
        follower.thread.join(timeout=WAIT)
    assert not follower.thread.is_alive()


def test_all_events_are_in_time_order_then_job_then_place_in_the_log(queue_root: Path) -> None:
    """Events of all logs come by ts, ties by job id then file order; a line without ts stays after its predecessor."""
    append(queue_root, "b-job", ev(10, n=1), ev(30, n=2), ev(30, n=3), {"type": "note", "n": 4},
           ev(50, n=5))
    append(queue_root, "a-job", ev(20, n=1), ev(30, n=2), ev(60, n=3), raw="not json\n[1]\n")
    events = all_events(Queue(queue_root))
    assert seen(events) == [("b-job", 1), ("a-job", 1), ("a-job", 2), ("b-job", 2), ("b-job", 3),
                            ("b-job", 4), ("b-job", 5), ("a-job", 3)]


def test_follow_yields_what_is_there_then_appended_lines_and_new_logs(queue_root: Path) -> None:
    """follow yields the existing events, then lines appended to a log and the lines of a log that is new."""
    append(queue_root, "one", ev(0, n=1), ev(1, n=2))
    with following(Queue(queue_root)) as follower:
        assert seen(follower.wait_for(2)) == [("one", 1), ("one", 2)]
        append(queue_root, "one", ev(5, n=3))
        assert seen(follower.wait_for(3))[2:] == [("one", 3)]
        append(queue_root, "two", ev(7, n=1), ev(6, n=0))
        assert seen(follower.wait_for(5))[3:] == [("two", 0), ("two", 1)]  # a batch is in ts order
        follower.settle()
        assert len(follower.events) == 5


def test_follow_since_now_skips_what_is_there(queue_root: Path) -> None:
    """With since_now only events appended after the start are yielded."""
    append(queue_root, "old", ev(0, n=1))
    with following(Queue(queue_root), since_now=True) as follower:
        follower.settle()
        append(queue_root, "old", ev(9, n=2))
        assert seen(follower.wait_for(1)) == [("old", 2)]


def test_follow_waits_for_a_line_to_be_complete(queue_root: Path) -> None:
    """A line without its newline yet is not yielded until the rest of it is written."""
    with following(Queue(queue_root)) as follower:
        line = json.dumps(ev(3, n=1)) + "\n"
        append(queue_root, "slow", raw=line[:20])
        follower.settle()
        assert follower.events == []
        append(queue_root, "slow", raw=line[20:])
        assert seen(follower.wait_for(1)) == [("slow", 1)]


def test_follow_yields_only_the_new_line_of_a_log_git_rewrote(queue_root: Path) -> None:
    """A log replaced with another clone's line in the middle (a union merge) yields just that line."""
    append(queue_root, "merged", ev(0, n=1), ev(2, n=3))
    with following(Queue(queue_root)) as follower:
        follower.wait_for(2)
        path = log_path(queue_root, "merged")
        lines = path.read_text().splitlines(keepends=True)
        spare = path.with_name(".merged.tmp")
        spare.write_text(lines[0] + json.dumps(ev(1, n=2)) + "\n" + lines[1])
        os.replace(spare, path)
        assert seen(follower.wait_for(3))[2:] == [("merged", 2)]
        lines = path.read_text().splitlines(keepends=True)  # now rewritten in place: same inode
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("".join(lines[:2]) + json.dumps(ev(1.5, n=2.5)) + "\n" + lines[2])
        assert seen(follower.wait_for(4))[3:] == [("merged", 2.5)]
        follower.settle()
        assert len(follower.events) == 4


def test_follow_fetches_before_each_look(queue_root: Path) -> None:
    """What `fetch` brings (a pull from the remote) is yielded by the look that follows it."""
    fetched = threading.Event()

    def fetch() -> None:
        if not fetched.is_set():
            fetched.set()
            append(queue_root, "remote", ev(4, n=1))

    with following(Queue(queue_root), fetch=fetch) as follower:
        assert seen(follower.wait_for(1)) == [("remote", 1)]


def test_event_json_lines_carry_the_job_first(queue_root: Path) -> None:
    """Each event as a JSON line is the event with its job's id first, and parses back to the same."""
    append(queue_root, "j1", ev(0, "added", by="me@host", to="inbox"))
    lines = [json.dumps(event_json(se)) for se in all_events(Queue(queue_root))]
    [data] = [json.loads(line) for line in lines]
    assert next(iter(data)) == "job"
    assert data == {"job": "j1", "ts": iso(T0), "type": "added", "by": "me@host", "to": "inbox"}


def test_event_line_is_one_compact_line() -> None:
    """A finished event reads `ts job type by from->to outcome: why` on one line."""
    finished = StreamEvent("fix-login", {
        "ts": "2026-01-01T12:00:00.123456Z", "type": "finished", "by": "w1", "from": "building",
        "to": "inbox", "outcome": "verify_failed", "why": "verify_failed; retry 1 of 2\nafter 0s"})
    assert event_line(finished) == ("2026-01-01T12:00:00Z fix-login finished w1 building->inbox "
                                    "verify_failed: verify_failed; retry 1 of 2 after 0s")
    claimed = StreamEvent("fix-login", {"ts": "2026-01-01T12:00:00Z", "type": "claimed", "by": "w1",
                                        "from": "inbox", "to": "building", "attempt": 2})
    assert event_line(claimed) == "2026-01-01T12:00:00Z fix-login claimed w1 inbox->building attempt 2"
