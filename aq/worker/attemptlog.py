"""An attempt's log: its output scrubbed of secrets as it streams, written to the run folder for
`aq logs -f` and kept head and tail within a cap for the queue."""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

from aq.core.scrub import Scrubber

TAIL_LINES = 40


class AttemptLog:
    """The attempt's output: streamed to a file for `aq logs -f`, kept head+tail within `cap` bytes."""

    def __init__(self, path: Path, cap: int, scrubber: Scrubber) -> None:
        self.path = path
        self.cap = max(cap, 1024)
        self.scrubber = scrubber
        self._file = open(path, "ab")  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()
        self._head: list[bytes] = []
        self._head_size = 0
        self._tail: deque[bytes] = deque()
        self._tail_size = 0
        self._cut = 0
        self._written = 0
        self.section: deque[str] = deque(maxlen=TAIL_LINES)
        self.failed: OSError | None = None  # the running log file could not be written

    def stream(self) -> Callable[[bytes], None]:
        """A writer for a second stream (stderr), scrubbed with a state of its own."""
        scrubber = self.scrubber.fork()
        return lambda raw: self.write(raw, scrubber)

    def write(self, raw: bytes, scrubber: Scrubber | None = None) -> None:
        text = (scrubber or self.scrubber).line(raw.decode("utf-8", errors="replace"))
        data = text.encode()
        with self._lock:
            self.section.append(text.rstrip("\n"))
            if self._written < 8 * self.cap and not self._file.closed and self.failed is None:
                try:
                    self._file.write(data)
                    self._file.flush()
                except OSError as err:  # a full disk: the running log stops, the kept one goes on
                    self.failed = err
                self._written += len(data)
            if self._head_size + len(data) <= self.cap // 2 and not self._tail:
                self._head.append(data)
                self._head_size += len(data)
                return
            self._tail.append(data)
            self._tail_size += len(data)
            while self._tail_size > self.cap // 2 and len(self._tail) > 1:
                dropped = self._tail.popleft()
                self._tail_size -= len(dropped)
                self._cut += len(dropped)

    def note(self, text: str) -> None:
        """A line of aq's own in the log (headers, outcomes)."""
        self.write(f"[aq] {text}\n".encode())

    def start_section(self) -> None:
        self.section.clear()

    def kept_text(self) -> str:
        with self._lock:
            middle = [f"[aq] ... {self._cut} bytes cut to keep this log under {self.cap} bytes ...\n"
                      .encode()] if self._cut else []
            return b"".join([*self._head, *middle, *self._tail]).decode("utf-8", errors="replace")

    def close(self) -> None:
        with self._lock, contextlib.suppress(OSError):
            self._file.close()
