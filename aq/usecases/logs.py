"""An attempt's log: which file holds it, and its text as it arrives."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path

from aq.core.lifecycle import Stage
from aq.errors import LogNotFound, UsageError
from aq.infra.confine import check, open_regular
from aq.infra.rundir import RunFiles
from aq.store.queue import Queue

FOLLOW_POLL = 0.3  # seconds between looks at a running attempt's live log
READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class LogRef:
    job_id: str
    attempt: int
    path: Path
    running: bool  # the attempt is running now on this machine: follow the live file


def find_log(queue: Queue, ref: str, attempt: int | None) -> LogRef:
    """Where the log of a job's attempt (None: its latest) is: the live file while the attempt
    runs here, else the one kept in the queue."""
    job = queue.resolve(ref)
    count = job.state.attempt_count
    if count == 0:
        raise LogNotFound(f"{job.id} has not been run yet (it is in {job.stage})")
    number = attempt or count
    if not 1 <= number <= count:
        raise UsageError(f"{job.id} has attempts 1 to {count}; --attempt {number} is not one of them")
    live = RunFiles(queue.running_dir() / job.id, number).log
    kept = job.logs_dir / f"{number}.log"  # an archived job's are in its archive part
    check(queue.root, kept)  # a link is refused, never followed
    is_running = job.stage is Stage.BUILDING and number == count and not kept.exists()
    if is_running and live.exists():
        return LogRef(job.id, number, live, True)
    if kept.exists():
        return LogRef(job.id, number, kept, False)
    if is_running:
        raise LogNotFound(f"{job.id} attempt {number} runs on another machine "
                          f"({job.state.holder}); its log arrives when the attempt ends")
    raise LogNotFound(f"no log kept for {job.id} attempt {number}")


def first_log(queue: Queue, ref: str, *, say: Callable[[str], None],
              stop: Callable[[], bool] = lambda: False,
              sleep: Callable[[float], object] = time.sleep, poll: float = FOLLOW_POLL) -> LogRef:
    """The log of a job's first attempt, once it has one (`logs --follow` on a job not run yet
    waits for it, saying so once); LogNotFound if the job ends with none (canceled) or
    `stop()`."""
    job = queue.resolve(ref)
    said = False
    while True:
        fresh = Queue(queue.root)  # read afresh each look: a worker here claims it meanwhile
        job = fresh.resolve(job.id)
        if job.state.attempt_count:
            try:
                return find_log(fresh, job.id, None)
            except LogNotFound:
                if job.stage is not Stage.BUILDING:
                    raise
        elif job.stage is not Stage.INBOX:
            raise LogNotFound(f"{job.id} was never run (it is in {job.stage})")
        if stop():
            raise LogNotFound(f"{job.id} has not been run yet (it is in {job.stage})")
        if not said:
            say(f"{job.id} has not started yet: waiting for its first attempt (Ctrl-C to stop)")
            said = True
        sleep(poll)


def read_log(queue: Queue, ref: LogRef, *, follow: bool, stop: Callable[[], bool] = lambda: False,
             sleep: Callable[[float], object] = time.sleep, poll: float = FOLLOW_POLL
             ) -> Generator[bytes, None, None]:
    """The log's bytes as they are read, look by look: first all there is; then, with `follow`
    and the attempt running here, every `poll` seconds (on `sleep`) what was appended, until the
    attempt ends (its last words read) or `stop()`. Each look ends with b"": a front end with a
    timer of its own passes a `sleep` that returns at once and reads up to it at each tick. A
    link is refused, never followed."""
    with open_regular(ref.path, queue.relative(ref.path)) as handle:
        while True:
            # asked before reading: what the attempt wrote before it ended is read in this look
            last = not (follow and ref.running) or stop() or attempt_over(queue, ref)
            while chunk := handle.read(READ_SIZE):
                yield chunk
            if last:
                return
            yield b""
            sleep(poll)


def attempt_over(queue: Queue, ref: LogRef) -> bool:
    """The attempt of a live log ended: its log was kept, or the job left building."""
    kept = queue.logs_dir(ref.job_id) / f"{ref.attempt}.log"
    return kept.exists() or queue.stage_of(ref.job_id) is not Stage.BUILDING
