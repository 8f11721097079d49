"""What every route of `aq web` shares: the queue (one at a time, as the dash does it), the
clock, who acts, the templates and the watcher."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aq.store.queue import Queue
from aq.ui.web.live import Watcher

PER_STAGE = 50  # cards a board column shows; the rest are a click away, a page at a time
PAGE = 100  # rows of a stage's page


@dataclass
class Web:
    """The state of one `aq web` process."""

    root: Path
    csrf: str
    who: str  # how moves are recorded: "user@host via web"
    clock: Callable[[], datetime]
    monotonic: Callable[[], float] = time.monotonic
    every: float = 2.0  # seconds between fetches of the remote
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    watcher: Watcher = field(init=False)
    _queue: Queue | None = field(default=None, init=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False)
    _watched: Queue | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.watcher = Watcher(self._watching, self.every)

    @contextmanager
    def _watching(self) -> Iterator[Queue]:
        """The watcher's own hold on the clone: a queue object of its own, whose file lock
        (its own descriptor) keeps its fetch and the pages' moves apart, without the pages'
        lock. A remote that hangs holds up the next look, never a page."""
        if self._watched is None:
            self._watched = Queue.locate(str(self.root))
        yield self._watched

    def _open(self) -> Queue:
        if self._queue is None:
            self._queue = Queue.locate(str(self.root))
        return self._queue

    @contextmanager
    def queue(self) -> Iterator[Queue]:
        """The queue, held by this request alone until the block ends."""
        with self._lock:
            yield self._open()

    def reader(self) -> Queue:
        """The queue for reading files that only grow (a running attempt's log), which needs
        no turn: a stream holds none while it waits for more."""
        return self._open()

    def capabilities(self, queue: Queue) -> Any:
        from aq.ui.cli.session import caps  # the probe the CLI uses, without Typer

        return caps(queue)

    def page(self, queue: Queue, **values: Any) -> dict[str, Any]:
        """What every page's template gets, with `values`."""
        return {"csrf": self.csrf, "halted": queue.halted(), "problem": self.watcher.problem,
                "version": self.watcher.version, "remote": queue.remote is not None, **values}
