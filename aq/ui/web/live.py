"""What keeps open pages live: a thread that brings the clone up to the remote every few
seconds (sooner when poked, as after an action) and counts the times the queue changed.

A page listens on `/live` (Server-Sent Events) and reloads what it shows when the count moves.
The queue changed when its clone's HEAD or the halt flag did; a move made anywhere in the fleet
reaches this clone by the next fetch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

from aq.errors import AqError
from aq.store.queue import Queue

FETCH_WAIT = 20.0  # seconds a fetch waits for the clone's lock before trying again next time


class Watcher:
    def __init__(self, hold: Callable[[], AbstractContextManager[Queue]], every: float) -> None:
        self._hold, self.every = hold, every
        self.version = 0
        self.problem: str | None = None  # why the last fetch failed, for the page's header
        self._seen: tuple[str, str | None] | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="aq-web-watcher", daemon=True)

    def start(self) -> None:
        """Look now and then every `every` seconds, on a thread of its own: a remote that does
        not answer never holds up the server's start."""
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def poke(self) -> None:
        """Look again now (an action just changed the queue)."""
        self._wake.set()

    def wait_change(self, since: int, timeout: float) -> int:
        """The version once it is past `since`, or after `timeout` seconds whatever it is."""
        with self._changed:
            self._changed.wait_for(lambda: self.version != since or self._stop.is_set(), timeout)
            return self.version

    def look(self) -> None:
        """Fetch (when the queue has a remote), then count a change of HEAD or of the halt."""
        try:
            with self._hold() as queue:
                if queue.remote is not None and not queue.refresh_from_remote(FETCH_WAIT):
                    self.problem = (f"the remote {queue.remote.name!r} does not answer: "
                                    "showing this clone as it is")
                else:
                    self.problem = None
                seen = (_head(queue), queue.halted())
        except (AqError, OSError) as err:
            self.problem = str(err)
            return
        if seen != self._seen:
            with self._changed:
                self._seen = seen
                self.version += 1
                self._changed.notify_all()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.look()
            self._wake.wait(self.every)
            self._wake.clear()


def _head(queue: Queue) -> str:
    from aq.infra import gitops

    done = gitops.git(queue.root, "rev-parse", "-q", "--verify", "HEAD", check=False)
    return done.stdout.strip()
